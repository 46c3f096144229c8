"""Video in and out (resq_jax.stream.video) and streaming a run over a video (stream.py)."""

import csv
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import flags

from resq_jax import errors
from resq_jax.experiment import models, parse
from resq_jax.nn import (
  QConv,
  bops_report,
  calibrate_model,
  stack_stream_stats,
  stream_init,
  stream_step,
)
from resq_jax.nn.costs import layer_costs, network_macs
from resq_jax.quant.cost import LayerCost
from resq_jax.quant.recipe import float_recipe, resq_recipe
from resq_jax.stream import compare, setup, video
from resq_jax.stream.options import StreamOptions, run_experiment
from resq_jax.training import Checkpointer, TrainState, checkpoint_dir

ROOT = pathlib.Path(__file__).resolve().parents[1]
T, H, W, FPS = 12, 40, 48, 10


def moving_squares(num_frames=T, height=H, width=W) -> np.ndarray:
  """uint8 [T, H, W, 3]: a red and a green square moving over a grey gradient."""
  y, x = np.mgrid[:height, :width]
  frames = []
  for t in range(num_frames):
    frame = np.repeat((40 + 2 * x + y)[..., None], 3, axis=-1).astype(np.uint8)
    frame[8:20, 3 + 2 * t : 15 + 2 * t] = (220, 50, 40)
    frame[22:34, 30 - t : 40 - t] = (40, 200, 60)
    frames.append(frame)
  return np.stack(frames)


def psnr(a, b) -> float:
  mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
  return float(10 * np.log10(255.0**2 / mse)) if mse > 0 else float("inf")


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("video") / "squares.mp4"
  video.write_video(path, moving_squares(), FPS)
  return path


def test_encode_decode_round_trip(clip_file, tmp_path):
  info = video.video_info(clip_file)
  assert (info.num_frames, info.height, info.width) == (T, H, W)
  assert info.fps == pytest.approx(FPS)
  decoded = list(video.read_video(clip_file))
  assert len(decoded) == T and all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in decoded)
  for original, frame in zip(moving_squares(), decoded):
    # H.264 (crf 18, yuv420p): chroma at half resolution blurs the coloured squares' edges
    # (measured 28-31 dB in RGB); brightness is kept much better (38-44 dB).
    assert psnr(original, frame) > 26.0
    assert psnr(original.mean(-1), frame.mean(-1)) > 35.0
  gif = video.write_video(tmp_path / "squares.gif", moving_squares(), FPS)
  assert len(list(video.read_video(gif))) == T


def test_odd_sizes_are_padded_for_h264(tmp_path):
  path = video.write_video(tmp_path / "odd.mp4", moving_squares(3, 21, 33), FPS)
  frames = list(video.read_video(path))
  assert len(frames) == 3 and frames[0].shape == (22, 34, 3)


def test_temporal_subsampling_keeps_every_other_frame(clip_file):
  full = list(video.read_video(clip_file))
  half = list(video.read_video(clip_file, fps=FPS / 2))
  assert len(half) == T // 2
  for a, b in zip(half, full[::2]):
    np.testing.assert_array_equal(a, b)
  assert len(list(video.read_video(clip_file, fps=4))) == 5  # t = 0, .3, .5, .8, 1.0 s
  assert len(list(video.read_video(clip_file, fps=100))) == T  # never duplicated
  assert len(list(video.read_video(clip_file, max_frames=5))) == 5
  assert video.output_fps(FPS, 4) == 4 and video.output_fps(FPS, 100) == FPS


def test_cover_crop_box_by_hand():
  assert video.cover_crop_box(40, 80, 20, 20) == (20, 40, 0, 10)  # short side 40 -> 20
  assert video.cover_crop_box(45, 30, 16, 16) == (24, 16, 4, 0)  # scale 16/30
  assert video.cover_crop_box(64, 64, 32, 48) == (48, 48, 8, 0)  # covers the wide target
  assert video.cover_crop_box(10, 10, 20, 20) == (20, 20, 0, 0)  # upscales too
  with pytest.raises(ValueError):
    video.cover_crop_box(0, 10, 4, 4)


