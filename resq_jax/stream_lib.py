"""Run a trained segmentation model online over a video file (``stream.py``).

The model comes from a run's workdir: its ``config.json`` is parsed into an
:class:`~resq_jax.experiment.Experiment` (:func:`run_experiment`, ``config_lib.parse`` with the
stream options applied), its newest checkpoint gives the weights (``runs.load_run``):

* ``recipe='run'``: the run's own recipe: an FP run runs in float; a PTQ or QAT run runs with
  its calibrated / learned quantizers.
* ``recipe`` in ``fp | fq | resq | dynamic``: the workdir must be an FP run. Its weights run
  under FQ ``key_bits``, static ResQ ``key_bits`` / ``residual_bits`` or dynamic ResQ (the
  run config's ``quant.ref_mode`` and policy); the quantizer ranges are calibrated (PTQ, with
  the run config's ``calibration`` methods, ``QuantPlan.calibration``) on the first
  ``calibration_frames`` frames of the video itself, as one clip, with keyframes every
  ``max(2, period)`` frames (``QuantPlan.calibration_period``).

Adaptive keyframes (``cut_threshold`` / ``drift_threshold``): a
:class:`~resq_jax.quant.keyframes.KeyframeTrigger` with ``max_period = period`` decides each
keyframe from the input (a scene cut, or the motion accumulated since the keyframe), instead of
every ``period`` frames (docs/drift.md).

The float model (the same weights under the float recipe) always runs beside it, frame by
frame, as the reference for fidelity. Frames are decoded, scaled and centre-cropped to the
run's training size (``resq_jax.video``), normalised as in training
(``resq_jax.tasks.normalise_frames``) and fed one at a time (batch 1) to the jitted
``stream_step``; both models are compiled on the first frame before timing starts, and the
number of recompilations afterwards (0 expected) is reported. No Flax ``init`` runs: variables
are restored into abstract templates (``model_factory.abstract_variables``).

Outputs in ``out_dir``:

* ``overlay.mp4`` (or ``.gif``): input | prediction of the recipe | float prediction
  (| for dynamic ResQ, the bit map of its finest-resolution layer), a caption with the frame's
  cost and agreement, a white border on keyframes;
* ``frames.csv``: one row per frame, columns :data:`CSV_COLUMNS`: ``is_keyframe`` (1 when the
  key branch ran; every frame of a stateless FP / FQ model), ``gbops`` (exact BOPs of the
  frame / 1e9; plain Flax ops, ``LayerCost.float_op``, at 32 x 32 bits), ``pct_w8a8`` (% of
  W8A8 FQ's cost, ``64 * MACs``), ``density`` (fraction of the MACs whose input location was
  not skipped, MAC-weighted over layers, plain ops dense: below 1 only at dynamic residual
  frames), ``agreement`` (fraction of pixels whose argmax class equals the float model's),
  ``rel_error`` (``||logits - float logits|| / ||float logits||``), ``frames_per_s`` (1 /
  seconds of this frame's step of the model under test, synchronised; the float reference,
  decoding and drawing are not included);
* ``bit_map.png`` (dynamic ResQ): frames and bit maps of the finest layer over the first
  ``bit_map_frames`` frames; ``density.png`` (dynamic ResQ): density per layer over time;
* ``summary.json``: averages and peaks, the recipe, the sizes, recompilations.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import pathlib
import time
import warnings
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from resq_jax import config_lib, errors, runs, video
from resq_jax.config_defaults import default_config
from resq_jax.experiment import Experiment
from resq_jax.log import get_logger
from resq_jax.model_factory import abstract_variables, init_from_fp, make_model
from resq_jax.nn import (
  KeyframeTrigger,
  calibrate_model,
  clip_bops,
  layer_costs,
  stack_stream_stats,
  stream_init,
  stream_step,
  trigger_ops,
)
from resq_jax.nn.costs import flatten_stats
from resq_jax.quant.cost import LayerCost
from resq_jax.quant.recipe import LayerRecipe, float_recipe
from resq_jax.tasks import normalise_frames
from resq_jax.training import ProgressBar

log = get_logger(__name__)

RECIPES = ("run", "fp", "fq", "resq", "dynamic")
CSV_COLUMNS = (
  "frame",
  "is_keyframe",
  "gbops",
  "pct_w8a8",
  "density",
  "agreement",
  "rel_error",
  "frames_per_s",
)
# The run config keys that streaming reads (a key or a whole section): the rest need not pass
# today's validation (see run_experiment).
STREAM_KEYS = (
  "stage",
  "init_from",
  "task",
  "model",
  "quant",
  "calibration.weight",
  "calibration.key_act",
  "calibration.residual_act",
  "calibration.residual_weight",
  "data.height",
  "data.width",
)
_SWEEP = "stream"  # the one-setting eval sweep of a streamed Experiment


@dataclasses.dataclass(frozen=True)
class StreamOptions:
  """How to stream; ``None`` / 0 take the run config's value (``quant.key_bits``,
  ``quant.residual_bits``, ``quant.period``). ``cut_threshold`` / ``drift_threshold`` (None:
  off) switch on adaptive keyframes with ``period`` as the longest distance between two
  keyframes and ``min_period`` the shortest (:meth:`trigger`)."""

  recipe: str = "run"
  key_bits: tuple[int, int] | None = None
  residual_bits: tuple[int, int] | None = None
  period: int = 0
  calibration_frames: int = 16
  max_frames: int | None = None
  fps: float | None = None
  reset_on_nonfinite: bool = False
  video_format: str = "mp4"  # mp4 | gif
  bit_map_frames: int = 16
  show_progress: bool = True
  cut_threshold: float | None = None
  drift_threshold: float | None = None
  min_period: int = 1

  def trigger(self, period: int) -> KeyframeTrigger | None:
    """The keyframe trigger for a stream of keyframe period ``period`` (None: fixed period)."""
    if self.cut_threshold is None and self.drift_threshold is None:
      return None
    try:
      return KeyframeTrigger(
        cut_threshold=self.cut_threshold,
        drift_threshold=self.drift_threshold,
        max_period=int(period),
        min_period=min(int(self.min_period), int(period)),
      )
    except ValueError as e:
      raise errors.InvalidConfigError(f"keyframe trigger: {e}") from None


def _is_stream_key(key: str) -> bool:
  return any(key == k or key.startswith(k + ".") for k in STREAM_KEYS)


def _set(tree: dict, key: str, value) -> None:
  *sections, leaf = key.split(".")
  for section in sections:
    tree = tree[section]
  tree[leaf] = value


def _overrides(options: StreamOptions) -> dict:
  """The quant keys that ``options`` override."""
  if options.recipe not in RECIPES:
    raise errors.InvalidConfigError(
      f"recipe: got {options.recipe!r} (allowed: {' | '.join(RECIPES)})"
    )
  out = {}
  if options.recipe != "run":
    out["quant.mode"] = "float" if options.recipe == "fp" else options.recipe
  if options.key_bits is not None:
    out["quant.key_bits"] = tuple(options.key_bits)
  if options.residual_bits is not None:
    out["quant.residual_bits"] = tuple(options.residual_bits)
  if options.period:
    out["quant.period"] = int(options.period)
  return out


def _stream_config(saved: dict, overrides: dict, keep) -> tuple[ml_collections.ConfigDict, list]:
  """Today's defaults, the saved values of the known keys that ``keep(key)`` selects, then
  ``overrides``; the eval sweep is the streamed setting alone. Also returns the saved keys
  that today's schema does not know."""
  config = default_config().to_dict()
  unknown = []
  for key, value in config_lib._flatten(saved):  # pylint: disable=protected-access
    if key not in config_lib.RULES:
      unknown.append(key)
    elif keep(key) and key not in ("eval.sweeps", "eval.sweep"):
      _set(config, key, value)
  for key, value in overrides.items():
    _set(config, key, value)
  # A stream has no clip length: its period is bounded by nothing but itself (the config
  # refuses a period above data.num_frames, which only clips have).
  config["data"]["num_frames"] = max(config["data"]["num_frames"], config["quant"]["period"])
  config["eval"]["sweeps"] = {_SWEEP: ({"name": _SWEEP},)}
  config["eval"]["sweep"] = _SWEEP
  return ml_collections.ConfigDict(config), unknown


