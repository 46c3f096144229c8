"""Uniform fake quantization with straight-through, LSQ and LSQ+ gradients.

All functions are pure: ``(x, scale, zero_point, *, spec) -> x_hat``. The custom VJP sits right
beside each forward.

Forward (PyTorch's ``fake_quantize_*`` kernels, bit for bit): ``u = x * (1 / s)``,
``q = clamp(round(u) + z, qmin, qmax)``, ``x_hat = (q - z) * s``, round half to even. The zero
point is added *after* rounding: ``round(u + z)`` differs at ties whenever z is odd, and at
near-ties for any z != 0 (``u + z`` is rounded to float first). ``u`` is formed as a product
with the reciprocal, as PyTorch does, so that eager and jitted execution agree (XLA rewrites
``x / s`` that way under jit).

Gradients (docs/design.md section 2), with the unclamped code ``c = round(u) + z``:

* x: 1 where ``qmin <= c <= qmax`` (straight-through estimator), else 0;
* s (LSQ): ``round(u) - u`` inside the range, ``qmin - z`` / ``qmax - z`` at the clipped ends;
* z (LSQ+, integer units): 0 inside, ``-s`` outside (a learned offset ``beta = -z * s`` in x
  units gets 0 inside and 1 outside, as in the LSQ+ paper);
* both parameter gradients are multiplied by ``grad_scale`` (LSQ: ``1 / sqrt(N * qmax)`` with N
  the number of elements *per example* that share one scale: the leading ``batch_dims`` axes
  are examples, so folding frames or keyframe groups into the batch does not change the
  effective learning rate of a scale).

Symmetric specs have no zero point: pass ``zero_point=None`` (or zeros); a non-zero concrete
zero point with a symmetric spec is a ValueError (a traced one cannot be checked and is ignored).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from resq_jax.quant.spec import QuantSpec

Array = jax.Array


def scale_floor(dtype) -> float:
  """Smallest scale used: avoids division by zero for constant or all-zero tensors."""
  return max(1e-12, float(jnp.finfo(dtype).tiny))


def _scale_ceiling(dtype) -> float:
  """Largest scale used (2^126 for float32): XLA rewrites ``x / broadcast(s)`` as
  ``x * (1 / s)`` and XLA:CPU flushes subnormals to zero, so for ``s > 1 / tiny`` every
  ``x / s`` became 0 (measured: 3e38 / 3e38 -> 0). Only ranges near float32 max need such
  scales. Half types are computed in float32 on CPU, hence the float32 bound for them.
  """
  return 1.0 / float(jnp.finfo(jnp.promote_types(dtype, jnp.float32)).tiny)


def _channel_axis(spec: QuantSpec, ndim: int) -> int | None:
  if spec.channel_axis is None:
    return None
  if not -ndim <= spec.channel_axis < ndim:
    raise ValueError(
      f"channel_axis={spec.channel_axis} is out of range for an input of rank {ndim}"
    )
  return spec.channel_axis % ndim


def param_shape(x_shape: tuple[int, ...], spec: QuantSpec) -> tuple[int, ...]:
  """Shape of the scale / zero point for an input of shape ``x_shape``: () or (C,)."""
  axis = _channel_axis(spec, len(x_shape))
  return () if axis is None else (x_shape[axis],)


def _check_param(name: str, p, x, spec: QuantSpec) -> None:
  expected = param_shape(x.shape, spec)
  shape = tuple(np.shape(p))
  ok = shape == expected or (expected == () and shape == (1,))
  if not ok:
    raise ValueError(
      f"{name} has shape {shape}, expected {expected} for an input of shape "
      f"{tuple(x.shape)} with channel_axis={spec.channel_axis}"
    )
  if name == "scale" and not isinstance(p, jax.core.Tracer):
    values = np.asarray(p)
    if not np.all(values > 0):
      raise ValueError(f"scale must be positive, got scale={values.min()} (min)")


def _expand(p: Array, x: Array, spec: QuantSpec) -> Array:
  """Reshape a () or (C,) parameter so that it broadcasts against ``x`` along the channel axis."""
  axis = _channel_axis(spec, x.ndim)
  if axis is None:
    return jnp.reshape(p, (1,) * x.ndim)
  shape = [1] * x.ndim
  shape[axis] = x.shape[axis]
  return jnp.reshape(p, shape)


def _reduce(g: Array, p: Array, spec: QuantSpec) -> Array:
  """Sum an elementwise gradient down to the parameter's own shape."""
  axis = _channel_axis(spec, g.ndim)
  axes = tuple(i for i in range(g.ndim) if i != axis)
  return jnp.reshape(jnp.sum(g, axis=axes), jnp.shape(p)).astype(p.dtype)


