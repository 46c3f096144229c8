"""Dynamic ResQ: per-location bit-widths for residuals (docs/design.md section 3).

A policy is a pure function ``(r, unit) -> BitAllocation`` where ``r`` is a residual
``[B, ..., C]`` (channels last; every other non-batch axis is a spatial location) and ``unit`` is
a positive scalar that the policy's thresholds / step are expressed in (layers pass their residual
activation step, so that one policy fits layers of any activation magnitude; pass 1.0 for absolute
values). Bit-width 0 means skip: that location's residual is dropped.

Grids are signed, symmetric and narrow: b bits hold the integers ``[-(2^(b-1)-1), 2^(b-1)-1]``,
so a candidate bit-width must be 0 or at least 2.

Policies: :class:`LadderPolicy` (magnitude thresholds per candidate), :class:`FixedStepPolicy`
(one step, the fewest bits that hold it), :class:`GatePolicy` (skip below a threshold, else one
bit-width) and :class:`HoldPolicy` (skip everything). Each also says what it costs to decide:
``policy.comparisons(n_locations, channels)`` (:func:`decision_comparisons`).

Peer baselines are recipes over the same layers (docs/baselines.md; constructors in
``resq_jax.quant.recipe``), not separate code paths:

- keyframe hold (no computation between keyframes): mode 'dynamic', ref_mode 'closed',
  :class:`HoldPolicy`. Every residual is skipped, so each layer returns its keyframe output;
  residual frames cost 0 BOPs and 0 comparisons.
- Skip-Conv-style gating (Habibian et al. 2021, ``z_t = z_{t-1} + W * (g_t . (x_t - x_{t-1}))``):
  mode 'dynamic', ref_mode 'prev' (the reference is the previous float input, the output is
  accumulated), ``GatePolicy(bits=(0, 8))`` with an 8-bit residual grid (residual bits (8, 8)):
  key precision where the gate opens; a skipped change is lost (the reference moves anyway).
- DeltaCNN-style thresholded updates (Parger et al. 2022: skipped deltas accumulate until they
  exceed the threshold; updates at full precision): mode 'dynamic', ref_mode 'closed' (the
  reference only moves where an update fired, so skipped changes accumulate),
  ``GatePolicy(bits=(0, 16), step=1/258)`` with residual bits (8, 8): 16-bit residual activations
  covering the range of the 8-bit residual grid (``2^15 - 1 = 32767`` steps of 1/258 reach
  127.004 steps of that grid, which ends at 127), 8-bit weights.
- VideoIQ-style per-frame precision: not a per-location policy but a per-frame choice among FQ
  recipes of the same network (``resq_jax.nn.frame_precision``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from resq_jax.quant.cost import policy_comparisons
from resq_jax.quant.spec import MAX_BITS
from resq_jax.quant.uniform import scale_floor

Array = jax.Array


class BitAllocation(NamedTuple):
  """Per-location bit-widths and quantization steps, both ``[B, ...]`` (r without channels)."""

  bits: Array  # int32
  step: Array  # float, same dtype as r


def _check_candidates(bits: tuple[int, ...]) -> None:
  if not bits:
    raise ValueError("bits (the candidate set) must not be empty")
  for b in bits:
    if isinstance(b, bool) or not isinstance(b, int) or not (b == 0 or 2 <= b <= MAX_BITS):
      raise ValueError(
        f"every candidate bit-width must be 0 (skip) or in [2, {MAX_BITS}], got bits={bits}"
      )
  if list(bits) != sorted(set(bits)):
    raise ValueError(f"candidate bits must be strictly ascending, got bits={bits}")


def level_capacity(bits: Array) -> Array:
  """Largest integer level of a narrow signed b-bit grid: ``2^(b-1) - 1``, and 0 for b = 0."""
  bits = jnp.asarray(bits, jnp.int32)
  return jnp.where(bits > 0, jnp.left_shift(1, jnp.maximum(bits - 1, 0)) - 1, 0)


def location_magnitude(r: Array) -> Array:
  """``m_p = max_c |r[p, c]|``: ``[B, ..., C] -> [B, ...]``."""
  return jnp.max(jnp.abs(r), axis=-1)


def _pick(index: Array, table: tuple) -> Array:
  return jnp.asarray(table, jnp.int32)[index]


def _scalar_unit(unit, dtype) -> Array:
  """``unit`` as a scalar of ``dtype`` (a shape-(1,) scale is accepted too)."""
  return jnp.reshape(jnp.asarray(unit, dtype), ())


def _count_above(values: Array, table: Array) -> Array:
  """Number of entries of the 1-D ``table`` strictly below each of ``values`` [B, ...].

  The table is reshaped to ``[1, ..., 1, K]`` explicitly so that the comparison also works
  under ``jax_numpy_rank_promotion='raise'``.
  """
  table = jnp.reshape(table, (1,) * values.ndim + (-1,))
  return jnp.sum((values[..., None] > table).astype(jnp.int32), axis=-1)


def _check_positive_ascending(name: str, values: tuple) -> None:
  # ``not v > 0`` also rejects NaN (for which ``v <= 0`` is False).
  if any(not v > 0 for v in values) or any(not a < b for a, b in zip(values, values[1:])):
    raise ValueError(f"{name} must be positive and strictly ascending, got {name}={values}")


@dataclasses.dataclass(frozen=True)
class LadderPolicy:
  """Threshold ladder: ``b_p = min{b in bits : m_p <= tau_b}`` (the largest b if none).

  ``thresholds[i]`` (in units of ``unit``) is the range that ``bits[i]`` covers, so a location
  that gets ``bits[i]`` is quantized with step ``tau_i / (2^(b_i-1) - 1)`` without clipping; the
  top candidate clips at its threshold.
  """

  bits: tuple[int, ...] = (0, 2, 4, 8)
  thresholds: tuple[float, ...] = (0.5, 1.5, 7.5, 127.5)

  def __post_init__(self):
    # Tuples keep the policy hashable (it is a static argument of jitted code).
    object.__setattr__(self, "bits", tuple(self.bits))
    object.__setattr__(self, "thresholds", tuple(self.thresholds))
    _check_candidates(self.bits)
    if len(self.thresholds) != len(self.bits):
      raise ValueError(
        f"thresholds needs one entry per candidate bit-width: got "
        f"thresholds={self.thresholds} for bits={self.bits}"
      )
    _check_positive_ascending("thresholds", self.thresholds)

  def __call__(self, r: Array, unit: Array | float = 1.0) -> BitAllocation:
    m = location_magnitude(r)
    tau = jnp.asarray(self.thresholds, r.dtype) * _scalar_unit(unit, r.dtype)
    index = jnp.minimum(_count_above(m, tau), len(self.bits) - 1)
    capacity = level_capacity(jnp.asarray(self.bits))
    steps = tau / jnp.maximum(capacity, 1).astype(r.dtype)
    return BitAllocation(bits=_pick(index, self.bits), step=steps[index])

  def comparisons(self, n_locations: int, channels: int) -> int:
    """The max over channels, then the ladder's thresholds (per example)."""
    return policy_comparisons(n_locations, channels, len(self.bits))


