"""Run a trained model online over a video file and write predictions, costs and fidelity.

  python stream.py --video clip.mp4 --workdir runs/fp --recipe dynamic --period 4 --out runs/video

--workdir is a train.py run. --recipe=run (default) uses the run's own recipe (FP, or a PTQ /
QAT run's quantizers); fp | fq | resq | dynamic need an FP run, whose weights are calibrated
(PTQ) on the first --calibration_frames frames of the video. The float model always runs
beside it for fidelity. Frames are scaled to cover the run's training size and centre-cropped.
--cut_threshold / --drift_threshold switch on adaptive keyframes (docs/drift.md).
Outputs in --out: overlay.mp4 (or .gif), frames.csv, summary.json, and for dynamic ResQ
bit_map.png and density.png (see resq_jax/stream/compare.py). It prints its own lines only
(the libraries' logging is dropped) unless --verbose.

Your own model instead of a run (resq_jax/stream/own_model.py):

  python stream.py --model selfie_segmentation.tflite --video clip.mp4 --output_kind mask

--model is a .tflite file or package.module:factory (returning module, variables, (H, W)). The
video is cut into --window-frame windows; the first --calibration_windows calibrate, the rest
compare float, FQ, static and dynamic ResQ, keyframe hold and adaptive keyframes at equal BOPs
by fidelity to the float model. Outputs in --out: results.md, results.json, fronts.png.
"""

from absl import app, flags

from resq_jax import errors
from resq_jax.experiment import log
from resq_jax.stream import compare, own_model
from resq_jax.stream.options import RECIPES, StreamOptions

_VIDEO = flags.DEFINE_string("video", None, "Input video file (any format FFmpeg decodes).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a train.py run (its config.json).")
_OUT = flags.DEFINE_string("out", None, "Output directory; default <workdir>/stream.")
_RECIPE = flags.DEFINE_enum(
  "recipe",
  "run",
  RECIPES,
  "run: the run's own recipe; fp | fq | resq | dynamic: an FP run's "
  "weights calibrated on the video's first frames.",
)
_KEY_BITS = flags.DEFINE_list("key_bits", None, "W,A bits of keyframes / FQ (default: run's).")
_RESIDUAL_BITS = flags.DEFINE_list(
  "residual_bits", None, "W,A bits of residual frames (default: the run's)."
)
_PERIOD = flags.DEFINE_integer(
  "period", 0, "Keyframe period K (0: the run's quant.period).", lower_bound=0
)
_CALIBRATION = flags.DEFINE_integer(
  "calibration_frames", 16, "Frames calibrating a quantized recipe.", lower_bound=2
)
_MAX_FRAMES = flags.DEFINE_integer(
  "max_frames", None, "Stop after this many frames.", lower_bound=1
)
_FPS = flags.DEFINE_float("fps", None, "Subsample to this frame rate (default: all frames).")
_RESET = flags.DEFINE_bool(
  "reset_on_nonfinite", False, "Force a keyframe when a frame or the ResQ state is not finite."
)
_FORMAT = flags.DEFINE_enum("format", "mp4", ["mp4", "gif"], "Overlay video format.")
_CUT = flags.DEFINE_float(
  "cut_threshold",
  None,
  "Adaptive keyframes: a keyframe when mean |x_t - x_key| of the normalised input exceeds "
  "this (a scene cut); --period becomes the longest distance between keyframes.",
)
_DRIFT = flags.DEFINE_float(
  "drift_threshold",
  None,
  "Adaptive keyframes: a keyframe when the sum of mean |x_t - x_{t-1}| since the keyframe "
  "exceeds this.",
)
_MIN_PERIOD = flags.DEFINE_integer(
  "min_period", 1, "Adaptive keyframes: never two keyframes closer than this.", lower_bound=1
)
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the libraries' INFO and WARNING logging.")
_MODEL = flags.DEFINE_string(
  "model", None, "Your own model: a .tflite file or package.module:factory (instead of --workdir)."
)
_OUTPUT_KIND = flags.DEFINE_enum(
  "output_kind", "rel_l2", own_model.OUTPUT_KINDS, "With --model: how outputs are compared."
)
_OUTPUT = flags.DEFINE_integer("output", None, "With --model: which model output (index).")
_WINDOW = flags.DEFINE_integer("window", 8, "With --model: frames per window.", lower_bound=2)
_CAL_WINDOWS = flags.DEFINE_integer(
  "calibration_windows", 2, "With --model: windows that calibrate.", lower_bound=1
)
flags.mark_flags_as_required(["video"])


def _bits(name, values):
  if values is None:
    return None
  if len(values) != 2 or not all(v.strip().isdigit() for v in values):
    raise app.UsageError(
      f"--{name}: expected W,A bits such as 8,8, got {','.join(values)}",
      exitcode=errors.EXIT_CONFIG,
    )
  return tuple(int(v) for v in values)


def _own_model() -> None:
  out = _OUT.value or "runs/own_model"
  result = errors.run_cli(
    own_model.compare_own_model,
    _MODEL.value,
    _VIDEO.value,
    out,
    kind=_OUTPUT_KIND.value,
    output=_OUTPUT.value,
    window=_WINDOW.value,
    calibration_windows=_CAL_WINDOWS.value,
    progress=lambda line: print(line, flush=True),
  )
  for what, verdict in result["verdicts"]:
    print(f"{what}: {verdict.verdict} ({verdict.summary})")
  print(f"{len(result['rows'])} settings on {result['windows']} windows; outputs in {out}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}", exitcode=errors.EXIT_CONFIG)
  if (_MODEL.value is None) == (_WORKDIR.value is None):
    raise app.UsageError("give exactly one of --workdir and --model", exitcode=errors.EXIT_CONFIG)
  if _VERBOSE.value:  # else the libraries' lines are dropped (log.quiet_libraries)
    log.setup(verbose=True)
  if _MODEL.value is not None:
    return _own_model()
  options = StreamOptions(
    recipe=_RECIPE.value,
    key_bits=_bits("key_bits", _KEY_BITS.value),
    residual_bits=_bits("residual_bits", _RESIDUAL_BITS.value),
    period=_PERIOD.value,
    calibration_frames=_CALIBRATION.value,
    max_frames=_MAX_FRAMES.value,
    fps=_FPS.value,
    reset_on_nonfinite=_RESET.value,
    video_format=_FORMAT.value,
    cut_threshold=_CUT.value,
    drift_threshold=_DRIFT.value,
    min_period=_MIN_PERIOD.value,
  )
  out = _OUT.value or f"{_WORKDIR.value.rstrip('/')}/stream"
  summary = errors.run_cli(compare.stream_video, _VIDEO.value, _WORKDIR.value, out, options)
  print(
    f"{summary['frames']} frames, {summary['gbops_avg']:.4g} GBOPs/frame "
    f"({summary['pct_w8a8_avg']:.1f}% of W8A8), agreement with float "
    f"{100 * summary['agreement_avg']:.2f}%; outputs in {out}"
  )


if __name__ == "__main__":
  app.run(main)