def lsq_grad_scale(x_shape: tuple[int, ...], spec: QuantSpec, batch_dims: int = 0) -> float:
  """LSQ gradient scale ``1 / sqrt(N * qmax)``, N = elements per example that share a scale.

  Args:
    x_shape: shape of the quantized tensor.
    batch_dims: number of leading axes of ``x_shape`` that index examples (1 for activations
      ``[B, ...]``, 0 for weights). They do not count towards N.
  """
  if (
    isinstance(batch_dims, bool)
    or not isinstance(batch_dims, int)
    or not (0 <= batch_dims <= len(x_shape))
  ):
    raise ValueError(f"batch_dims must be an int in [0, {len(x_shape)}], got {batch_dims!r}")
  axis = _channel_axis(spec, len(x_shape))
  if axis is not None and axis < batch_dims:
    raise ValueError(
      f"channel_axis={spec.channel_axis} is a batch axis (batch_dims="
      f"{batch_dims}): a scale per example is not a quantizer parameter"
    )
  features = x_shape[batch_dims:]
  per_channel = 1 if axis is None else x_shape[axis]
  n = math.prod(features) // per_channel
  return 1.0 / math.sqrt(max(1, n) * max(1, spec.qmax))


def _prepare(x, scale, zero_point, spec):
  s = jnp.clip(
    _expand(scale, x, spec).astype(x.dtype), scale_floor(x.dtype), _scale_ceiling(x.dtype)
  )
  if spec.symmetric:
    z = jnp.zeros_like(s)
  else:
    z = jnp.clip(jnp.round(_expand(zero_point, x, spec).astype(x.dtype)), spec.qmin, spec.qmax)
  return s, z


def _codes(x, s, z, spec):
  """``(u, c, q)``: ``u = x * (1/s)``, unclamped code ``c = round(u) + z``, clamped code ``q``."""
  u = x * (1 / s)
  c = jnp.round(u) + z
  return u, c, jnp.clip(c, spec.qmin, spec.qmax)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _fake_quant(x, scale, zero_point, spec: QuantSpec, grad_scale: float):
  s, z = _prepare(x, scale, zero_point, spec)
  _, _, q = _codes(x, s, z, spec)
  return (q - z) * s


def _fake_quant_fwd(x, scale, zero_point, spec, grad_scale):
  return _fake_quant(x, scale, zero_point, spec, grad_scale), (x, scale, zero_point)


def _fake_quant_bwd(spec, grad_scale, residuals, g):
  x, scale, zero_point = residuals
  s, z = _prepare(x, scale, zero_point, spec)
  u, c, q = _codes(x, s, z, spec)
  inside = (c >= spec.qmin) & (c <= spec.qmax)
  dx = jnp.where(inside, g, jnp.zeros_like(g))
  # Inside: q - z - u = round(u) - u; clipped: qmin - z or qmax - z.
  ds = _reduce(g * jnp.where(inside, q - z - u, q - z), scale, spec) * grad_scale
  if spec.symmetric:
    dz = jnp.zeros_like(zero_point)
  else:
    dz = _reduce(g * jnp.where(inside, jnp.zeros_like(s), -s), zero_point, spec) * grad_scale
  return dx, ds, dz


