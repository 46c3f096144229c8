"""Frictions a new user met in resq_jax.nn (issue 17, item 3), each against an oracle: the README's
names import, unhashable models get check_hashable's one-line error, calibrate_model takes
keywords, bops_report masks a padded batch, BatchNorm's axis follows where the model runs, and
calibration under a keyframe trigger uses the run's keyframes."""

import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tiny_nets import TinyNet, random_walk_clip

import resq_jax.nn as rnn
from resq_jax.experiment.models import make_model
from resq_jax.experiment.spec import ModelSpec
from resq_jax.nn import (
  CalibrationMethods,
  KeyframeTrigger,
  QConv,
  bops_report,
  calibrate_model,
  check_quantizers,
  clip_bops,
  layer_costs,
  load_float_weights,
  residual_samples,
  run_clip,
)
from resq_jax.nn.models import SegNet, segnet_preset
from resq_jax.quant.dynamic import FixedStepPolicy
from resq_jax.quant.keyframes import trigger_keyframes
from resq_jax.quant.recipe import dynamic_recipe, float_recipe, resq_recipe

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
MINMAX = CalibrationMethods("minmax", "minmax", "minmax", "minmax")

# Words in backticks of the README's `resq_jax.nn` section that are not names of the package:
# arguments and fields (phase, trigger, ...), their values, module paths of examples, report
# keys, and a Flax class.
NOT_NAMES = {
  "ConvTranspose",
  "jacobian_sq",  # layer_sensitivity's report keys
  "key_effect",
  "key_noise",
  "residual_effect",
  "residual_noise",
  "residual_zero_fraction",
  "bn_axis_name",
  "bops_per_layer",
  "conv",
  "float_ops",
  "key",
  "mask",
  "max_period",
  "period",
  "phase",
  "policy_comparisons_per_residual_frame",
  "recipe_rules",
  "remat",
  "residual",
  "trigger",
}


def readme_nn_names() -> set[str]:
  """Every name the README lists under `resq_jax.nn`: in its bullet block, the identifiers
  written as calls (``name(``, also nested: ``FramePrecisionPolicy(thresholds)``) and the
  backticked bare identifiers."""
  text = README.read_text()
  start = text.index("`resq_jax.nn` (Flax):\n")
  block = text[start:].split("\n\n", 1)[0]
  names = set()
  for span in re.findall(r"`([^`]+)`", block):
    names |= set(re.findall(r"(?<![\w.])([A-Za-z_]\w*)\(", span))
    if re.fullmatch(r"[A-Za-z_]\w*", span):
      names.add(span)
  return names - NOT_NAMES


def test_every_name_the_readme_lists_under_nn_imports():
  names = readme_nn_names()
  assert {"run_clip_frame_precision", "FramePrecisionPolicy", "calibrate_model"} <= names
  missing = sorted(n for n in names if not hasattr(rnn, n))
  assert missing == [], (
    f"the README's resq_jax.nn section lists {missing}, which resq_jax.nn does not export: "
    "export them, or add them to NOT_NAMES if they are arguments, keys or values"
  )
  assert set(rnn.__all__) >= names


# --- Unhashable models: check_hashable's one-line TypeError ----------------------------------


class ListNet(nn.Module):
  widths: list

  @nn.compact
  def __call__(self, x, phase=None):
    return QConv(self.widths[0])(x, phase)


@pytest.mark.parametrize("where", ["load_float_weights", "check_quantizers", "calibrate_model"])
def test_unhashable_model_gets_check_hashables_one_line_error(where):
  model = ListNet([4])
  frame = jnp.ones((1, 8, 8, 3), jnp.float32)
  v = model.init(jax.random.key(0), frame)
  calls = {
    "load_float_weights": lambda: load_float_weights(model, v, v, frame=frame),
    "check_quantizers": lambda: check_quantizers(model, v, frame),
    "calibrate_model": lambda: calibrate_model(
      model, variables=v, clips=[frame[:, None]], period=1
    ),
  }
  with pytest.raises(TypeError) as info:
    calls[where]()
  message = str(info.value)
  # The oracle: what check_hashable says for this model and caller.
  with pytest.raises(TypeError) as expected:
    rnn.check_hashable(model, where)
  assert message == str(expected.value)
  assert message.startswith(f"{where}: the model ListNet is not hashable (attributes widths=list)")
  assert "\n" not in message and len(message) < 400