def run_experiment(workdir: str, options: StreamOptions = StreamOptions()) -> Experiment:
  """The run's ``config.json`` parsed (``config_lib.parse``) into the Experiment to stream,
  ``options`` applied (recipe, bits, period: ``Experiment.quant``; its ``eval.sweep`` is that
  one setting).

  Streaming runs on one device with batch 1 (parsed with ``num_devices=1``) and reads only
  :data:`STREAM_KEYS`. Runs saved under an older schema still stream: keys added since take
  today's defaults and keys no longer in the schema are ignored; if the config then fails
  today's validation only in keys streaming does not read (data sizes, optimiser, training,
  evaluation; e.g. a rule tightened since the run), those keys take today's defaults, with a
  warning. Problems in keys it reads (and bad options, e.g. residual bits above the key
  bits) raise ``ConfigError``, one line each; no ``config.json``: ``CheckpointError``.
  """
  saved = runs.read_run_config(workdir)
  if saved is None:
    raise errors.CheckpointError(f"{workdir!r} has no config.json: is it a train.py workdir?")
  overrides = _overrides(options)
  config, unknown = _stream_config(saved, overrides, keep=lambda key: True)
  if unknown:
    log.warning(
      f"{workdir}: config.json keys no longer in the schema ignored: {', '.join(unknown)}"
    )
  try:
    return config_lib.parse(config, num_devices=1)
  except config_lib.ConfigError as e:
    relevant = [p for p in e.problems if _is_stream_key(p.partition(":")[0])]
    if relevant:
      raise config_lib.ConfigError(relevant) from None
    log.warning(
      f"{workdir}: config.json fails today's validation in keys streaming does not "
      f"read; they take today's defaults: {'; '.join(e.problems)}"
    )
  config, _ = _stream_config(saved, overrides, keep=_is_stream_key)
  return config_lib.parse(config, num_devices=1)