_fake_quant.defvjp(_fake_quant_fwd, _fake_quant_bwd)


def _check_symmetric_zero_point(zero_point, spec: QuantSpec) -> None:
  if (
    spec.symmetric
    and zero_point is not None
    and not isinstance(zero_point, jax.core.Tracer)
    and np.any(np.asarray(zero_point) != 0)
  ):
    raise ValueError(
      "a symmetric spec has no zero point, got a non-zero zero_point; use "
      "symmetric=False for an offset grid, or zero_point=None"
    )


def _params(x, scale, zero_point, spec: QuantSpec):
  """Validated ``(scale, zero_point)`` arrays for ``x`` (zero_point None -> zeros)."""
  _check_symmetric_zero_point(zero_point, spec)
  scale = jnp.asarray(scale, dtype=jnp.result_type(float))
  zero_point = (
    jnp.zeros_like(scale) if zero_point is None else jnp.asarray(zero_point, dtype=scale.dtype)
  )
  _check_param("scale", scale, x, spec)
  _check_param("zero_point", zero_point, x, spec)
  return scale, zero_point


def fake_quant(
  x: Array,
  scale: Array,
  zero_point: Array | None = None,
  *,
  spec: QuantSpec,
  grad_scale: float | None = None,
  batch_dims: int = 0,
) -> Array:
  """Quantize-dequantize ``x`` on the grid of ``spec``; differentiable in x, scale, zero_point.

  Args:
    x: input of any shape, floating point.
    scale: positive step size, shape () or (C,) with C = x.shape[spec.channel_axis].
    zero_point: integer-valued offset of the same shape as ``scale`` (rounded and clamped to
      the grid in the forward pass). ``None`` means 0; symmetric specs take only None or
      zeros (it gets zero gradient there).
    spec: the grid.
    grad_scale: multiplier of the scale / zero-point gradients; ``None`` uses the LSQ value
      ``1 / sqrt(N * qmax)`` (N elements per example and scale), 1.0 gives the raw gradient.
    batch_dims: leading axes of ``x`` that index examples (not counted in LSQ's N): 1 for an
      activation ``[B, ...]``, 0 (default) for weights.
  Returns:
    ``x_hat`` with the shape and dtype of ``x``.
  """
  x = jnp.asarray(x)
  scale, zero_point = _params(x, scale, zero_point, spec)
  if grad_scale is None:
    grad_scale = lsq_grad_scale(x.shape, spec, batch_dims)
  return _fake_quant(x, scale, zero_point, spec, float(grad_scale))


def quantize(x: Array, scale: Array, zero_point: Array | None = None, *, spec: QuantSpec) -> Array:
  """Integer codes ``clamp(round(x / s) + z, qmin, qmax)`` as int32 (not differentiable)."""
  x = jnp.asarray(x)
  scale, zero_point = _params(x, scale, zero_point, spec)
  s, z = _prepare(x, scale, zero_point, spec)
  return _codes(x, s, z, spec)[2].astype(jnp.int32)


def dequantize(
  q: Array, scale: Array, zero_point: Array | None = None, *, spec: QuantSpec, dtype=jnp.float32
) -> Array:
  """``(q - z) * s`` for integer codes ``q`` produced by :func:`quantize`."""
  ref = jnp.zeros(q.shape, dtype)
  # Same validation as quantize: a wrong shape is a ValueError, not a reshape TypeError.
  _check_symmetric_zero_point(zero_point, spec)
  scale = jnp.asarray(scale, dtype=dtype)
  zero_point = jnp.zeros_like(scale) if zero_point is None else jnp.asarray(zero_point, dtype)
  _check_param("scale", scale, ref, spec)
  _check_param("zero_point", zero_point, ref, spec)
  s, z = _prepare(ref, scale, zero_point, spec)
  return (q.astype(dtype) - z) * s