@dataclasses.dataclass(frozen=True)
class FixedStepPolicy:
  """One residual step ``s = step * unit`` everywhere; ``b_p`` is the fewest candidate bits whose
  grid holds ``round(m_p / s)`` without clipping (0 when ``m_p < s / 2``); the largest candidate
  (clipping) if none does."""

  bits: tuple[int, ...] = (0, 2, 4, 8)
  step: float = 1.0

  def __post_init__(self):
    object.__setattr__(self, "bits", tuple(self.bits))
    _check_candidates(self.bits)
    if not self.step > 0:
      raise ValueError(f"step must be positive, got step={self.step}")

  def __call__(self, r: Array, unit: Array | float = 1.0) -> BitAllocation:
    m = location_magnitude(r)
    s = jnp.asarray(self.step, r.dtype) * _scalar_unit(unit, r.dtype)
    level = jnp.round(m / s)
    capacity = level_capacity(jnp.asarray(self.bits)).astype(r.dtype)
    index = jnp.minimum(_count_above(level, capacity), len(self.bits) - 1)
    return BitAllocation(bits=_pick(index, self.bits), step=jnp.broadcast_to(s, m.shape))

  def comparisons(self, n_locations: int, channels: int) -> int:
    """The max over channels, then the capacities of the candidates (per example)."""
    return policy_comparisons(n_locations, channels, len(self.bits))


