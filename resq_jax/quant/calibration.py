"""Range setting for post-training calibration (PTQ): min-max, percentile, MSE, LSQ's init.

A *range* is a pair ``(lo, hi)`` of arrays of shape ``param_shape(x.shape, spec)``: ``()`` per
tensor, ``(C,)`` per channel, where the statistics reduce over every axis but
``spec.channel_axis``. :func:`range_to_qparams` turns a range into ``(scale, zero_point)`` for
:func:`resq_jax.quant.uniform.fake_quant`; :func:`calibrate` does both in one call.

Scale rule (one formula for every grid, as in PyTorch's observers): the grid's
``qmax - qmin`` steps span the range, ``scale = (hi - lo) / (qmax - qmin)``, after the range has
been widened to contain 0 (so that zero, i.e. padding and ReLU zeros, is exact). With the zero
point fixed at 0 the range must be symmetric about it:

* signed symmetric: ``[-amax, amax]`` with ``amax = max(|lo|, |hi|)``, hence
  ``scale = amax / ((qmax - qmin) / 2)``. On a narrow grid ``[-(2^(b-1)-1), 2^(b-1)-1]`` that is
  ``amax / qmax``: both ``+-amax`` are grid points. On the full grid ``[-2^(b-1), 2^(b-1)-1]``
  it is ``amax / (qmax + 1/2)``: ``+amax`` sits half a step above the top level, which is the
  smallest step whose rounding error stays <= ``scale / 2`` over all of ``[-amax, amax]``
  (dividing by ``qmax`` would waste the extra negative level and enlarge the step).
* unsigned symmetric (zero point 0, grid ``[0, 2^b-1]``): ``[0, hi]``, negative values clip to 0
  (meant for non-negative data such as post-ReLU activations).
* asymmetric: ``zero_point = clamp(qmin - round(lo / scale), qmin, qmax)``.

The scale never drops below :func:`resq_jax.quant.uniform.scale_floor`, so constant, all-zero
or tiny inputs give a finite positive scale; ``hi / n - lo / n`` instead of ``(hi - lo) / n``
keeps huge (float32-max-sized) ranges from overflowing. Like ``fake_quant``, the scale is capped
at ``2^126`` in float32 (see ``uniform._scale_ceiling``): ranges wider than ``2^126 * (qmax -
qmin)`` (only reachable within a factor ``qmax - qmin`` of float32 max) are clipped.

Every function is pure and jit-able (``spec`` and the other Python-number options are static).
Only the percentile and MSE searches are jitted here (sort / scan); the others are a handful of
elementwise ops and reductions whose eager dispatch is cached per shape, whereas a jit per
``(shape, spec)`` would compile again for every layer's bit-width. Inside a caller's jit all
of them trace inline.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from resq_jax.quant.spec import QuantSpec
from resq_jax.quant.uniform import _channel_axis, _expand, _scale_ceiling, fake_quant, scale_floor

Array = jax.Array
Range = tuple[Array, Array]


# --------------------------------------------------------------------------------------------
# Helpers


def _as_float(x) -> Array:
  """``x`` as a floating array; integer inputs (e.g. uint8 frames) become float32."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  if x.size == 0:
    raise ValueError(f"x must be non-empty, got x with shape {tuple(x.shape)}")
  return x


def _reduce_axes(x: Array, spec: QuantSpec) -> tuple[int, ...]:
  """All axes but the channel axis (validated: out-of-range axes raise ValueError)."""
  axis = _channel_axis(spec, x.ndim)
  return tuple(i for i in range(x.ndim) if i != axis)


def _rows(x: Array, axis: int | None) -> Array:
  """``x`` as ``(C, N)`` (channel ``axis`` first), or ``(N,)`` when ``axis`` is None."""
  if axis is None:
    return jnp.ravel(x)
  return jnp.reshape(jnp.moveaxis(x, axis, 0), (x.shape[axis], -1))


# --------------------------------------------------------------------------------------------
# Ranges


def minmax_range(x: Array, spec: QuantSpec) -> Range:
  """Min and max of ``x`` per tensor or per channel.

  Args:
    x: floating array of any shape (rank >= 1 when per channel).
    spec: the grid; only ``channel_axis`` is used.
  Returns:
    ``(lo, hi)``, each of shape ``param_shape(x.shape, spec)`` and dtype of ``x``.
  """
  x = _as_float(x)
  axes = _reduce_axes(x, spec)
  return jnp.min(x, axis=axes), jnp.max(x, axis=axes)


