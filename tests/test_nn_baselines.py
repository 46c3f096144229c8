"""Peer baselines on the tiny SegNet (docs/baselines.md): keyframe hold and VideoIQ-style
per-frame precision.

Oracles: the keyframe's own output (hold returns it on every frame of its group) and W8A8 FQ of
the keyframe; hand-computed BOPs (0 on held frames, ``w * a * MACs`` per frame at the chosen
precision); a NumPy reference of the frame policy; each candidate run on its own.
"""

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.nn.calibrate import CalibrationMethods, calibrate_model
from resq_jax.nn.costs import bops_report, clip_bops, flatten_stats, layer_costs, network_macs
from resq_jax.nn.frame_precision import FramePrecisionPolicy, run_clip_frame_precision
from resq_jax.nn.models import SegNet, segnet_preset
from resq_jax.nn.runner import run_clip
from resq_jax.quant.recipe import fq_recipe, hold_recipe

NUM_CLASSES, HW = 3, 32
MINMAX = CalibrationMethods("minmax", "minmax", "minmax", "minmax")
FRAME_BITS = ((4, 4), (6, 6), (8, 8))
THRESHOLDS = (0.05, 0.15)


def segnet(recipe):
  return SegNet(NUM_CLASSES, **segnet_preset("tiny"), recipe=recipe)