def test_calibrate_model_takes_keywords_after_the_model():
  model = TinyNet(dynamic_recipe(FixedStepPolicy(bits=(0, 2, 4), step=1.0)))
  clip = random_walk_clip(jax.random.key(0), (1, 3, 8, 8, 3))
  v = model.init(jax.random.key(1), clip[:, 0])
  with pytest.raises(TypeError, match="positional argument"):
    calibrate_model(model, TinyNet(), v, [clip], period=2)  # pylint: disable=too-many-function-args
  with pytest.raises(TypeError, match="variables"):
    calibrate_model(model, clips=[clip], period=2)  # pylint: disable=missing-kwoa
  # float_model defaults to the model's float twin: the same result as passing TinyNet().
  got = calibrate_model(model, variables=v, clips=[clip], period=2, methods=MINMAX)
  want = calibrate_model(
    model, float_model=TinyNet(), variables=v, clips=[clip], period=2, methods=MINMAX
  )
  jax.tree.map(np.testing.assert_array_equal, got, want)


# --- bops_report of a padded batch -------------------------------------------------------------


@pytest.fixture(scope="module")
def dynamic_run():
  """Stats of a dynamic-ResQ run over 3 clips (they differ per example: per-location bits)."""
  model = TinyNet(dynamic_recipe(FixedStepPolicy(bits=(0, 2, 4, 8), step=1.0)))
  clip = random_walk_clip(jax.random.key(3), (3, 6, 8, 8, 3), step=0.3)
  v = model.init(jax.random.key(1), clip[:, 0])
  v = calibrate_model(model, variables=v, clips=[clip], period=3, methods=MINMAX)
  stats = run_clip(model, v, clip, period=3).stats
  return stats, layer_costs(model, v, clip[:, 0])


def _examples(stats, index):
  return jax.tree.map(lambda s: np.asarray(s)[:, index], stats)


def _assert_reports_equal(got, want):
  assert set(got) == set(want)
  for key, value in want.items():
    if isinstance(value, dict):
      assert got[key] == pytest.approx(value, rel=1e-12), key
    else:
      np.testing.assert_allclose(got[key], value, rtol=1e-12, err_msg=key)


def test_bops_report_of_a_padded_batch_with_its_mask_equals_the_unpadded_batch(dynamic_run):
  stats, costs = dynamic_run
  real = np.array([True, False, True])  # example 1 is padding
  want = bops_report(_examples(stats, real), costs)
  _assert_reports_equal(bops_report(stats, costs, mask=real), want)
  # A [T, B] mask that repeats it per frame is the same mask.
  tb = np.broadcast_to(real, (6, 3))
  _assert_reports_equal(bops_report(stats, costs, mask=tb), want)
  # clip_bops: padded entries are 0, the real ones untouched.
  masked, plain = clip_bops(stats, costs, mask=real), clip_bops(stats, costs)
  for path in costs:
    np.testing.assert_array_equal(masked[path][:, 1], 0.0)
    np.testing.assert_array_equal(masked[path][:, real], plain[path][:, real])
  # The control: without the mask the padding changes the report.
  assert bops_report(stats, costs)["bops_avg"] != want["bops_avg"]


def test_bops_report_masks_clips_padded_in_time(dynamic_run):
  """Clip 0 has 6 real frames, clip 1 four, clip 2 none (padding); frame 5 of the batch ends
  up with a single real example and frames 4.. follow clip 0 alone."""
  stats, costs = dynamic_run
  mask = np.zeros((6, 3), bool)
  mask[:, 0], mask[:4, 1] = True, True
  report = bops_report(stats, costs, mask=mask)
  both = bops_report(_examples(stats, [0, 1]), costs)["bops_per_frame"]
  alone = bops_report(_examples(stats, [0]), costs)["bops_per_frame"]
  want = np.concatenate([both[:4], alone[4:]])
  np.testing.assert_allclose(report["bops_per_frame"], want, rtol=1e-12)
  assert report["bops_avg"] == pytest.approx(want.mean(), rel=1e-12)
  # Frames without any real example are left out.
  mask[4:] = False
  np.testing.assert_allclose(bops_report(stats, costs, mask=mask)["bops_per_frame"], both[:4])


def test_bops_mask_errors(dynamic_run):
  stats, costs = dynamic_run
  with pytest.raises(TypeError, match="mask must be a bool array"):
    bops_report(stats, costs, mask=np.array([1, 0, 1]))
  with pytest.raises(ValueError, match=r"mask must be \[B\] = \(3,\)"):
    bops_report(stats, costs, mask=np.ones(2, bool))
  with pytest.raises(ValueError, match="no real example"):
    clip_bops(stats, costs, mask=np.zeros(3, bool))