def percentile_range(x: Array, spec: QuantSpec, percentile: float = 99.99) -> Range:
  """Clip the tails: the ``percentile``-th percentile (linear interpolation, as np.percentile).

  Signed symmetric grids use the percentile of ``|x|`` and return ``(-p, p)``; other grids use
  the ``100 - percentile`` and ``percentile`` percentiles of ``x`` itself.

  Args:
    x: floating array of any shape.
    spec: the grid (``signed``, ``symmetric`` and ``channel_axis`` are used).
    percentile: Python number in (0, 100]; 100 gives the min-max range.
  Returns:
    ``(lo, hi)`` of shape ``param_shape(x.shape, spec)``.
  """
  if (
    isinstance(percentile, bool)
    or not isinstance(percentile, (int, float))
    or not (0 < percentile <= 100)
  ):
    raise ValueError(f"percentile must be a number in (0, 100], got percentile={percentile!r}")
  x = _as_float(x)
  # Only the axis and the |x| switch reach the jit key: other bit-widths reuse the compilation.
  return _percentile_range(
    x, _channel_axis(spec, x.ndim), spec.signed and spec.symmetric, float(percentile)
  )


@functools.partial(jax.jit, static_argnames=("axis", "of_abs", "percentile"))
def _percentile_range(x: Array, axis: int | None, of_abs: bool, percentile: float) -> Range:
  rows = _rows(x, axis)
  if of_abs:
    hi = jnp.percentile(jnp.abs(rows), percentile, axis=-1)
    return -hi, hi
  lo = jnp.percentile(rows, 100.0 - percentile, axis=-1)
  hi = jnp.percentile(rows, percentile, axis=-1)
  return lo, hi


def mse_range(x: Array, spec: QuantSpec, num_candidates: int = 100) -> Range:
  """Clipping range that minimises the squared fake-quantization error, per tensor or channel.

  Grid search over shrink factors ``a_k = k / num_candidates`` (k = num_candidates .. 1) of the
  min-max range ``(a * lo, a * hi)``; each channel keeps its own best factor (a channel's error
  depends only on its own scale). The search runs in ``lax.scan`` so memory stays O(x.size)
  instead of O(num_candidates * x.size). The factor 1 (min-max) is tried first and only a
  strictly smaller error replaces it, so the result is never worse than min-max and ties keep
  the wider range.

  Args:
    x: floating array of any shape.
    spec: the grid.
    num_candidates: positive Python int, the number of shrink factors in (0, 1].
  Returns:
    ``(lo, hi)`` of shape ``param_shape(x.shape, spec)``.
  """
  if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 1:
    raise ValueError(
      f"num_candidates must be a positive int, got num_candidates={num_candidates!r}"
    )
  return _mse_range(x, spec, num_candidates)


def _squared_error(x: Array, lo: Array, hi: Array, norm: Array, spec: QuantSpec) -> Array:
  """Sum of squared fake-quantization errors per tensor / channel for the range (lo, hi).

  The error is measured in units of ``norm`` (the channel's min-max amax): dividing by a
  per-channel constant leaves each channel's argmin unchanged, and keeps squares of huge
  (> 1e19) or tiny (< 1e-19) float32 values from overflowing to inf or underflowing to 0,
  which would make every candidate tie.
  """
  scale, zero_point = range_to_qparams(lo, hi, spec)
  err = (fake_quant(x, scale, zero_point, spec=spec, grad_scale=1.0) - x) / _expand(norm, x, spec)
  return jnp.sum(jnp.square(err), axis=_reduce_axes(x, spec))


@functools.partial(jax.jit, static_argnames=("spec", "num_candidates"))
def _mse_range(x: Array, spec: QuantSpec, num_candidates: int) -> Range:
  x = _as_float(x)
  lo, hi = minmax_range(x, spec)
  norm = jnp.maximum(jnp.maximum(-lo, hi), scale_floor(x.dtype))
  # Descending, so that the first candidate is exactly the min-max range.
  factors = jnp.arange(num_candidates, 0, -1, dtype=x.dtype) / num_candidates

  def step(carry, a):
    best_err, best_a = carry
    err = _squared_error(x, a * lo, a * hi, norm, spec)
    better = err < best_err
    return (jnp.where(better, err, best_err), jnp.where(better, a, best_a)), None

  init = (jnp.full(lo.shape, jnp.inf, x.dtype), jnp.ones(lo.shape, x.dtype))
  (_, best_a), _ = jax.lax.scan(step, init, factors)
  return best_a * lo, best_a * hi


# --------------------------------------------------------------------------------------------
# Quantization parameters


