"""Peer baselines as dynamic ResQ policies (docs/baselines.md): GatePolicy and HoldPolicy.

Oracles: a NumPy reference of the gate (bits, values, clipping) with magnitudes placed exactly on
and one float32 ulp below the threshold; the all-skip identity of the hold policy; hand-counted
comparisons; and, through the ResQ step math on an identity layer, NumPy simulations of the
two update rules: DeltaCNN (skipped changes accumulate until they cross the threshold) and
Skip-Conv (a skipped change is lost).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.quant import cost, resq
from resq_jax.quant.dynamic import (
  FixedStepPolicy,
  GatePolicy,
  HoldPolicy,
  LadderPolicy,
  decision_comparisons,
  dynamic_fake_quant,
  dynamic_residual_quantizer,
)
from resq_jax.quant.recipe import (
  LayerRecipe,
  delta_cnn_recipe,
  dynamic_recipe,
  hold_recipe,
  skip_conv_recipe,
)

F32 = np.float32


@functools.partial(jax.jit, static_argnums=0)
def _allocate_and_quantize(policy, r, unit):
  alloc = policy(r, unit)
  return alloc.bits, alloc.step, dynamic_fake_quant(r, alloc)


def run_policy(policy, r, unit):
  out = _allocate_and_quantize(policy, jnp.asarray(r, jnp.float32), jnp.asarray(unit, jnp.float32))
  return tuple(np.asarray(v) for v in out)


def np_gate(r, bits, threshold, step, unit):
  """NumPy reference: 0 bits where max_c |r| < threshold * unit, else b bits at step * unit,
  codes rounded half to even and clipped to +-(2^(b-1) - 1)."""
  r = np.asarray(r, F32)
  thr, s = F32(threshold) * F32(unit), F32(step) * F32(unit)
  m = np.abs(r).max(axis=-1)
  b = np.where(m >= thr, bits[-1], 0).astype(np.int32)
  cap = F32(2 ** (bits[-1] - 1) - 1)
  q = np.clip(np.round(r / s), -cap, cap) * s
  return b, np.where(b[..., None] > 0, q, F32(0)).astype(F32)


def residual_with_magnitudes(m):
  """``[1, N, 3]`` residual whose per-location max |r| is exactly ``m`` (float32); the other
  channels are smaller and of mixed sign."""
  m = np.asarray(m, F32)
  sign = np.where(np.arange(m.size) % 2 == 0, F32(1), F32(-1))
  r = np.stack([sign * m, -sign * F32(0.5) * m, F32(0.25) * m], axis=-1)
  return r[None]


@pytest.mark.parametrize("unit", [1.0, 0.25, 0.037, 3.0])
@pytest.mark.parametrize("threshold", [1.0, 2.5])
def test_gate_bits_follow_the_rule_at_and_around_the_threshold(unit, threshold):
  thr = F32(threshold) * F32(unit)  # the float32 product the policy computes
  below = np.nextafter(thr, F32(0))
  m = np.asarray([0.0, 0.5 * thr, below, thr, np.nextafter(thr, F32(np.inf)), 10 * thr], F32)
  r = residual_with_magnitudes(m)
  bits, step, _ = run_policy(GatePolicy((0, 8), threshold, 1.0), r, unit)
  np.testing.assert_array_equal(bits, [[0, 0, 0, 8, 8, 8]])  # a tie at the threshold updates
  np.testing.assert_array_equal(bits, np_gate(r, (0, 8), threshold, 1.0, unit)[0])
  np.testing.assert_array_equal(step, np.full((1, 6), F32(1.0) * F32(unit), F32))


@pytest.mark.parametrize("bits,step", [((0, 8), 1.0), ((0, 4), 0.5), ((0, 16), 1 / 256)])
def test_gate_values_and_clipping_match_numpy_reference(bits, step):
  """Power-of-two units and steps (so r / s is exact in NumPy and JAX alike); magnitudes up to
  far beyond the grid: updated locations clip at +-(2^(b-1) - 1) steps."""
  unit = 0.25
  rng = np.random.default_rng(bits[-1])
  s = F32(step) * F32(unit)
  cap = 2 ** (bits[-1] - 1) - 1
  scale = np.exp(rng.uniform(np.log(0.1), np.log(3 * cap), (2, 5, 6, 1))) * s
  r = (rng.uniform(-1.0, 1.0, (2, 5, 6, 4)) * scale).astype(F32)
  got_bits, _, got = run_policy(GatePolicy(bits, threshold=2.0, step=step), r, unit)
  ref_bits, ref = np_gate(r, bits, 2.0, step, unit)
  np.testing.assert_array_equal(got_bits, ref_bits)
  np.testing.assert_array_equal(got, ref)
  # The input exercises skipping, plain rounding and clipping.
  m = np.abs(r).max(axis=-1)
  assert 0 < np.count_nonzero(got_bits == 0) < got_bits.size
  assert np.count_nonzero(m > cap * s) > 0
  np.testing.assert_allclose(np.abs(got).max(axis=-1)[m > (cap + 0.5) * s], cap * s, rtol=1e-6)


def test_gate_skips_nan_locations_and_hold_skips_everything():
  r = jnp.asarray([[[np.nan, 1.0], [5.0, 0.0], [np.inf, 0.0]]], jnp.float32)
  bits, _, r_hat = run_policy(GatePolicy((0, 8), 1.0, 1.0), r, 1.0)
  np.testing.assert_array_equal(bits, [[0, 8, 8]])
  np.testing.assert_array_equal(r_hat[0, :2], [[0.0, 0.0], [5.0, 0.0]])
  hold_bits, hold_step, hold_hat = run_policy(HoldPolicy(), r, 0.5)
  np.testing.assert_array_equal(hold_bits, np.zeros((1, 3), np.int32))
  np.testing.assert_array_equal(hold_step, np.full((1, 3), 0.5, F32))
  np.testing.assert_array_equal(hold_hat, np.zeros((1, 3, 2), F32))  # no NaN passes either


def test_hold_passes_no_gradient_and_costs_nothing():
  rng = np.random.default_rng(0)
  r = jnp.asarray(rng.normal(size=(2, 4, 4, 3)).astype(F32))
  quantize = dynamic_residual_quantizer(HoldPolicy(), 0.1)
  g = jax.jit(jax.grad(lambda v: jnp.sum(quantize(v)[0] * v)))(r)
  np.testing.assert_array_equal(np.asarray(g), np.zeros(r.shape, F32))
  act_bits = np.asarray(quantize(r)[1]).reshape(2, -1).sum(axis=1)
  np.testing.assert_array_equal(cost.dynamic_bops(1000, 16, 8, act_bits), [0.0, 0.0])


def test_policy_comparisons_hand_counts():
  """Per example, N locations, C channels: the max over channels costs N * (C - 1); then a
  ladder / fixed step of k candidates N * (k - 1), a gate N, a hold nothing (it decides
  nothing, not even the max)."""
  n, c = 64, 8
  assert HoldPolicy().comparisons(n, c) == 0
  assert decision_comparisons(HoldPolicy(), n, c) == 0
  assert decision_comparisons(GatePolicy((0, 8)), n, c) == 64 * 7 + 64
  assert decision_comparisons(FixedStepPolicy((0, 2, 4, 8)), n, c) == 64 * 7 + 64 * 3
  ladder = LadderPolicy((0, 2, 8), (0.5, 1.5, 127.5))
  assert decision_comparisons(ladder, n, c) == 64 * 7 + 64 * 2
  # A user policy without the method: the ladder count over its bits.
  own = lambda r, unit: None  # noqa: E731
  own.bits = (0, 4)
  assert decision_comparisons(own, n, c) == cost.policy_comparisons(n, c, 2) == 64 * 7 + 64


@pytest.mark.parametrize(
  "kwargs",
  [
    {"bits": (0, 2, 8)},
    {"bits": (4, 8)},
    {"bits": (0,)},
    {"bits": (0, 1)},
    {"bits": (0, 17)},
    {"threshold": 0.0},
    {"threshold": -1.0},
    {"threshold": float("nan")},
    {"threshold": float("inf")},
    {"step": 0.0},
    {"step": float("nan")},
  ],
)
def test_invalid_gate_raises(kwargs):
  with pytest.raises(ValueError, match="|".join(kwargs)):
    GatePolicy(**kwargs)


def test_policies_are_hashable_values():
  assert GatePolicy([0, 8], 2.0, 0.5) == GatePolicy((0, 8), 2.0, 0.5)
  assert hash(GatePolicy([0, 8], 2.0)) == hash(GatePolicy((0, 8), 2.0))
  assert HoldPolicy() == HoldPolicy() and hash(HoldPolicy()) == hash(HoldPolicy())
  assert HoldPolicy().bits == (0,)


def test_baseline_recipes_are_the_documented_data():
  hold, skip, delta = hold_recipe(), skip_conv_recipe(0.5), delta_cnn_recipe(2.0)
  assert hold == dynamic_recipe(HoldPolicy(), (8, 8), (8, 8), "closed")
  assert skip == dynamic_recipe(GatePolicy((0, 8), 0.5, 1.0), (8, 8), (8, 8), "prev")
  assert delta == dynamic_recipe(GatePolicy((0, 16), 2.0, 1 / 258), (8, 8), (8, 8), "closed")
  # DeltaCNN's 16-bit grid at 1/258 of the 8-bit residual step spans the 8-bit range.
  assert 2**15 - 1 == 127 * 258 + 1
  for recipe in (hold, skip, delta):
    assert isinstance(recipe, LayerRecipe) and recipe.has_state
    hash(recipe)


# ---- the update rules through the ResQ step math, on an identity layer y = x -----------------


def run_layer(recipe, frames, unit):
  """``y_t`` of an identity 'layer' under ``recipe``'s residual branch (unquantized keyframe
  and weights), for frames ``[T, B, N, C]``."""
  linear = lambda x, w: x * w  # noqa: E731
  w = jnp.ones((1, 1, frames.shape[-1]), jnp.float32)
  quant_r = dynamic_residual_quantizer(recipe.policy, unit)
  ident = lambda v: v  # noqa: E731
  y, state = resq.key_forward(
    frames[0], w, None, linear=linear, quant_x=ident, quant_w=ident, ref_mode=recipe.ref_mode
  )
  ys = [y]
  for x in frames[1:]:
    y, state, _ = resq.residual_forward(
      x, w, state, linear=linear, quant_r=quant_r, quant_w=ident, ref_mode=recipe.ref_mode
    )
    ys.append(y)
  return np.stack([np.asarray(v) for v in ys])


def np_delta_cnn(frames, threshold, step):
  """DeltaCNN's rule: a location's accumulated change (current input minus what was last sent)
  is sent, quantized, once its max over channels reaches the threshold; the output sums what
  was sent."""
  frames = np.asarray(frames, F32)
  sent, out = frames[0].copy(), [frames[0].copy()]
  y = frames[0].copy()
  for x in frames[1:]:
    acc = x - sent
    fire = np.abs(acc).max(axis=-1, keepdims=True) >= threshold
    q = np.where(fire, np.clip(np.round(acc / step), -32767, 32767) * step, F32(0))
    sent, y = sent + q, y + q
    out.append(y.copy())
  return np.stack(out)


def np_skip_conv(frames, threshold):
  """Skip-Conv's rule: z_t = z_{t-1} + g_t * (x_t - x_{t-1}), g_t = [max_c |x_t - x_{t-1}| >=
  threshold] (the updates below are whole steps: their 8-bit quantization is exact)."""
  frames = np.asarray(frames, F32)
  y, out = frames[0].copy(), [frames[0].copy()]
  for prev, x in zip(frames[:-1], frames[1:]):
    d = x - prev
    y = y + np.where(np.abs(d).max(axis=-1, keepdims=True) >= threshold, d, F32(0))
    out.append(y.copy())
  return np.stack(out)


def drifting_frames():
  """``[6, 1, 3, 2]``: location 0 drifts by 0.3 units per frame (below the threshold 1 each
  time), location 1 jumps by 2 at t = 2, location 2 stays."""
  x0 = np.asarray([[[0.0, 1.0], [0.5, -0.5], [2.0, 2.0]]], F32)
  steps = np.zeros((6, 1, 3, 2), F32)
  steps[1:, 0, 0] = 0.3
  steps[2, 0, 1] = 2.0
  return x0 + np.cumsum(steps, axis=0)


def test_delta_cnn_accumulates_skipped_changes_until_they_cross_the_threshold():
  frames = drifting_frames()
  unit = 1.0
  got = run_layer(delta_cnn_recipe(threshold=1.0), jnp.asarray(frames), unit)
  ref = np_delta_cnn(frames, 1.0, F32(1 / 258))
  np.testing.assert_allclose(got, ref, atol=1e-6)
  # By hand: the drift of location 0 is held for t = 1..3 (0.3, 0.6, 0.9 < 1) and sent at
  # t = 4 (1.2), then held again (0.3 since then at t = 5). Location 1 updates at t = 2.
  drift = got[:, 0, 0, 0] - frames[0, 0, 0, 0]
  np.testing.assert_allclose(drift, [0, 0, 0, 0, 1.2, 1.2], atol=1 / 516 + 1e-6)
  np.testing.assert_allclose(got[2:, 0, 1], frames[2:, 0, 1], atol=1 / 516 + 1e-6)


def test_skip_conv_drops_skipped_changes():
  frames = drifting_frames()
  got = run_layer(skip_conv_recipe(threshold=1.0), jnp.asarray(frames), 1.0)
  np.testing.assert_allclose(got, np_skip_conv(frames, 1.0), atol=1e-6)
  # The 0.3 steps of location 0 never open the gate: its output stays at the keyframe's, so
  # the error grows to 1.5 at t = 5; the jump of location 1 is passed (8 bits at step 1: exact).
  np.testing.assert_array_equal(got[:, 0, 0], np.broadcast_to(frames[0, 0, 0], (6, 2)))
  np.testing.assert_array_equal(got[2:, 0, 1], frames[2:, 0, 1])


def test_hold_returns_the_keyframe_output_on_every_frame():
  frames = drifting_frames()
  got = run_layer(hold_recipe(), jnp.asarray(frames), 1.0)
  np.testing.assert_array_equal(got, np.broadcast_to(frames[0], frames.shape))