# --- BatchNorm's axis follows where the model runs ---------------------------------------------


class _Task:
  def num_outputs(self) -> int:
    return 3


def _bn_batch():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 16, 16, 3)), jnp.float32)
  y = jnp.asarray(np.random.default_rng(1).integers(0, 3, size=(8, 16, 16)), jnp.int32)
  return x, y


def test_make_model_trains_outside_shard_map_with_the_batchs_statistics():
  """``make_model``'s SegNet (BatchNorm axis 'data') applied with ``train=True`` in a plain
  loop: no 'unbound axis name', and exactly the unsynchronised network (bn_axis_name=None);
  the first BatchNorm's running statistics are the NumPy batch moments of its conv output."""
  x, y = _bn_batch()
  model = make_model(ModelSpec(preset="tiny"), _Task(), float_recipe())
  assert model.bn_axis_name == "data"
  local = SegNet(3, bn_axis_name=None, **segnet_preset("tiny"))
  variables = model.init(jax.random.key(0), x[:1])

  def loss(params, m):
    logits, mutated = m.apply(
      {"params": params, "batch_stats": variables["batch_stats"]},
      x,
      train=True,
      mutable=["batch_stats"],
    )
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.mean(ce), mutated["batch_stats"]

  grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
  (got_loss, got_stats), got_grads = grad(variables["params"], model)
  (want_loss, want_stats), want_grads = grad(variables["params"], local)
  assert float(got_loss) == float(want_loss)
  jax.tree.map(np.testing.assert_array_equal, (got_stats, got_grads), (want_stats, want_grads))
  # NumPy oracle of stem1's batch statistics (3x3 stride-2 SAME conv, no bias, momentum 0.9).
  kernel = np.asarray(variables["params"]["stem1"]["kernel"], np.float64)
  xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 1), (0, 1), (0, 0)))  # SAME for 16 / 2
  patches = np.stack(
    [xp[:, i : i + 15 : 2, j : j + 15 : 2] for i in range(3) for j in range(3)], axis=3
  )  # [B, 8, 8, 9, C]
  conv = np.einsum("bhwkc,kco->bhwo", patches, kernel.reshape(9, 3, -1))
  mean, var = conv.mean(axis=(0, 1, 2)), conv.var(axis=(0, 1, 2))
  np.testing.assert_allclose(got_stats["stem1"]["mean"], 0.1 * mean, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got_stats["stem1"]["var"], 0.9 + 0.1 * var, rtol=1e-4, atol=1e-6)


# --- Calibration under a keyframe trigger --------------------------------------------------


def _cut_clip(cuts, shape=(2, 6, 8, 8, 3)):
  """A slow random walk; example b jumps to a new random field at frame ``cuts[b]`` (None: no
  cut)."""
  clip = random_walk_clip(jax.random.key(7), shape, step=0.05)
  for b, t in enumerate(cuts):
    if t is not None:
      clip = clip.at[b, t:].add(3.0 * jax.random.normal(jax.random.key(50 + b), shape[2:]))
  return clip


CUT = KeyframeTrigger(cut_threshold=1.0, max_period=64)


def test_calibration_under_a_trigger_equals_fixed_keyframes_where_it_fires():
  """Both clips cut at frame 3: the trigger's keyframes are 0 and 3 (as run_clip's), so
  calibrating under it equals calibrating with period 3; period 6 (residuals across the cut)
  gives other ranges."""
  model = TinyNet(resq_recipe((8, 8), (4, 4), "closed"))
  clip = _cut_clip((3, 3))
  v = model.init(jax.random.key(1), clip[:, 0])
  keys = np.asarray(trigger_keyframes(CUT, clip))
  np.testing.assert_array_equal(keys, np.broadcast_to(np.arange(6) % 3 == 0, (2, 6)))
  got = calibrate_model(model, variables=v, clips=[clip], trigger=CUT, methods=MINMAX)
  np.testing.assert_array_equal(run_clip(model, got, clip, trigger=CUT).keyframes, keys)
  want = calibrate_model(model, variables=v, clips=[clip], period=3, methods=MINMAX)
  jax.tree.map(np.testing.assert_array_equal, got, want)
  across = calibrate_model(model, variables=v, clips=[clip], period=6, methods=MINMAX)
  assert float(across["params"]["QConv_0"]["res_a_scale"]) > float(
    got["params"]["QConv_0"]["res_a_scale"]
  )