def range_to_qparams(lo: Array, hi: Array, spec: QuantSpec) -> tuple[Array, Array]:
  """Scale and zero point whose grid covers ``[lo, hi]`` (widened to contain 0).

  Args:
    lo, hi: range of shape ``()`` or ``(C,)`` (floating; integers become float32).
    spec: the grid.
  Returns:
    ``(scale, zero_point)`` of the same shape and dtype; ``scale >= scale_floor(dtype)``,
    ``zero_point`` is integer-valued (stored as float) and 0 for symmetric grids.
  """
  lo, hi = _as_float(lo), _as_float(hi)
  dtype = jnp.result_type(lo, hi)
  lo = jnp.minimum(lo.astype(dtype), 0)
  hi = jnp.maximum(hi.astype(dtype), 0)
  steps = float(spec.qmax - spec.qmin)
  if spec.symmetric:
    if spec.signed:
      scale = jnp.maximum(-lo, hi) / (steps / 2)
    else:
      scale = hi / steps
  else:
    scale = hi / steps - lo / steps
  # The same clamp as fake_quant applies, so that the returned scale is the one in effect.
  scale = jnp.clip(scale, scale_floor(dtype), _scale_ceiling(dtype))
  if spec.symmetric:
    zero_point = jnp.zeros_like(scale)
  else:
    zero_point = jnp.clip(spec.qmin - jnp.round(lo / scale), spec.qmin, spec.qmax)
  return scale, zero_point


def lsq_init_scale(x: Array, spec: QuantSpec) -> Array:
  """LSQ initial step ``2 * mean(|x|) / sqrt(qmax)`` per tensor or per channel (floored).

  Returns:
    scale of shape ``param_shape(x.shape, spec)``.
  """
  x = _as_float(x)
  mean_abs = jnp.mean(jnp.abs(x), axis=_reduce_axes(x, spec))
  # A signed 1-bit grid has qmax = 0; use one level there instead of dividing by zero.
  scale = 2 * mean_abs / math.sqrt(max(spec.qmax, 1))
  # Clamped as in fake_quant (an overflowing mean of float32-max values becomes the ceiling).
  return jnp.clip(scale, scale_floor(x.dtype), _scale_ceiling(x.dtype))


def lsq_range(x: Array, spec: QuantSpec) -> Range:
  """The range whose grid step is LSQ's initial step (:func:`lsq_init_scale`), so that
  ``calibrate(x, spec, 'lsq')`` starts QAT where the LSQ paper does: ``[-a, a]`` with
  ``a = s * (qmax - qmin) / 2`` on signed symmetric grids, ``[0, s * (qmax - qmin)]`` on
  unsigned symmetric ones, and ``[lo, lo + s * (qmax - qmin)]`` from ``lo = min(min(x), 0)`` on
  offset grids."""
  x = _as_float(x)
  s = lsq_init_scale(x, spec)
  span = s * (spec.qmax - spec.qmin)
  if spec.symmetric and spec.signed:
    return -span / 2, span / 2
  if spec.symmetric:
    return jnp.zeros_like(span), span
  lo = jnp.minimum(jnp.min(x, axis=_reduce_axes(x, spec)), 0)
  return lo, lo + span


_RANGE_METHODS: dict[str, Callable[..., Range]] = {
  "minmax": minmax_range,
  "percentile": percentile_range,
  "mse": mse_range,
  "lsq": lsq_range,
}
CALIBRATION_METHODS = tuple(_RANGE_METHODS)


def calibrate(x: Array, spec: QuantSpec, method: str = "minmax", **kwargs) -> tuple[Array, Array]:
  """``range_to_qparams(*<method>_range(x, spec, **kwargs), spec)``.

  Args:
    x: calibration data of any shape.
    spec: the grid.
    method: ``'minmax'``, ``'percentile'`` (kwarg ``percentile``), ``'mse'`` (kwarg
      ``num_candidates``) or ``'lsq'`` (LSQ's initial step ``2 mean|x| / sqrt(qmax)``).
  Returns:
    ``(scale, zero_point)`` of shape ``param_shape(x.shape, spec)``.
  """
  if method not in _RANGE_METHODS:
    raise ValueError(f"method must be one of {sorted(_RANGE_METHODS)}, got method={method!r}")
  lo, hi = _RANGE_METHODS[method](x, spec, **kwargs)
  return range_to_qparams(lo, hi, spec)


__all__ = [
  "CALIBRATION_METHODS",
  "calibrate",
  "lsq_init_scale",
  "lsq_range",
  "minmax_range",
  "mse_range",
  "percentile_range",
  "range_to_qparams",
]