def _load(experiment: Experiment, workdir: str, recipe: LayerRecipe):
  """``runs.load_run`` (abstract template), a missing checkpoint as ``CheckpointError``."""
  try:
    return runs.load_run(experiment, workdir, recipe)
  except FileNotFoundError as e:
    raise errors.CheckpointError(f"{workdir}: {e}") from e


def _check_calibrated(variables: dict) -> None:
  flat = flax.traverse_util.flatten_dict(variables["params"])
  unset = sorted("/".join(p) for p, v in flat.items() if np.isnan(np.asarray(v)).any())
  if unset:
    raise ValueError(f"calibration left quantizer parameters unset: {unset}")


def _float_part(float_model, frame_shape, variables: dict) -> dict:
  """``variables`` without the quantizer parameters (the float model's own tree: the float
  reference then compiles once whatever the run)."""
  shapes = flax.traverse_util.flatten_dict(abstract_variables(float_model, frame_shape)["params"])
  params = flax.traverse_util.flatten_dict(variables["params"])
  return {
    "params": flax.traverse_util.unflatten_dict({p: params[p] for p in shapes}),
    "batch_stats": variables["batch_stats"],
  }


def load_models(experiment: Experiment, workdir: str, options: StreamOptions):
  """``(model, variables, float_model, float_variables, needs_calibration)`` of the recipe
  ``experiment.quant.recipe`` (:func:`run_experiment`). A quantized recipe on an FP run
  starts from its weights (``model_factory.init_from_fp``: quantizers NaN until calibrated)."""
  recipe, frame_shape = experiment.quant.recipe, experiment.data.frame_shape
  float_model = make_model(experiment.model, experiment.task, float_recipe())
  if options.recipe == "run" and experiment.stage != "fp":
    model, variables = _load(experiment, workdir, recipe)
    return model, variables, float_model, _float_part(float_model, frame_shape, variables), False
  if experiment.stage != "fp":
    raise errors.InvalidConfigError(
      f"recipe: --recipe={options.recipe} needs the workdir of an FP run, and {workdir} is a "
      f"{experiment.stage} run (use --recipe=run for its own quantizers, or its init_from "
      f"{experiment.init_from!r})"
    )
  _, float_vars = _load(experiment, workdir, float_recipe())
  if not recipe.is_quantized:
    return float_model, float_vars, float_model, float_vars, False
  model = make_model(experiment.model, experiment.task, recipe)
  try:
    variables = init_from_fp(model, float_vars, frame_shape)
  except ValueError as e:
    raise errors.CheckpointError(f"{workdir}: {e}") from e
  return model, variables, float_model, float_vars, True