def test_calibration_under_a_trigger_follows_each_example():
  """Example 0 cuts at frame 2, example 1 never: min-max residual scales (symmetric grids:
  max |r| / qmax) under the trigger are the larger of example 0's at period 2 and example 1's
  at period 6; everything else does not depend on keyframes."""
  model = TinyNet(resq_recipe((8, 8), (4, 4), "key"))
  clip = _cut_clip((2, None))
  v = model.init(jax.random.key(1), clip[:, 0])
  keys = np.asarray(trigger_keyframes(CUT, clip))
  assert [np.flatnonzero(k).tolist() for k in keys] == [[0, 2], [0]]
  got = calibrate_model(model, variables=v, clips=[clip], trigger=CUT, methods=MINMAX)["params"]
  ex0 = calibrate_model(model, variables=v, clips=[clip[:1]], period=2, methods=MINMAX)["params"]
  ex1 = calibrate_model(model, variables=v, clips=[clip[1:]], period=6, methods=MINMAX)["params"]
  fixed = calibrate_model(model, variables=v, clips=[clip], period=2, methods=MINMAX)["params"]
  for layer, params in got.items():
    if "res_a_scale" not in params:
      continue
    want = np.maximum(ex0[layer]["res_a_scale"], ex1[layer]["res_a_scale"])
    np.testing.assert_allclose(params["res_a_scale"], want, rtol=1e-6)
    for name in ("key_a_scale", "key_a_zero_point", "key_w_scale", "res_w_scale"):
      if name in params:
        np.testing.assert_array_equal(params[name], fixed[layer][name])


def test_residual_samples_per_example_by_hand():
  x = np.arange(2 * 5, dtype=np.float64).reshape(2, 5) ** 2  # [B, T]
  keys = np.array([[1, 0, 1, 0, 0], [1, 0, 0, 0, 1]], bool)
  # (b, t): ref for 'key' / 'prev'
  pairs = [(0, 1, 0, 0), (0, 3, 2, 2), (0, 4, 2, 3), (1, 1, 0, 0), (1, 2, 0, 1), (1, 3, 0, 2)]
  want_key = [x[b, t] - x[b, k] for b, t, k, _ in pairs]
  want_prev = [x[b, t] - x[b, p] for b, t, _, p in pairs]
  np.testing.assert_array_equal(residual_samples(x, keys, "key"), want_key)
  np.testing.assert_array_equal(residual_samples(x, keys, "prev"), want_prev)
  # A period and the mask it makes agree with the old [B, n] layout.
  np.testing.assert_array_equal(
    residual_samples(x, 2, "key"), residual_samples(x, np.arange(5) % 2 == 0, "key")
  )
  np.testing.assert_array_equal(residual_samples(x, 2, "key"), x[:, [1, 3]] - x[:, [0, 2]])
  with pytest.raises(ValueError, match="frame 0"):
    residual_samples(x, ~keys, "key")
  with pytest.raises(ValueError, match="observations"):
    calibrate_model(
      TinyNet(),
      variables={},
      observations=object(),
      trigger=CUT,  # checked before anything
    )


def test_calibration_under_a_trigger_without_any_residual_is_refused():
  """A trigger that fires on every frame leaves no residual: a clear error; such a batch beside
  one with residuals calibrates on the latter (equal to calibrating on it alone)."""
  model = TinyNet(resq_recipe((8, 8), (4, 4), "closed"))
  noise = jax.random.normal(jax.random.key(9), (2, 6, 8, 8, 3))  # a new frame every frame
  calm = _cut_clip((None, None))
  v = model.init(jax.random.key(1), calm[:, 0])
  trigger = KeyframeTrigger(cut_threshold=0.5, max_period=64)
  assert np.asarray(trigger_keyframes(trigger, noise)).all()
  assert np.asarray(trigger_keyframes(trigger, calm)).sum() == 2  # frame 0 of each clip
  with pytest.raises(ValueError, match="no residual to calibrate on"):
    calibrate_model(model, variables=v, clips=[noise], trigger=trigger, methods=MINMAX)
  both = calibrate_model(model, variables=v, clips=[noise, calm], trigger=trigger, methods=MINMAX)
  alone = calibrate_model(model, variables=v, clips=[calm], trigger=trigger, methods=MINMAX)
  residual = lambda p: {k: x["res_a_scale"] for k, x in p["params"].items() if "res_a_scale" in x}
  jax.tree.map(np.testing.assert_array_equal, residual(both), residual(alone))