@dataclasses.dataclass(frozen=True)
class GatePolicy:
  """A gate: location p is skipped (0 bits) when ``m_p < threshold * unit``, else quantized with
  ``bits[-1]`` bits at step ``step * unit`` (clipping at the grid's capacity ``2^(b-1) - 1``
  steps, like the top candidate of the other policies).

  ``bits`` must be ``(0, b)``. A location whose magnitude is NaN is skipped (the comparison is
  false), as under the other policies. ``step=1.0`` keeps the layer's residual resolution;
  ``bits=(0, 16), step=1/258`` holds the 8-bit residual range at 16 bits (DeltaCNN-style).
  """

  bits: tuple[int, ...] = (0, 8)
  threshold: float = 1.0
  step: float = 1.0

  def __post_init__(self):
    object.__setattr__(self, "bits", tuple(self.bits))
    _check_candidates(self.bits)
    if len(self.bits) != 2 or self.bits[0] != 0:
      raise ValueError(f"a gate's bits must be (0, b) with b in [2, {MAX_BITS}], got {self.bits}")
    for name in ("threshold", "step"):
      value = getattr(self, name)
      # ``not v > 0`` also rejects NaN; inf would skip (threshold) or zero (step) everything.
      if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {name}={value}")

  def __call__(self, r: Array, unit: Array | float = 1.0) -> BitAllocation:
    m = location_magnitude(r)
    u = _scalar_unit(unit, r.dtype)
    threshold = jnp.asarray(self.threshold, r.dtype) * u
    s = jnp.asarray(self.step, r.dtype) * u
    bits = jnp.where(m >= threshold, jnp.int32(self.bits[-1]), jnp.int32(0))
    return BitAllocation(bits=bits, step=jnp.broadcast_to(s, m.shape))

  def comparisons(self, n_locations: int, channels: int) -> int:
    """The max over channels, then one comparison with the threshold (per example)."""
    return policy_comparisons(n_locations, channels, len(self.bits))


@dataclasses.dataclass(frozen=True)
class HoldPolicy:
  """Skip every location: under ref_mode 'closed' each layer returns its keyframe output on
  every residual frame ("keyframe hold": nothing is computed between keyframes, 0 BOPs and 0
  comparisons). The step returned is ``unit`` (unused: nothing is quantized)."""

  bits: tuple[int, ...] = dataclasses.field(default=(0,), init=False)

  def __call__(self, r: Array, unit: Array | float = 1.0) -> BitAllocation:
    shape = r.shape[:-1]
    step = jnp.broadcast_to(_scalar_unit(unit, r.dtype), shape)
    return BitAllocation(bits=jnp.zeros(shape, jnp.int32), step=step)

  def comparisons(self, n_locations: int, channels: int) -> int:
    """Nothing is decided: 0."""
    return 0


def decision_comparisons(policy, n_locations: int, channels: int) -> int:
  """Comparisons ``policy`` spends per example of a residual frame: its own ``comparisons``
  method when it has one, else the ladder count of :func:`~resq_jax.quant.cost.policy_comparisons`
  over its ``bits`` (for user policies written before the method existed)."""
  own = getattr(policy, "comparisons", None)
  if callable(own):
    return int(own(n_locations, channels))
  return policy_comparisons(n_locations, channels, len(getattr(policy, "bits", ())))


def dynamic_fake_quant(r: Array, alloc: BitAllocation) -> Array:
  """Quantize each location of ``r [B, ..., C]`` on its own narrow signed grid.

  Location p uses step ``alloc.step[p]`` and ``alloc.bits[p]`` bits; 0 bits gives 0. The
  gradient wrt r is the straight-through estimator of docs/design.md section 2: 1 where the rounded
  code ``|round(r * (1 / step))| <= 2^(b-1) - 1`` (the location's range, as in
  ``resq_jax.quant.uniform``), 0 outside and at skipped locations; the allocation itself is not
  differentiated.
  """
  step = jax.lax.stop_gradient(alloc.step).astype(r.dtype)
  step = jnp.maximum(step, jnp.asarray(scale_floor(r.dtype), r.dtype))[..., None]
  cap = level_capacity(alloc.bits).astype(r.dtype)[..., None]
  keep = (alloc.bits > 0)[..., None]
  r_const = jax.lax.stop_gradient(r)
  code = jnp.round(r_const * (1 / step))  # the uniform quantizer's formulation, bit for bit
  q = jnp.where(keep, jnp.clip(code, -cap, cap) * step, jnp.zeros_like(r))
  # The STE mask is explicit: clipping a straight-through rounded value would pass a gradient
  # of 1/2 wherever round(v) lands on +-cap (ties of max/min), also just outside the range.
  inside = keep & (code >= -cap) & (code <= cap)
  return q + jnp.where(inside, r - r_const, jnp.zeros_like(r))  # r - r_const == 0 forward


def dynamic_residual_quantizer(policy, unit: Array | float):
  """Bind a policy into ``r -> (r_hat, bits [B, ...])`` for :func:`resq.residual_forward`."""

  def quantize(r: Array):
    alloc = policy(jax.lax.stop_gradient(r), unit)
    return dynamic_fake_quant(r, alloc), alloc.bits

  return quantize