def normalise(frame: np.ndarray) -> jax.Array:
  """uint8 ``[H, W, 3]`` -> float32 ``[1, H, W, 3]`` as in training (``normalise_frames``)."""
  return normalise_frames(frame)[None]


def layer_densities(stats, costs: dict[str, LayerCost]) -> list[float]:
  """Per layer of ``costs`` (in order), the fraction of its input locations not skipped in
  one frame (batch 1) of ``stream_step`` stats; plain float ops (``float_op``: no stats) are
  dense (1)."""
  flat = flatten_stats(stats)
  return [
    1.0 if c.float_op else float(np.asarray(flat[p]["density"]).reshape(-1)[0])
    for p, c in costs.items()
  ]


def frame_cost(stats, costs: dict[str, LayerCost]) -> tuple[float, float]:
  """``(BOPs, MAC-weighted density)`` of one frame (batch 1) from ``stream_step`` stats:
  ``clip_bops`` of the frame (plain float ops at ``MACs * 32 * 32``, dense)."""
  per_layer = clip_bops(stack_stream_stats([stats]), costs)  # {path: [T=1, B=1]}
  bops = float(sum(v[0, 0] for v in per_layer.values()))
  macs = sum(c.macs for c in costs.values())
  density = sum(c.macs * d for c, d in zip(costs.values(), layer_densities(stats, costs))) / macs
  return bops, density


def fidelity(logits, float_logits) -> tuple[float, float]:
  """``(argmax agreement, relative L2 error)`` of logits against the float model's."""
  y, ref = np.asarray(logits, np.float64), np.asarray(float_logits, np.float64)
  agreement = float(np.mean(y.argmax(-1) == ref.argmax(-1)))
  norm = float(np.linalg.norm(ref))
  rel = float(np.linalg.norm(y - ref)) / norm if norm > 0 else float(np.linalg.norm(y))
  return agreement, rel


def finest_dynamic_layer(stats) -> str | None:
  """The layer with a bit map of the most locations (first in order on ties)."""
  maps = {p: v["bit_map"] for p, v in flatten_stats(stats).items() if "bit_map" in v}
  return max(maps, key=lambda p: math.prod(maps[p].shape[1:])) if maps else None


