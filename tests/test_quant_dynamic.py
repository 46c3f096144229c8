"""Dynamic ResQ (docs/design.md section 3): per-location bit policies and quantizer.

Oracles: hand-built magnitudes on each side of every threshold / rounding boundary, a NumPy
reference of the per-location quantizer, the identity with the uniform narrow signed quantizer,
the identity "all locations at b bits costs exactly the static step", hand-computed STE masks and
the closed-loop DPCM error bound |x - ref| <= s / 2.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.quant import cost
from resq_jax.quant.dynamic import (
  BitAllocation,
  FixedStepPolicy,
  LadderPolicy,
  dynamic_fake_quant,
  dynamic_residual_quantizer,
  level_capacity,
  location_magnitude,
)
from resq_jax.quant.spec import QuantSpec
from resq_jax.quant.uniform import fake_quant

F32 = np.float32


# One compiled program per (policy, shape) instead of many eager op compiles; `unit` is traced.
@functools.partial(jax.jit, static_argnums=0)
def _allocate(policy, r, unit):
  return policy(r, unit)


def allocate(policy, r, unit):
  return _allocate(policy, jnp.asarray(r), jnp.asarray(unit, jnp.float32))


quant = jax.jit(dynamic_fake_quant)


@jax.jit
def quant_grad(r, alloc, cotangent):
  """d/dr of sum(cotangent * dynamic_fake_quant(r, alloc))."""
  return jax.grad(lambda v: jnp.sum(cotangent * dynamic_fake_quant(v, alloc)))(r)


def _np_dynamic_fake_quant(r, bits, step):
  """NumPy reference: round half even of r / step, clip to +-(2^(b-1)-1), times step; 0 at b = 0."""
  r = np.asarray(r, F32)
  bits = np.asarray(bits)[..., None]
  step = np.asarray(step, F32)[..., None]
  cap = np.where(bits > 0, 2.0 ** (np.maximum(bits, 1) - 1) - 1, 0).astype(F32)
  q = np.clip(np.round(r / step), -cap, cap) * step
  return np.where(bits > 0, q, F32(0)).astype(F32)


def _residual_with_magnitudes(m, scale):
  """``[1, H, W, 2]`` residual whose per-location max |r| is exactly ``m * scale`` (float32).

  Channel 0 holds +-m*scale (the sign alternates), channel 1 a smaller value of the other sign,
  so that the max over channels of |r| is the hand-chosen magnitude.
  """
  m = np.asarray(m, F32)
  mag = m * F32(scale)  # same float32 product as the policies compute for tau * unit
  sign = np.where(np.arange(m.size).reshape(m.shape) % 2 == 0, F32(1), F32(-1))
  r = np.stack([sign * mag, -sign * F32(0.5) * mag], axis=-1)
  return jnp.asarray(r[None]), mag


# ----------------------------------------------------------------------------------------------
# helpers


def test_level_capacity_and_location_magnitude_hand_values():
  np.testing.assert_array_equal(
    np.asarray(level_capacity(jnp.asarray([0, 2, 3, 4, 8, 16]))), [0, 1, 3, 7, 127, 32767]
  )
  r = jnp.asarray([[[1.0, -3.0], [0.0, 0.0], [-2.5, 2.0]]], jnp.float32)  # [1, 3, 2]
  np.testing.assert_array_equal(np.asarray(location_magnitude(r)), [[3.0, 0.0, 2.5]])


# ----------------------------------------------------------------------------------------------
# all-zero residual


@pytest.mark.parametrize(
  "policy",
  [
    LadderPolicy(bits=(0, 2, 4, 8), thresholds=(0.5, 1.5, 7.5, 127.5)),
    FixedStepPolicy(bits=(0, 2, 4, 8), step=1.0),
  ],
  ids=["ladder", "fixed"],
)
@pytest.mark.parametrize("unit", [1.0, 0.03])
def test_zero_residual_is_skipped_everywhere_and_costs_nothing(policy, unit):
  r = jnp.zeros((3, 4, 5, 6), jnp.float32)
  alloc = allocate(policy, r, unit)
  np.testing.assert_array_equal(np.asarray(alloc.bits), np.zeros((3, 4, 5), np.int32))
  assert alloc.bits.dtype == jnp.int32
  r_hat = quant(r, alloc)
  np.testing.assert_array_equal(np.asarray(r_hat), np.zeros(r.shape, F32))
  act_bits = np.asarray(alloc.bits).reshape(3, -1).sum(axis=1)
  macs = cost.conv_macs((4, 5), (3, 3), 6, 8)
  bops = cost.dynamic_bops(macs, 4 * 5, 4, act_bits)
  np.testing.assert_array_equal(bops, np.zeros(3))
  # No gradient flows through skipped locations either.
  g = quant_grad(r, alloc, jnp.ones_like(r))
  np.testing.assert_array_equal(np.asarray(g), np.zeros(r.shape, F32))


def test_zero_residual_without_skip_candidate_gets_the_smallest_bits_and_stays_zero():
  r = jnp.zeros((3, 4, 5, 6), jnp.float32)
  for policy in (LadderPolicy(bits=(2, 4), thresholds=(1.5, 7.5)), FixedStepPolicy(bits=(2, 4))):
    alloc = allocate(policy, r, 1.0)
    np.testing.assert_array_equal(np.asarray(alloc.bits), np.full((3, 4, 5), 2, np.int32))
    np.testing.assert_array_equal(np.asarray(quant(r, alloc)), np.zeros(r.shape, F32))


# ----------------------------------------------------------------------------------------------
# ladder rule


@pytest.mark.parametrize("unit", [1.0, 0.25, 0.1, 3.0])
def test_ladder_bits_and_steps_follow_the_rule(unit):
  bits, thresholds = (0, 2, 4, 8), (0.5, 1.5, 7.5, 127.5)
  policy = LadderPolicy(bits=bits, thresholds=thresholds)
  # Magnitudes in units of `unit`: below, equal to (m <= tau -> that rung) and above each
  # threshold, and above the top threshold (-> top bits, clipping).
  m = np.asarray([[0.25, 0.5, 0.75, 1.5, 2.0], [7.5, 8.0, 127.5, 128.0, 1000.0]], F32)
  expected_bits = np.asarray([[0, 0, 2, 2, 4], [4, 8, 8, 8, 8]], np.int32)
  r, _ = _residual_with_magnitudes(m, unit)
  alloc = allocate(policy, r, unit)
  np.testing.assert_array_equal(np.asarray(alloc.bits), expected_bits[None])
  # Step of rung b: tau_b * unit / (2^(b-1) - 1), so that the rung's range is not clipped.
  tau = {b: F32(t) * F32(unit) for b, t in zip(bits, thresholds)}
  cap = {2: 1, 4: 7, 8: 127}
  step = np.asarray(alloc.step)[0]
  for (i, j), b in np.ndenumerate(expected_bits):
    if b > 0:
      np.testing.assert_allclose(step[i, j], tau[b] / F32(cap[b]), rtol=1e-6)
  # A Python float unit (closed over, not traced) gives the same.
  if unit == 0.25:
    bits_static = jax.jit(lambda v: policy(v, unit).bits)(r)
    np.testing.assert_array_equal(np.asarray(bits_static), expected_bits[None])


def test_ladder_range_is_not_clipped_below_the_top_threshold():
  """A location with m <= tau_top is reproduced within half its step (no clipping); above the
  top threshold the top rung clips at +-tau_top; skipped locations lose at most tau_0."""
  policy = LadderPolicy(bits=(0, 2, 4, 8), thresholds=(0.5, 1.5, 7.5, 127.5))
  unit = 0.5
  rng = np.random.default_rng(1)
  # Per-location magnitudes log-uniform over 0.05 .. 200 (in units of `unit`).
  mag = 10.0 ** rng.uniform(-1.3, 2.3, (2, 6, 6, 1))
  r = jnp.asarray((rng.uniform(-1.0, 1.0, (2, 6, 6, 4)) * mag * unit).astype(F32))
  alloc = allocate(policy, r, unit)
  r_hat = np.asarray(quant(r, alloc))
  r = np.asarray(r)
  m = np.abs(r).max(axis=-1)
  bits, step = np.asarray(alloc.bits), np.asarray(alloc.step)
  err = np.abs(r_hat - r).max(axis=-1)
  unclipped = (bits > 0) & (m <= 127.5 * unit)
  assert np.all(err[unclipped] <= step[unclipped] / 2 * (1 + 1e-5))
  clipped = m > 127.5 * unit
  np.testing.assert_allclose(np.abs(r_hat).max(axis=-1)[clipped], 127.5 * unit, rtol=1e-6)
  assert np.all(err[bits == 0] <= 0.5 * unit)
  np.testing.assert_array_equal(r_hat[bits == 0], 0.0)
  for b in (0, 2, 4, 8):  # the input exercises every rung, and the clipping branch
    assert np.count_nonzero(bits == b) > 0, b
  assert np.count_nonzero(clipped) > 0


# ----------------------------------------------------------------------------------------------
# fixed-step rule


@pytest.mark.parametrize("step,unit", [(1.0, 1.0), (0.5, 0.25), (3.0, 0.5)])
def test_fixed_step_bits_follow_the_rule(step, unit):
  policy = FixedStepPolicy(bits=(0, 2, 4, 8), step=step)
  s = F32(step) * F32(unit)
  # m / s and the expected bits: round(m / s) (half to even) = 0 -> 0 bits, 1 -> 2,
  # 2..7 -> 4, 8..127 -> 8, > 127 -> 8 (clips).
  m = np.asarray(
    [
      [0.0, 0.49, 0.5, 0.51, 1.49],
      [1.5, 2.5, 7.49, 7.5, 100.0],
      [127.4, 127.5, 128.0, 1000.0, 1.0],
    ],
    F32,
  )
  expected = np.asarray([[0, 0, 0, 2, 2], [4, 4, 4, 8, 8], [8, 8, 8, 8, 2]], np.int32)
  r, _ = _residual_with_magnitudes(m, s)
  alloc = allocate(policy, r, unit)
  np.testing.assert_array_equal(np.asarray(alloc.bits), expected[None])
  np.testing.assert_array_equal(np.asarray(alloc.step), np.full((1, 3, 5), s, F32))


def test_fixed_step_uses_a_three_bit_candidate_when_present():
  m = np.asarray([[1.0, 2.0, 3.0, 3.49, 3.5, 7.0]], F32)  # round: 1, 2, 3, 3, 4, 7
  r, _ = _residual_with_magnitudes(m, 1.0)
  with_three = allocate(FixedStepPolicy(bits=(0, 2, 3, 4, 8)), r, 1.0)
  np.testing.assert_array_equal(np.asarray(with_three.bits), [[[2, 3, 3, 3, 4, 4]]])
  without_three = allocate(FixedStepPolicy(bits=(0, 2, 4, 8)), r, 1.0)
  np.testing.assert_array_equal(np.asarray(without_three.bits), [[[2, 4, 4, 4, 4, 4]]])


def test_fixed_step_without_clipping_equals_uniform_quantization_at_step_s():
  """'Fewest bits that hold round(m / s)': skipping / narrowing loses nothing against 16 bits."""
  policy = FixedStepPolicy(bits=(0, 2, 3, 4, 8, 16), step=0.5)
  unit = 0.2
  rng = np.random.default_rng(2)
  r = jnp.asarray(
    (rng.normal(0.0, 1.0, (2, 5, 5, 3)) * np.exp(2.0 * rng.normal(0.0, 1.0, (2, 5, 5, 1)))).astype(
      F32
    )
  )
  alloc = allocate(policy, r, unit)
  s = F32(0.5) * F32(unit)
  expected = np.round(np.asarray(r) / s) * s
  np.testing.assert_array_equal(np.asarray(quant(r, alloc)), expected)
  assert len(np.unique(np.asarray(alloc.bits))) >= 4  # the input exercises several rungs


# ----------------------------------------------------------------------------------------------
# the per-location quantizer


def test_dynamic_fake_quant_matches_numpy_reference():
  rng = np.random.default_rng(0)
  shape = (2, 3, 4, 5)
  bits = rng.choice([0, 2, 3, 4, 8, 16], size=shape[:-1]).astype(np.int32)
  step = (2.0 ** rng.integers(-6, 2, size=shape[:-1])).astype(F32)  # powers of two: exact ties
  levels = rng.normal(0.0, 1.0, shape) * np.exp(rng.normal(0.0, 2.0, shape[:-1] + (1,)))
  r = (levels * step[..., None]).astype(F32)
  r[0, 0, 0] = np.asarray([0.5, 1.5, 2.5, -0.5, -1.5]) * step[0, 0, 0]  # ties -> even
  bits[0, 0, 0] = 4
  got = quant(jnp.asarray(r), BitAllocation(jnp.asarray(bits), jnp.asarray(step)))
  expected = _np_dynamic_fake_quant(r, bits, step)
  np.testing.assert_array_equal(np.asarray(got), expected)
  np.testing.assert_array_equal(np.asarray(got)[0, 0, 0] / step[0, 0, 0], [0, 2, 2, 0, -2])


def test_dynamic_fake_quant_random_steps_match_numpy_reference():
  rng = np.random.default_rng(4)
  r = jnp.asarray(3.0 * rng.normal(0.0, 1.0, (4, 6, 3)).astype(F32))
  step = jnp.asarray(rng.uniform(0.05, 0.6, (4, 6)).astype(F32))
  bits = jnp.asarray(rng.choice([0, 2, 4, 8], (4, 6)).astype(np.int32))
  got = np.asarray(quant(r, BitAllocation(bits, step)))
  expected = _np_dynamic_fake_quant(np.asarray(r), np.asarray(bits), np.asarray(step))
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@functools.partial(jax.jit, static_argnums=2)
def _both_quantizers(r, s, b):
  """Values and input gradients of the dynamic quantizer with a uniform b-bit map and of the
  uniform narrow signed symmetric quantizer, same scalar step."""
  spec = QuantSpec(bits=b, signed=True, symmetric=True, narrow_range=True)
  alloc = BitAllocation(jnp.full(r.shape[:-1], b, jnp.int32), jnp.full(r.shape[:-1], s))
  dyn = lambda v: dynamic_fake_quant(v, alloc)
  uni = lambda v: fake_quant(v, s, spec=spec)
  grad = lambda f: jax.grad(lambda v: jnp.sum(f(v)))(r)
  return dyn(r), uni(r), grad(dyn), grad(uni)


@pytest.mark.parametrize("b", [2, 3, 4, 8, 16])
def test_uniform_bit_map_equals_uniform_narrow_signed_fake_quant(b):
  r = jnp.asarray(2.0 * np.random.default_rng(b).normal(0.0, 1.0, (3, 4, 5, 6)).astype(F32))
  s = jnp.asarray(0.37 if b < 8 else 0.01, jnp.float32)
  got, expected, g_dyn, g_uni = _both_quantizers(r, s, b)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
  # Same straight-through mask as the uniform quantizer.
  np.testing.assert_array_equal(np.asarray(g_dyn), np.asarray(g_uni))
  if b <= 4:  # the input reaches outside the range: the mask is not all ones
    assert 0 < np.count_nonzero(np.asarray(g_dyn)) < r.size


def test_ste_gradient_is_one_inside_zero_outside_and_at_skipped_locations():
  # Three locations: (2 bits, step 1) codes +-1; (4 bits, step 0.5) codes +-7; skipped. The
  # mask is on the rounded code (PyTorch's convention): 1.2 -> 1 and 3.6 / 0.5 = 7.2 -> 7 are
  # inside, -1.6 -> -2 and -3.8 / 0.5 = -7.6 -> -8 outside.
  bits = jnp.asarray([[2, 4, 0]], jnp.int32)
  step = jnp.asarray([[1.0, 0.5, 2.0]], jnp.float32)
  r = jnp.asarray(
    [[[0.3, 1.0, 1.2, -1.0, -1.6], [3.4, 3.5, 3.6, -3.5, -3.8], [0.1, 0.0, 5.0, -9.0, 2.0]]],
    jnp.float32,
  )
  expected = np.asarray([[[1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]]], F32)
  # A non-uniform cotangent checks that the gradient is a mask times the cotangent.
  w = jnp.arange(1.0, 16.0, dtype=jnp.float32).reshape(1, 3, 5)
  g = quant_grad(r, BitAllocation(bits, step), w)
  np.testing.assert_array_equal(np.asarray(g), expected * np.asarray(w))
  # The forward values at those points (hand-computed).
  np.testing.assert_array_equal(
    np.asarray(quant(r, BitAllocation(bits, step))),
    [[[0.0, 1.0, 1.0, -1.0, -1.0], [3.5, 3.5, 3.5, -3.5, -3.5], [0, 0, 0, 0, 0]]],
  )


def test_bound_quantizer_gradient_passes_only_at_kept_locations():
  """Through dynamic_residual_quantizer the policy is not differentiated: d r_hat / d r is 1 at
  locations that got bits (16 bits never clip here) and 0 at skipped ones."""
  policy = FixedStepPolicy(bits=(0, 2, 4, 8, 16), step=1.0)
  quantize = dynamic_residual_quantizer(policy, 0.1)
  r = jnp.asarray([[[0.01, -0.02], [0.3, 0.0], [-50.0, 2.0], [0.049, 0.04]]], jnp.float32)
  r_hat, bits = jax.jit(quantize)(r)
  np.testing.assert_array_equal(np.asarray(bits), [[0, 4, 16, 0]])
  g = jax.jit(jax.grad(lambda v: jnp.sum(quantize(v)[0])))(r)
  np.testing.assert_array_equal(np.asarray(g), [[[0, 0], [1, 1], [1, 1], [0, 0]]])
  np.testing.assert_allclose(
    np.asarray(r_hat), [[[0, 0], [0.3, 0], [-50.0, 2.0], [0, 0]]], rtol=1e-6
  )


# ----------------------------------------------------------------------------------------------
# cost identity and closed loop


@pytest.mark.parametrize(
  "in_hw,kernel,c_in,c_out,strides,padding,groups",
  [
    ((8, 8), (3, 3), 4, 8, (1, 1), "SAME", 1),
    ((5, 5), (3, 3), 3, 7, (2, 2), "SAME", 1),
    ((7, 9), (3, 3), 6, 4, (2, 2), "VALID", 2),
    ((9, 6), (5, 3), 5, 5, (2, 1), ((2, 2), (1, 1)), 5),
  ],
)
def test_all_locations_at_b_bits_cost_exactly_the_static_step(
  in_hw, kernel, c_in, c_out, strides, padding, groups
):
  macs = cost.conv_macs(in_hw, kernel, c_in, c_out, strides, padding, groups)
  n = in_hw[0] * in_hw[1]
  if strides != (1, 1):
    assert macs % n != 0  # MACs / N is not an integer here
  for b in (2, 3, 4, 8, 16):
    for w_bits in (2, 4, 8):
      assert cost.dynamic_bops(macs, n, w_bits, n * b) == cost.step_bops(macs, w_bits, b)


@pytest.mark.parametrize("b", [2, 4, 8])
def test_policy_bit_map_with_one_candidate_costs_the_static_step(b):
  """Through a real bit map: a policy whose only candidate is b gives every location b bits."""
  in_hw, c_in = (5, 5), 3
  macs = cost.conv_macs(in_hw, (3, 3), c_in, 7, (2, 2), "SAME")
  r = np.random.default_rng(0).normal(0.0, 1.0, (3, *in_hw, c_in)).astype(F32)
  bit_map = np.asarray(allocate(FixedStepPolicy(bits=(b,), step=1.0), r, 1.0).bits)
  act_bits = bit_map.reshape(3, -1).sum(axis=1)
  np.testing.assert_array_equal(
    cost.dynamic_bops(macs, 25, 4, act_bits), np.full(3, cost.step_bops(macs, 4, b), np.float64)
  )


def test_mixed_bit_map_costs_hand_value():
  bits = np.asarray([[0, 2], [4, 8]])  # one example, 4 locations, sum 14
  macs = 1000
  assert cost.dynamic_bops(macs, 4, 4, bits.sum()) == 4 * 1000 * 14 / 4


def test_closed_loop_with_policy_keeps_error_within_half_a_step():
  t_steps, shape = 40, (2, 5, 5, 3)
  unit = 0.05
  s = F32(1.0) * F32(unit)
  policy = FixedStepPolicy(bits=(0, 2, 4, 8, 16), step=1.0)
  rng = np.random.default_rng(7)
  # Sparse random walk: each location moves (all channels) with probability 0.3, by a
  # heavy-tailed amount (occasionally a jump of tens), otherwise stays put.
  moves = rng.normal(0.0, 0.2, (t_steps,) + shape) * np.exp(
    rng.normal(0.0, 1.5, (t_steps,) + shape[:-1] + (1,))
  )
  moving = rng.random((t_steps,) + shape[:-1] + (1,)) < 0.3
  x_all = np.cumsum(np.where(moving, moves, 0.0), axis=0).astype(F32)
  assert np.abs(x_all).max() < 1000.0  # 16 bits at step 0.05 hold +-1638: no clipping

  @jax.jit
  def step_fn(x, ref):
    r = x - ref
    alloc = policy(r, unit)
    rh = dynamic_fake_quant(r, alloc)
    return ref + rh, rh, alloc.bits

  ref = jnp.zeros(shape, jnp.float32)
  seen_bits = set()
  for t in range(t_steps):
    r_np = x_all[t] - np.asarray(ref)
    ref, rh, bits = step_fn(jnp.asarray(x_all[t]), ref)
    # Without clipping, the allocation reproduces plain rounding at step s (NumPy oracle).
    np.testing.assert_allclose(np.asarray(rh), np.round(r_np / s) * s, rtol=0, atol=1e-5)
    err = np.abs(x_all[t] - np.asarray(ref))
    assert err.max() <= s / 2 + 1e-4, (t, err.max())
    seen_bits.update(np.unique(np.asarray(bits)).tolist())
  assert {0, 16} <= seen_bits and len(seen_bits) >= 4  # skipping and several widths were used


# ----------------------------------------------------------------------------------------------
# validation and hashability


BAD_BITS = [(1, 2), (-2, 2), (0, 17), (4, 2), (2, 2), (0, 2, 2), (), (0, 2.0), (True, 2)]


@pytest.mark.parametrize("bits", BAD_BITS)
def test_invalid_candidate_bits_raise(bits):
  with pytest.raises(ValueError, match="bits"):
    LadderPolicy(bits=bits, thresholds=tuple(float(i + 1) for i in range(len(bits))))
  with pytest.raises(ValueError, match="bits"):
    FixedStepPolicy(bits=bits, step=1.0)


@pytest.mark.parametrize(
  "thresholds",
  [
    (1.0, 2.0),
    (1.0, 2.0, 3.0, 4.0),  # wrong count for three candidates
    (0.0, 1.0, 2.0),
    (-1.0, 1.0, 2.0),  # non-positive
    (1.0, 3.0, 2.0),
    (1.0, 1.0, 2.0),  # not strictly ascending
    (1.0, float("nan"), 2.0),
  ],
)
def test_invalid_ladder_thresholds_raise(thresholds):
  with pytest.raises(ValueError, match="thresholds"):
    LadderPolicy(bits=(0, 2, 4), thresholds=thresholds)


@pytest.mark.parametrize("step", [0.0, -1.0, float("nan")])
def test_non_positive_fixed_step_raises(step):
  with pytest.raises(ValueError, match="step"):
    FixedStepPolicy(bits=(0, 2, 4), step=step)


def test_policies_are_hashable_and_equal_by_value():
  """Policies are static arguments of jitted code: lists are normalised to tuples."""
  a = LadderPolicy(bits=[0, 2, 4], thresholds=[0.5, 1.5, 7.5])
  b = LadderPolicy(bits=(0, 2, 4), thresholds=(0.5, 1.5, 7.5))
  assert a == b and hash(a) == hash(b)
  assert FixedStepPolicy(bits=[0, 2], step=0.5) == FixedStepPolicy(bits=(0, 2), step=0.5)
  assert hash(FixedStepPolicy(bits=[0, 2], step=0.5)) == hash(FixedStepPolicy((0, 2), 0.5))