def make_variables(model, frame):
  """NumPy-drawn variables, one fixed stream per parameter path (every recipe of the network
  gets the same weights); quantizer parameters are ones until calibrated."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), frame)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if name.endswith("['kernel']"):
      value = rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
    elif name.endswith(("['bn_scale']", "['var']")):
      value = rng.uniform(0.5, 1.5, size=leaf.shape)
    elif name.endswith(("['bn_bias']", "['mean']", "['bias']")):
      value = 0.2 * rng.normal(size=leaf.shape)
    else:
      value = np.ones(leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def calibrated(recipe, clip, period):
  model = segnet(recipe)
  variables = make_variables(model, clip[:, 0])
  return model, calibrate_model(
    model, variables=variables, clips=[clip], period=period, methods=MINMAX
  )


def random_walk_clip(seed, shape, step=0.1):
  rng = np.random.default_rng(seed)
  base = rng.normal(size=(shape[0], 1, *shape[2:]))
  return jnp.asarray(base + np.cumsum(step * rng.normal(size=shape), axis=1), jnp.float32)


# ---- keyframe hold ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hold_run():
  clip = random_walk_clip(0, (2, 4, HW, HW, 3), step=0.3)
  model, variables = calibrated(hold_recipe(), clip, period=2)
  return model, variables, clip, run_clip(model, variables, clip, period=2)


def test_hold_repeats_the_keyframe_output_on_every_frame_of_its_group(hold_run):
  model, variables, clip, result = hold_run
  out = np.asarray(result.outputs)  # [B, T, H, W, classes]
  for key, held in ((0, 1), (2, 3)):  # period 2: keyframes at t = 0 and 2
    np.testing.assert_array_equal(out[:, held], out[:, key])
  assert np.abs(out[:, 2] - out[:, 0]).max() > 0.1  # the video does change
  # The keyframe output is W8A8 frame quantization of the keyframe (same variables).
  fq = run_clip(segnet(fq_recipe(8, 8)), variables, clip[:, ::2], period=1).outputs
  np.testing.assert_array_equal(out[:, ::2], np.asarray(fq))


def test_hold_residual_frames_cost_zero_bops(hold_run):
  model, variables, clip, result = hold_run
  costs = layer_costs(model, variables, clip[:, 0])
  report = bops_report(result.stats, costs)
  macs = network_macs(costs)
  np.testing.assert_array_equal(report["bops_per_frame"], [64.0 * macs, 0.0, 64.0 * macs, 0.0])
  for layer in clip_bops(result.stats, costs).values():
    np.testing.assert_array_equal(layer[1::2], 0.0)


# ---- per-frame precision ----------------------------------------------------------------------


def stepped_clip():
  """``[2, 4, 32, 32, 3]`` whose frame-to-frame mean |change| is 0, 0.1 or 1 by construction:
  row 0: hold, +0.1, +1.0; row 1: +1.0 (a pattern, not a constant), hold, -0.1."""
  rng = np.random.default_rng(3)
  x0 = rng.normal(size=(2, HW, HW, 3)).astype(np.float32)
  pattern = np.where(rng.random((HW, HW, 3)) < 0.5, -1.0, 1.0).astype(np.float32)
  row0 = [x0[0], x0[0], x0[0] + 0.1, x0[0] + 1.1]
  row1 = [x0[1], x0[1] + pattern, x0[1] + pattern, x0[1] + pattern - 0.1]
  return jnp.asarray(np.stack([np.stack(row0), np.stack(row1)]))


EXPECTED_INDEX = [[2, 0, 1, 2], [2, 2, 0, 1]]  # first frame: the top candidate


@pytest.fixture(scope="module")
def candidates():
  clip = stepped_clip()
  pairs = [calibrated(fq_recipe(*bits), clip, period=2) for bits in FRAME_BITS]
  return tuple(m for m, _ in pairs), tuple(v for _, v in pairs), clip


def np_frame_index(clip, thresholds):
  clip = np.asarray(clip, np.float64)
  m = np.abs(np.diff(clip, axis=1)).mean(axis=(2, 3, 4))
  m = np.concatenate([np.full((clip.shape[0], 1), np.inf), m], axis=1)
  return (m[..., None] > np.asarray(thresholds)).sum(axis=-1)


def test_frame_policy_matches_numpy_reference_and_ties_stay_below():
  clip = stepped_clip()
  policy = FramePrecisionPolicy(THRESHOLDS)
  index = np.asarray(jax.jit(policy)(clip))
  np.testing.assert_array_equal(index, EXPECTED_INDEX)
  np.testing.assert_array_equal(index, np_frame_index(clip, THRESHOLDS))
  # A change of exactly a threshold is not above it: 0.25 steps are exact in float32.
  base = jnp.zeros((1, 1, 4, 4, 2), jnp.float32)
  ties = jnp.concatenate([base, base + 0.25, base + 0.75, base + 1.5, base + jnp.nan], axis=1)
  index = np.asarray(FramePrecisionPolicy((0.25, 0.5))(ties))  # changes 0.25, 0.5, 0.75, NaN
  np.testing.assert_array_equal(index, [[2, 0, 1, 2, 2]])  # NaN change: the top candidate


def test_selected_outputs_and_stats_are_the_chosen_candidates(candidates):
  models, variables, clip = candidates
  policy = FramePrecisionPolicy(THRESHOLDS)
  result, index = run_clip_frame_precision(models, variables, clip, policy)
  np.testing.assert_array_equal(np.asarray(index), EXPECTED_INDEX)
  alone = [run_clip(m, v, clip, period=1) for m, v in zip(models, variables)]
  out = np.asarray(result.outputs)
  for b in range(2):
    for t in range(4):
      k = EXPECTED_INDEX[b][t]
      np.testing.assert_array_equal(out[b, t], np.asarray(alone[k].outputs)[b, t])
      ref_stats = flatten_stats(alone[k].stats)
      for path, stats in flatten_stats(result.stats).items():
        for name, value in stats.items():
          ref = np.asarray(ref_stats[path][name])[t, b]
          np.testing.assert_array_equal(np.asarray(value)[t, b], ref)
  # The candidates differ, so the selection matters.
  assert np.abs(np.asarray(alone[0].outputs) - np.asarray(alone[2].outputs)).max() > 1e-2
  assert result.state == {}


def test_bops_count_each_frame_at_its_chosen_precision(candidates):
  models, variables, clip = candidates
  result, index = run_clip_frame_precision(
    models, variables, clip, FramePrecisionPolicy(THRESHOLDS)
  )
  costs = layer_costs(models[0], variables[0], clip[:, 0])
  macs = network_macs(costs)
  # The tiny SegNet at 32x32 (tests/test_nn_models.py sums it by hand: 100864 with 7
  # classes), here with a 1x1 classifier of 8 x 8 x 8 x 3 MACs instead of 8 x 8 x 8 x 7.
  assert macs == 100864 - 8 * 8 * 8 * 7 + 8 * 8 * 8 * 3
  bits = np.asarray([[w * a for w, a in FRAME_BITS][k] for k in np.ravel(EXPECTED_INDEX)])
  per_example = bits.reshape(2, 4).T * float(macs)  # [T, B]
  per_layer = clip_bops(result.stats, costs)
  np.testing.assert_array_equal(sum(per_layer.values()), per_example)
  for path, c in costs.items():  # and layer by layer: w * a * that layer's MACs
    np.testing.assert_array_equal(per_layer[path], bits.reshape(2, 4).T * float(c.macs))
  report = bops_report(result.stats, costs)
  np.testing.assert_array_equal(report["bops_per_frame"], per_example.mean(axis=1))


def test_runner_compiles_once_and_checks_its_arguments(candidates):
  from resq_jax.nn import frame_precision

  models, variables, clip = candidates
  policy = FramePrecisionPolicy(THRESHOLDS)
  run = functools.partial(run_clip_frame_precision, models, variables)
  run(clip, policy)
  size = frame_precision._run_frame_precision._cache_size()
  run(clip + 1.0, policy)
  assert frame_precision._run_frame_precision._cache_size() == size
  with pytest.raises(ValueError, match="one model and one variable set per candidate"):
    run_clip_frame_precision(models[:2], variables[:2], clip, policy)
  with pytest.raises(TypeError, match="floating point"):
    run(clip.astype(jnp.int32), policy)
  with pytest.raises(ValueError, match="strictly ascending"):
    FramePrecisionPolicy((0.15, 0.05))
  with pytest.raises(ValueError, match="positive"):
    FramePrecisionPolicy((0.0, 0.1))
  assert hash(FramePrecisionPolicy([0.05, 0.15])) == hash(policy)


def test_keyframe_hold_spends_no_policy_comparisons():
  """Hold decides nothing per location: its layers report 0 comparisons, while a gate spends
  one per location (its own count, not the ladder formula)."""
  from resq_jax.nn import layer_costs
  from resq_jax.nn.models import SegNet, segnet_preset
  from resq_jax.quant.recipe import hold_recipe, skip_conv_recipe

  x = jnp.zeros((1, 32, 32, 3))
  for recipe, expect_zero in ((hold_recipe(), True), (skip_conv_recipe(), False)):
    model = SegNet(3, **segnet_preset("tiny"), recipe=recipe)
    v = model.init(jax.random.key(0), x, phase="key")
    costs = layer_costs(model, v, x)
    total = sum(c.policy_comparisons for c in costs.values())
    assert (total == 0) == expect_zero