def _density_plot(names, densities, keyframes, path) -> None:
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from matplotlib.ticker import MaxNLocator

  data = np.asarray(densities, np.float64).T  # [layers, T]
  fig = Figure(figsize=(min(14.0, 3.0 + 0.08 * data.shape[1]), 1.2 + 0.22 * len(names)))
  ax = fig.add_subplot()
  image = ax.imshow(data, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
  ax.set_yticks(range(len(names)), names, fontsize=6)
  for t in np.flatnonzero(keyframes):
    ax.axvline(t, color="white", lw=0.4, alpha=0.6)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_xlabel("frame (white lines: keyframes)")
  ax.set_title("Dynamic ResQ: fraction of input locations not skipped, per layer", fontsize=9)
  fig.colorbar(image, ax=ax, label="density")
  FigureCanvasAgg(fig)
  fig.savefig(path, dpi=110, bbox_inches="tight")


class _Stream(NamedTuple):
  """What the loop needs: both models with their variables, costs, sizes and the frames."""

  recipe: LayerRecipe
  period: int
  model: Any
  variables: dict
  float_model: Any
  float_vars: dict
  costs: dict
  size: tuple[int, int]
  info: video.VideoInfo
  frames: Any  # iterator of uint8 [H, W, 3]
  calibrated_on: int


def prepare(video_path: str, workdir: str, options: StreamOptions) -> _Stream:
  """Open the video, load the run's models and calibrate a quantized recipe on its first
  frames (raises ``DataError`` / ``CheckpointError`` / ``InvalidConfigError``)."""
  try:
    info = video.video_info(video_path)
  except (FileNotFoundError, ValueError) as e:
    raise errors.DataError(str(e)) from e
  experiment = run_experiment(workdir, options)
  task = experiment.task.name
  if task != "segmentation":
    raise errors.InvalidConfigError(
      f"task: {workdir} is a {task!r} run; stream.py draws and "
      "scores segmentation runs only (allowed: segmentation)"
    )
  plan = experiment.quant
  recipe, period = plan.recipe, plan.period
  model, variables, float_model, float_vars, calibrate = load_models(experiment, workdir, options)
  size = (experiment.data.height, experiment.data.width)
  frames = video.read_video(video_path, size=size, max_frames=options.max_frames, fps=options.fps)
  head = list(itertools.islice(frames, max(1, options.calibration_frames)))
  if not head:
    raise errors.DataError(f"{video_path} has no frames")
  if calibrate:
    if len(head) < 2:
      raise errors.DataError(f"{video_path}: calibration needs >= 2 frames, got {len(head)}")
    clip = jnp.concatenate([normalise(f) for f in head])[None]
    variables = calibrate_model(
      model,
      float_model,
      variables,
      [clip],
      period=plan.calibration_period,
      methods=plan.calibration,
    )
    _check_calibrated(variables)
  costs = layer_costs(model, variables, normalise(head[0]))
  return _Stream(
    recipe,
    period,
    model,
    variables,
    float_model,
    float_vars,
    costs,
    size,
    info,
    itertools.chain(head, frames),
    len(head) if calibrate else 0,
  )


def _panels(s: _Stream, label: str, frame, y, y_ref, bit_map, finest) -> list:
  panels = [
    ("input", frame),
    (label, video.overlay_classes(frame, np.asarray(y)[0].argmax(-1))),
    ("float", video.overlay_classes(frame, np.asarray(y_ref)[0].argmax(-1))),
  ]
  if bit_map is not None:
    levels = tuple(getattr(s.recipe.policy, "bits", ()) or ())
    panels.append((f"bits: {finest.split('/')[-1]}", video.color_bit_map(bit_map, levels, s.size)))
  return panels


def _plots(s: _Stream, out: pathlib.Path, rows, densities, shown, maps, finest) -> None:
  from resq_jax.evaluation.plots import plot_bit_map  # pylint: disable=import-outside-toplevel

  keys = [r["is_keyframe"] for r in rows]
  plot_bit_map(
    np.stack(shown),
    np.stack(maps),
    out / "bit_map.png",
    candidates=tuple(getattr(s.recipe.policy, "bits", ()) or (0,)),
    keyframes=keys[: len(shown)],
    title=f"Dynamic ResQ bit map of layer {finest} (first {len(shown)} frames)",
  )
  _density_plot(list(s.costs), densities, keys, out / "density.png")


def _summary(s: _Stream, video_path, workdir, options, rows, fps, recompiled, overlay) -> dict:
  column = lambda k: np.asarray([r[k] for r in rows], np.float64)
  return {
    "video": str(video_path),
    "workdir": str(workdir),
    "recipe": options.recipe,
    "mode": s.recipe.mode,
    "period": s.period,
    "calibrated_on_frames": s.calibrated_on,
    "input_size": list(s.size),
    "source_size": [s.info.height, s.info.width],
    "source_fps": s.info.fps,
    "fps": fps,
    "frames": len(rows),
    "macs_per_frame": sum(c.macs for c in s.costs.values()),
    "gbops_avg": float(column("gbops").mean()),
    "gbops_peak": float(column("gbops").max()),
    "pct_w8a8_avg": float(column("pct_w8a8").mean()),
    "density_avg": float(column("density").mean()),
    "agreement_avg": float(column("agreement").mean()),
    "rel_error_avg": float(column("rel_error").mean()),
    "frames_per_s_median": float(np.median(column("frames_per_s"))),
    "recompilations": int(recompiled),
    "overlay": str(overlay),
  }


def stream_video(
  video_path: str, workdir: str, out_dir: str, options: StreamOptions = StreamOptions()
) -> dict:
  """Stream ``video_path`` through the model of ``workdir``; write the outputs (module
  docstring) to ``out_dir`` and return the summary."""
  s = prepare(video_path, workdir, options)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  macs = sum(c.macs for c in s.costs.values())
  trigger = options.trigger(s.period)

  def step(m, v, state, x, trig=None):
    return stream_step(
      m, v, state, x, period=s.period, reset_on_nonfinite=options.reset_on_nonfinite, trigger=trig
    )

  first = next(s.frames)
  x0 = normalise(first)
  for m, v, trig in ((s.model, s.variables, trigger), (s.float_model, s.float_vars, None)):
    # Compile both models up front (one program holds the keyframe and residual branches);
    # two steps, since a step's output state is committed to the device and stream_init's is not.
    _, _, warm = step(m, v, stream_init(m, v, x0, trigger=trig), x0, trig)
    jax.block_until_ready(step(m, v, warm, x0, trig))
  compiled = stream_step._cache_size()  # pylint: disable=protected-access
  fps = video.output_fps(s.info.fps, options.fps)
  bar = ProgressBar(
    options.max_frames or max(1, round(s.info.num_frames * fps / s.info.fps)),
    unit="frames",
    enabled=options.show_progress,
  )
  state, float_state = (
    stream_init(s.model, s.variables, x0, trigger=trigger),
    stream_init(s.float_model, s.float_vars, x0),
  )
  rows, densities, shown, maps, finest = [], [], [], [], None
  label = options.recipe if options.recipe != "run" else s.recipe.mode
  overlay = out / f"overlay.{options.video_format}"
  with (
    video.VideoWriter(overlay, fps) as writer,
    open(out / "frames.csv", "w", newline="") as csv_file,
  ):
    table = csv.DictWriter(csv_file, CSV_COLUMNS)
    table.writeheader()
    for t, frame in enumerate(itertools.chain([first], s.frames)):
      x = normalise(frame)
      start = time.perf_counter()
      y, stats, state = jax.block_until_ready(step(s.model, s.variables, state, x, trigger))
      seconds = time.perf_counter() - start
      y_ref, _, float_state = step(s.float_model, s.float_vars, float_state, x)
      stats = jax.device_get(stats)
      is_key = bool(np.asarray(state.is_keyframe).reshape(-1)[0])
      bops, density = frame_cost(stats, s.costs)
      agreement, rel_error = fidelity(y, y_ref)
      rows.append(
        {
          "frame": t,
          "is_keyframe": int(is_key),
          "gbops": bops / 1e9,
          "pct_w8a8": 100.0 * bops / (64 * macs),
          "density": density,
          "agreement": agreement,
          "rel_error": rel_error,
          "frames_per_s": 1.0 / seconds,
        }
      )
      table.writerow(rows[-1])
      bit_map = None
      if s.recipe.mode == "dynamic":
        flat = flatten_stats(stats)
        finest = finest or finest_dynamic_layer(stats)
        densities.append(layer_densities(stats, s.costs))
        bit_map = np.asarray(flat[finest]["bit_map"][0])
        if t < options.bit_map_frames:
          shown.append(frame)
          maps.append(bit_map)
      caption = (
        f"t={t} {'key' if is_key else 'res'} {bops / 1e9:.3g} GBOPs "
        f"({rows[-1]['pct_w8a8']:.0f}% W8A8) agree {100 * agreement:.1f}%"
      )
      writer.write(
        video.compose_panels(
          _panels(s, label, frame, y, y_ref, bit_map, finest),
          caption,
          video.zoom_for(s.size[0]),
          is_key,
        )
      )
      bar.update(t + 1, items=1)
  bar.close()
  recompiled = stream_step._cache_size() - compiled  # pylint: disable=protected-access
  if recompiled:
    warnings.warn(
      f"stream_step compiled {recompiled} more time(s) after the first frame", stacklevel=2
    )
  if s.recipe.mode == "dynamic":
    _plots(s, out, rows, densities, shown, maps, finest)
  summary = _summary(s, video_path, workdir, options, rows, fps, recompiled, overlay)
  summary["keyframes"] = sum(r["is_keyframe"] for r in rows)
  summary["trigger"] = dataclasses.asdict(trigger) if trigger is not None else None
  # The trigger's own arithmetic (subtractions, absolute values, additions): not in BOPs.
  summary["trigger_ops_per_frame"] = trigger_ops(trigger, s.size + (3,)) if trigger else 0
  (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  return summary