def test_resize_crop_of_stripes():
  """Vertical stripes 8 px wide, scaled by 1/2 (4 px) and cropped at column 10: the bilinear
  2:1 filter reads input pixels 2j-1 .. 2j+2, so outputs 4s+1 and 4s+2 are stripe s exactly."""
  stripes = (np.arange(10) * 25).astype(np.uint8)
  image = np.repeat(np.repeat(stripes, 8)[None, :, None], 40, axis=0).repeat(3, axis=-1)
  out = video.resize_crop(image, (20, 20))
  assert out.shape == (20, 20, 3)
  for c in range(20):
    if (c + 10) % 4 in (1, 2):
      assert (out[:, c] == stripes[(c + 10) // 4]).all(), c


def test_overlay_and_bit_map_colours():
  frame = np.full((4, 4, 3), 100, np.uint8)
  classes = np.zeros((4, 4), int)
  expected = np.round(0.5 * 100 + 0.5 * video.CLASS_PALETTE[0].astype(float))
  np.testing.assert_array_equal(
    video.overlay_classes(frame, classes), np.broadcast_to(expected, (4, 4, 3))
  )
  bits = np.array([[0, 8], [2, 4]])
  colored = video.color_bit_map(bits, (0, 2, 4, 8), (4, 4))
  assert colored.shape == (4, 4, 3)
  np.testing.assert_array_equal(colored[0, 0], (224, 224, 224))  # skip is light grey
  assert len({tuple(colored[r, c]) for r in (0, 3) for c in (0, 3)}) == 4


# --- Streaming a run -----------------------------------------------------------------------------


def load_config(name, **overrides):
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in overrides.items():
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
  return config


def random_variables(model, frame_shape, seed=1) -> dict:
  """He-normal kernels, unit BatchNorm scales and variances, zero biases and means, in the
  shapes of the model's init (traced only: compiling Flax's init takes 20 s on 2 busy cores)."""
  shapes = models.abstract_variables(model, frame_shape)
  rng = np.random.default_rng(seed)

  def value(path, s):
    name = path[-1].key
    if name == "kernel":
      return rng.normal(0, np.sqrt(2 / np.prod(s.shape[:-1])), s.shape).astype(s.dtype)
    return np.full(s.shape, 1.0 if name in ("bn_scale", "var") else 0.0, s.dtype)

  values = jax.tree.map(jnp.asarray, jax.tree_util.tree_map_with_path(value, shapes))
  return {"params": values["params"], "batch_stats": values["batch_stats"]}


@pytest.fixture(scope="module")
def fp_run(tmp_path_factory):
  """A fake FP run of the tiny preset: random weights saved as step 0 with its config.json
  (what train.py leaves behind, without building a dataset or training)."""
  workdir = tmp_path_factory.mktemp("fp_run")
  config = load_config("tiny")
  experiment = parse.parse(config, num_devices=1)
  model = models.make_model(experiment.model, experiment.task, float_recipe())
  variables = random_variables(model, experiment.data.frame_shape)
  save_run(workdir, config, variables)
  frame = jnp.zeros(experiment.data.frame_shape, jnp.float32)
  return workdir, network_macs(layer_costs(model, variables, frame))


def read_rows(out):
  with open(out / "frames.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == list(compare.CSV_COLUMNS)
  return [{k: float(v) for k, v in row.items()} for row in rows]


@pytest.fixture
def stream_py():
  """stream.py's main, called in this process with parsed flags (as absl's app.run would);
  its flags are removed again afterwards."""
  before = set(flags.FLAGS)
  spec = importlib.util.spec_from_file_location("stream_entry_point", ROOT / "stream.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  yield lambda *argv: module.main(flags.FLAGS(["stream.py", *argv]))
  for name in set(flags.FLAGS) - before:
    delattr(flags.FLAGS, name)


def test_stream_py_fp_end_to_end(clip_file, fp_run, tmp_path, stream_py, capsys):
  """The entry point on the FP run: float = 32 x 32 bits per MAC, equal to the float
  reference, every frame a 'keyframe' (no state); a GIF overlay of every frame."""
  workdir, macs = fp_run
  stream_py(
    "--video", str(clip_file), "--workdir", str(workdir), "--out", str(tmp_path), "--format", "gif"
  )
  stdout = capsys.readouterr().out
  assert "frames/s" in stdout and f"{T} frames" in stdout
  rows = read_rows(tmp_path)
  assert [r["frame"] for r in rows] == list(range(T))
  for r in rows:
    assert r["gbops"] == pytest.approx(1024 * macs / 1e9, rel=1e-9)
    assert r["pct_w8a8"] == pytest.approx(1600.0)
    assert (r["is_keyframe"], r["density"], r["agreement"], r["rel_error"]) == (1, 1, 1, 0)
    assert r["frames_per_s"] > 0
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["recompilations"] == 0 and summary["input_size"] == [32, 32]
  assert summary["source_size"] == [H, W]
  overlay = list(video.read_video(tmp_path / "overlay.gif"))
  assert len(overlay) == T
  assert not (tmp_path / "bit_map.png").exists()


def test_stream_py_prints_only_its_own_lines(clip_file, fp_run, tmp_path):
  """stream.py as a user runs it (absl's app.run sets INFO verbosity): its one result line on
  stdout and nothing on stderr (no Orbax restore lines, no JAX backend probe); --verbose lets
  the libraries' INFO lines through."""
  workdir, _ = fp_run
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)
  argv = [sys.executable, str(ROOT / "stream.py"), "--video", str(clip_file)]
  argv += ["--workdir", str(workdir), "--max_frames", "3", "--format", "gif"]
  quiet = subprocess.run(
    [*argv, "--out", str(tmp_path / "quiet")], env=env, capture_output=True, text=True
  )
  assert quiet.returncode == 0, quiet.stderr[-3000:]
  summary = json.loads((tmp_path / "quiet" / "summary.json").read_text())
  first, last, result = quiet.stdout.splitlines()  # its progress bar (not a TTY), its result
  assert first == "step 1/3 (33%)" and re.fullmatch(
    r"step 3/3 \(100%\) \| [0-9.]+ frames/s \| ETA 0:00:00", last
  )
  assert [result] == [
    f"3 frames, {summary['gbops_avg']:.4g} GBOPs/frame ({summary['pct_w8a8_avg']:.1f}% of "
    f"W8A8), agreement with float {100 * summary['agreement_avg']:.2f}%; outputs in "
    f"{tmp_path / 'quiet'}"
  ]
  assert quiet.stderr == ""
  verbose = subprocess.run(
    [*argv, "--out", str(tmp_path / "verbose"), "--verbose"],
    env=env,
    capture_output=True,
    text=True,
  )
  assert verbose.returncode == 0 and "orbax" in verbose.stderr.lower()


@pytest.mark.parametrize("recipe, period", [("fq", 0), ("resq", 3), ("dynamic", 4)])
def test_stream_quantized_recipes_cost_oracle(clip_file, fp_run, tmp_path, recipe, period):
  """Calibrated on the video's first frames. FQ W8A8: 64 bits per MAC on every frame; static
  ResQ: 8x8 at t % K == 0, 4x4 between; dynamic ResQ: 8x8 at keyframes, at most 4 x 8 bits
  per MAC between, density 1 at keyframes."""
  workdir, macs = fp_run
  options = StreamOptions(
    recipe=recipe,
    key_bits=(8, 8),
    residual_bits=(4, 4),
    period=period,
    calibration_frames=8,
    show_progress=False,
  )
  summary = compare.stream_video(str(clip_file), str(workdir), str(tmp_path), options)
  rows = read_rows(tmp_path)
  assert len(rows) == T and summary["frames"] == T and summary["recompilations"] == 0
  for t, r in enumerate(rows):
    key = recipe == "fq" or t % period == 0
    assert r["is_keyframe"] == int(key)
    if key:
      assert r["gbops"] == pytest.approx(64 * macs / 1e9, rel=1e-9)
      assert r["density"] == 1.0
    elif recipe == "resq":
      assert r["gbops"] == pytest.approx(16 * macs / 1e9, rel=1e-9)
    else:
      assert 0 <= r["gbops"] <= 32 * macs / 1e9 * (1 + 1e-9) and 0 <= r["density"] <= 1
    assert 0 <= r["agreement"] <= 1 and 0 <= r["rel_error"] < 1
  assert rows[0]["rel_error"] > 0  # quantized: not the float model
  assert len(list(video.read_video(tmp_path / "overlay.mp4"))) == T
  dynamic_files = [(tmp_path / n).exists() for n in ("bit_map.png", "density.png")]
  assert dynamic_files == [recipe == "dynamic"] * 2
  if recipe == "dynamic":
    assert any(r["density"] < 1 for r in rows) or all(r["gbops"] > 0 for r in rows)


def test_stream_py_adaptive_keyframes(clip_file, fp_run, tmp_path, stream_py):
  """--drift_threshold: keyframes where the NumPy definition of the trigger fires on the
  normalised frames (not every --period frames), each at 8 x 8 bits per MAC, residual frames
  at 4 x 4; the trigger's own operations in the summary."""
  from test_keyframes import numpy_decisions

  workdir, macs = fp_run
  argv = ["--video", str(clip_file), "--workdir", str(workdir), "--out", str(tmp_path)]
  stream_py(*argv, "--recipe", "resq", "--period", "6", "--drift_threshold", "0.2")
  frames = video.read_video(clip_file, size=(32, 32))
  x = np.concatenate([np.asarray(setup.normalise(f)) for f in frames])[None]
  want = numpy_decisions(StreamOptions(drift_threshold=0.2).trigger(6), x)[0]
  assert want != [t % 6 == 0 for t in range(T)]  # the trigger, not the period, decides
  rows = read_rows(tmp_path)
  assert [bool(r["is_keyframe"]) for r in rows] == want
  for r in rows:
    bits = 64 if r["is_keyframe"] else 16
    assert r["gbops"] == pytest.approx(bits * macs / 1e9, rel=1e-9)
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["keyframes"] == sum(want) and summary["recompilations"] == 0
  assert summary["trigger"]["max_period"] == 6
  assert summary["trigger_ops_per_frame"] == 3 * 32 * 32 * 3 + 1


def save_run(workdir, config, variables):
  state = TrainState.create(
    variables["params"], optax.sgd(0.1), jax.random.key(0), variables["batch_stats"]
  )
  with Checkpointer(checkpoint_dir(workdir), save_every_steps=1, async_save=False) as ckpt:
    ckpt.save(0, state)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))


def test_ptq_run_streams_with_its_own_quantizers(clip_file, fp_run, tmp_path):
  """A PTQ run (static ResQ, K = 3) made from the FP run: --recipe=run restores its quantizers
  (no calibration) and costs 8x8 / 4x4 bits per MAC; other recipes need the FP run."""
  fp_dir, macs = fp_run
  config = load_config(
    "tiny", **{"stage": "ptq", "init_from": str(fp_dir), "quant.mode": "resq", "quant.period": 3}
  )
  options = StreamOptions(recipe="resq", period=3)
  experiment = run_experiment(str(fp_dir), options)
  assert experiment.quant.recipe == parse.parse(config, num_devices=1).quant.recipe
  model, variables, float_model, _, needs = setup.load_models(experiment, str(fp_dir), options)
  assert needs
  frames = video.read_video(clip_file, size=(32, 32), max_frames=8)
  clip = jnp.concatenate([setup.normalise(f) for f in frames])[None]
  variables = calibrate_model(
    model,
    float_model=float_model,
    variables=variables,
    clips=[clip],
    period=3,
    methods=experiment.quant.calibration,
  )
  save_run(tmp_path / "ptq", config, variables)
  options = StreamOptions(max_frames=7, show_progress=False)
  summary = compare.stream_video(
    str(clip_file), str(tmp_path / "ptq"), str(tmp_path / "out"), options
  )
  assert (summary["mode"], summary["period"], summary["calibrated_on_frames"]) == ("resq", 3, 0)
  rows = read_rows(tmp_path / "out")
  assert [r["is_keyframe"] for r in rows] == [1, 0, 0, 1, 0, 0, 1]
  for r in rows:
    bits = 64 if r["is_keyframe"] else 16
    assert r["gbops"] == pytest.approx(bits * macs / 1e9, rel=1e-9)
    assert 0 < r["rel_error"] < 1
  with pytest.raises(errors.InvalidConfigError, match="needs the workdir of an FP run"):
    compare.stream_video(
      str(clip_file),
      str(tmp_path / "ptq"),
      str(tmp_path / "out2"),
      StreamOptions(recipe="fq"),
    )


def test_clear_errors(fp_run, clip_file, tmp_path):
  workdir, _ = fp_run
  with pytest.raises(errors.DataError, match="no video file"):
    compare.stream_video(str(tmp_path / "missing.mp4"), str(workdir), str(tmp_path))
  (tmp_path / "text.mp4").write_text("not a video")
  with pytest.raises(errors.DataError, match="cannot decode"):
    compare.stream_video(str(tmp_path / "text.mp4"), str(workdir), str(tmp_path))
  with pytest.raises(errors.CheckpointError, match="config.json"):
    compare.stream_video(str(clip_file), str(tmp_path), str(tmp_path))
  pose = load_config("tiny")
  pose.task = "pose"
  (tmp_path / "config.json").write_text(pose.to_json_best_effort())
  with pytest.raises(errors.InvalidConfigError, match="segmentation runs only"):
    compare.stream_video(str(clip_file), str(tmp_path), str(tmp_path))
  with pytest.raises(errors.InvalidConfigError, match="recipe"):
    run_experiment(str(workdir), StreamOptions(recipe="int3"))


def write_run_config(workdir, config: dict) -> str:
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(json.dumps(config))
  return str(workdir)


def test_run_experiment_of_old_and_invalid_run_configs(tmp_path, caplog):
  """A run config saved under an older schema streams: a missing key takes today's default,
  an unknown one is ignored, and keys that streaming does not read may fail today's rules
  (they take today's defaults, with a warning). Keys it reads, and the options, are
  validated: one ConfigError line each."""
  saved = json.loads(
    load_config("tiny", **{"quant.mode": "resq", "quant.period": 3}).to_json_best_effort()
  )
  del saved["task"], saved["quant"]["stop_ref_gradient"]  # keys added after the run
  saved["quant"]["ema_decay"] = 0.9  # a key removed since
  saved["train"]["num_steps"] = 1  # fails today's rule (the LR schedule needs 2)
  saved["eval"]["sweep"] = "gone"  # a sweep no longer in configs/sweeps.py
  workdir = write_run_config(tmp_path / "old", saved)
  with caplog.at_level("WARNING", logger="resq_jax"):
    experiment = run_experiment(workdir)
  assert experiment.task.name == "segmentation" and experiment.model.preset == "tiny"
  assert (experiment.quant.recipe.mode, experiment.quant.period) == ("resq", 3)
  recipe = experiment.quant.recipe
  assert (recipe.key.bits, recipe.residual.bits) == ((8, 8), (4, 4))
  assert experiment.quant.calibration.weight == "minmax"
  assert (experiment.data.height, experiment.data.width) == (32, 32)
  assert experiment.train.num_steps >= 2  # today's default
  assert "quant.ema_decay" in caplog.text and "train.num_steps" in caplog.text
  options = StreamOptions(recipe="fq", key_bits=(4, 4), period=5)
  fq = run_experiment(workdir, options).quant
  assert (fq.recipe.mode, fq.recipe.key.bits, fq.period, fq.calibration_period) == (
    "fq",
    (4, 4),
    1,
    2,
  )  # FQ has no keyframes: period 1, calibration sees K = 2
  with pytest.raises(parse.ConfigError, match=r"quant\.residual_bits") as info:
    run_experiment(workdir, StreamOptions(key_bits=(4, 4), residual_bits=(8, 8)))
  assert len(info.value.problems) == 1
  saved["quant"]["period"] = 0
  saved["model"]["preset"] = "huge"
  with pytest.raises(parse.ConfigError) as info:
    run_experiment(write_run_config(tmp_path / "bad", saved))
  assert [p.partition(":")[0] for p in info.value.problems] == ["model.preset", "quant.period"]


def test_frame_cost_by_hand_with_a_plain_float_op():
  """A quantized layer (8 x 4 bits over 4 locations, half of them skipped) and a plain Flax op
  (``float_op``: no stats, 32 x 32 bits, dense)."""
  costs = {
    "q": LayerCost(macs=100, n_locations=4),
    "head": LayerCost(macs=50, n_locations=4, float_op=True),
  }
  stats = {
    "q": {"w_bits": np.array([4]), "act_bits": np.array([2 * 8]), "density": np.array([0.5])}
  }
  bops, density = compare.frame_cost(stats, costs)
  assert bops == 4 * 100 * 16 / 4 + 1024 * 50
  assert density == pytest.approx((100 * 0.5 + 50) / 150)
  assert compare.layer_densities(stats, costs) == [0.5, 1.0]


class ResQThenPlain(flax.linen.Module):
  @flax.linen.compact
  def __call__(self, x, phase=None):
    recipe = resq_recipe((8, 8), (4, 4), "closed", False)
    x = flax.linen.relu(QConv(6, strides=(2, 2), recipe=recipe, name="q")(x, phase))
    return flax.linen.Conv(3, (3, 3), name="plain")(x)


def test_frame_cost_of_streamed_model_with_a_plain_op():
  """Streaming a model with a plain nn.Conv: per-frame cost equals bops_report over the stacked
  stats (8 x 8 / 4 x 4 bits per MAC of the ResQ layer at key / residual frames, 32 x 32 for the
  plain conv on every frame)."""
  model = ResQThenPlain()
  clip = jnp.asarray(moving_squares(4, 16, 16)[None], jnp.float32) / 255.0
  variables = calibrate_model(
    model, variables=model.init(jax.random.key(0), clip[:, 0]), clips=[clip], period=2
  )
  with pytest.warns(UserWarning, match="plain Flax linear op"):
    costs = layer_costs(model, variables, clip[:, 0])
  assert costs["plain"].float_op
  state, frames_stats, per_frame = stream_init(model, variables, clip[:, 0]), [], []
  for t in range(4):
    _, stats, state = stream_step(model, variables, state, clip[:, t], period=2)
    frames_stats.append(jax.device_get(stats))
    per_frame.append(compare.frame_cost(frames_stats[-1], costs))
  report = bops_report(stack_stream_stats(frames_stats), costs)
  np.testing.assert_allclose([b for b, _ in per_frame], report["bops_per_frame"], rtol=1e-12)
  q, plain = costs["q"].macs, costs["plain"].macs
  assert [b for b, _ in per_frame] == [64 * q + 1024 * plain, 16 * q + 1024 * plain] * 2
  assert all(d == 1.0 for _, d in per_frame)
