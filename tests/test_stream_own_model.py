"""stream.py --model: your own model on your own video (resq_jax/stream/own_model.py): the
per-window errors against hand counts, costs against the BOPs formula, and the whole command
on a small linen model (module:factory) and a video written here."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.errors import InvalidConfigError
from resq_jax.quant.recipe import float_recipe, fq_recipe, hold_recipe, resq_recipe
from resq_jax.stream import own_model
from resq_jax.stream.own_model import Candidate
from resq_jax.stream.video import write_video


class TinyMask(nn.Module):
  """A plain linen segmenter (no resq_jax layers): conv-ReLU, depthwise, 1x1, sigmoid."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    x = nn.relu(nn.Conv(8, (3, 3), feature_group_count=8)(x))
    return jax.nn.sigmoid(nn.Conv(1, (1, 1))(x))


def tiny_mask_model():
  """The factory ``--model test_stream_own_model:tiny_mask_model`` loads."""
  module = TinyMask()
  variables = module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  return module, variables, (16, 16)


def test_window_errors_against_hand_counts():
  ref = np.zeros((1, 2, 2, 2, 1))
  ref[0, :, 0, :, 0] = 0.9  # the top row is the mask in both frames
  out = ref.copy()
  out[0, 1, 1, 0, 0] = 0.8  # frame 1 adds one pixel: IoU 2/3
  errs = own_model.window_errors("mask", out, ref)
  np.testing.assert_allclose(errs["mask_err_by_t"], [[0.0, 1 / 3]])
  np.testing.assert_allclose(errs["mask_err"], [1 - 4 / 5])  # pooled over the window: 4 of 5
  want = np.linalg.norm(out - ref) / np.linalg.norm(ref)
  np.testing.assert_allclose(errs["rel_l2"], [want])

  ref = np.zeros((1, 1, 10))  # two landmarks of (x, y, z, visibility, presence)
  out = ref.copy()
  out[0, 0, :2] = (3.0, 4.0)  # the first moves by 5 px, its z does not count
  out[0, 0, 2] = 7.0
  errs = own_model.window_errors("landmarks", out, ref + 1e-9)
  np.testing.assert_allclose(errs["kp_px"], [2.5], rtol=1e-6)

  ref = np.zeros((1, 1, 2, 2, 3))
  ref[..., 0] = 1.0
  out = ref.copy()
  out[0, 0, 0, 0] = (0.0, 2.0, 0.0)  # one of four pixels changes class
  np.testing.assert_allclose(own_model.window_errors("classes", out, ref)["class_err"], [0.25])
  with pytest.raises(ValueError, match="output kind must be one of"):
    own_model.window_errors("depth", out, ref)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
  from resq_jax.data import generate_clip

  frames = generate_clip("slow_pan", "test", 3, height=32, width=32, num_frames=24)["frames"]
  return str(write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, 10))


def test_compare_own_model_end_to_end(video, tmp_path):
  """Costs follow the BOPs formula (W8A8 = 64 bits per MAC; static ResQ K=2 W8A8/W4A4 spends
  (64 + 16) / 2; hold K=2 one keyframe in two); FP has no error; files are written."""
  candidates = [
    Candidate(name="FP", family="fp", recipe=float_recipe()),
    Candidate(name="FQ W8A8", family="fq", recipe=fq_recipe(8, 8)),
    Candidate(name="FQ W4A4", family="fq", recipe=fq_recipe(4, 4)),
    Candidate(name="ResQ", family="resq", recipe=resq_recipe((8, 8), (4, 4)), period=2),
    Candidate(name="hold", family="hold", recipe=hold_recipe(), period=2),
  ]
  result = own_model.compare_own_model(
    "test_stream_own_model:tiny_mask_model",
    video,
    tmp_path,
    kind="mask",
    window=4,
    calibration_windows=2,
    candidates=candidates,
  )
  rows = {r["name"]: r for r in result["rows"]}
  assert result["windows"] == 6
  np.testing.assert_allclose(rows["FQ W8A8"]["pct_w8a8"], 100.0)
  np.testing.assert_allclose(rows["FQ W4A4"]["pct_w8a8"], 25.0)
  np.testing.assert_allclose(rows["ResQ"]["pct_w8a8"], 100.0 * (64 + 16) / 2 / 64)
  np.testing.assert_allclose(rows["hold"]["pct_w8a8"], 50.0)
  assert rows["FP"]["mask_err"] == 0.0 and rows["FP"]["rel_l2"] == 0.0
  assert len(rows["ResQ"]["mask_err_per_clip"]) == 4  # the evaluated windows
  assert all(lo <= rows["FQ W4A4"]["rel_l2"] <= hi for lo, hi in [rows["FQ W4A4"]["rel_l2_ci"]])
  assert json.loads((tmp_path / "results.json").read_text())["rows"][0]["name"] == "FP"
  assert (tmp_path / "fronts.png").stat().st_size > 0
  text = (tmp_path / "results.md").read_text()
  assert "| ResQ | resq | 62.5 |" in text and "static ResQ vs FQ" in text


def test_bad_inputs_are_one_line_errors(video, tmp_path):
  with pytest.raises(InvalidConfigError, match="does not exist"):
    own_model.compare_own_model("missing.tflite", video, tmp_path, kind="mask")
  with pytest.raises(InvalidConfigError, match="package.module:factory"):
    own_model.compare_own_model("no_factory", video, tmp_path, kind="mask")
  with pytest.raises(InvalidConfigError, match="cannot load"):
    own_model.compare_own_model("nosuchmodule:f", video, tmp_path, kind="mask")
  with pytest.raises(InvalidConfigError, match="at least one more is needed"):
    own_model.compare_own_model(
      "test_stream_own_model:tiny_mask_model", video, tmp_path, kind="mask", window=8,
      calibration_windows=3,
    )  # fmt: skip


def test_stream_py_needs_exactly_one_of_workdir_and_model(tmp_path):
  import pathlib
  import subprocess
  import sys

  root = pathlib.Path(__file__).resolve().parents[1]
  for extra in ([], ["--workdir", str(tmp_path), "--model", "m.tflite"]):
    proc = subprocess.run(
      [sys.executable, str(root / "stream.py"), "--video", "v.mp4", *extra],
      capture_output=True,
      text=True,
      cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "give exactly one of --workdir and --model" in proc.stderr
    assert "Traceback" not in proc.stderr
