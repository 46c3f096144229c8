"""2-D convolution with a CPU-friendly custom VJP (im2col kernel gradient).

Why this exists (measured on a shared 2-core AMD EPYC, see docs/conv_benchmark.md):

* XLA:CPU runs the kernel gradient of a conv (the conv contracting over batch and space) on a
  slow path that degrades with the batch: 3x3 32->32 on 64x64 frames took ~13 ms for 4 frames
  but 0.2-1.1 s for 32; 48->48 on 32 frames 0.6-1.6 s against 0.1-0.25 s for the per-tap GEMMs
  here.
* Inside the backward `while` loop of `lax.scan`, XLA's autodiff convs (the kernel gradient *and*
  the input gradient, whose kernel JAX passes with swapped dimension numbers) get a non-default
  layout and fall off XLA:CPU's Eigen conv path: 5-23x slower than the unrolled loop.
* Grouped and depthwise convs are slow in all three directions on XLA:CPU (a depthwise 3x3 on 64
  channels runs its forward 5-10x slower than a dense 32->32 conv with 32x more FLOPs).

`conv2d(..., impl=...)`:

* ``'xla'``: `lax.conv_general_dilated` with XLA's own autodiff. Best on GPU/TPU, where cuDNN /
  the TPU compiler handle all three convolutions well.
* ``'im2col'``: `jax.custom_vjp`. Forward: `lax.conv_general_dilated` for dense convs; a
  shift-and-multiply sum over the k*k taps for depthwise convs; one dense conv per group for
  other grouped convs. Input gradient: a transposed conv (stride as lhs dilation) whose flipped,
  in/out-swapped kernel is materialised in plain HWIO order, so that XLA:CPU keeps its fast conv
  path inside loops; depthwise: the linear transpose of the tap sum. Kernel gradient: for every
  tap (i, j) one GEMM ``patch_ij^T @ gy`` over the flattened batch and space, accumulated over
  batch chunks of about 8192 output pixels in a `lax.scan` (depthwise: a fused multiply-reduce
  per tap). The taps are never stacked into a full im2col matrix: per-tap GEMMs over small
  chunks were the fastest variant measured, and the extra memory is a few copies of one chunk.
* ``'auto'`` (default): ``'im2col'`` when `jax.default_backend()` is ``'cpu'`` at trace time,
  else ``'xla'``. The decision is taken while tracing, so a function traced for CPU keeps the
  CPU formulation; pass ``impl`` explicitly when compiling for another device than the default.

Limitations of the ``'im2col'`` path: reverse mode only (`jax.jvp` / `jax.jacfwd` raise, as for
any `custom_vjp`; use ``impl='xla'`` for forward mode); no dilation; NHWC / HWIO only; batch
chunks are whole samples, so one sample of x is the memory granularity. It supports `jit`,
`grad` (also reverse-over-reverse second order: the backward is differentiable), `vmap` (JAX's
default batching of `custom_vjp`: correct; with shared weights prefer folding the mapped axis
into the batch) and use inside `lax.scan`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["conv2d", "conv_output_shape", "DEFAULT_CHUNK_BYTES"]

Padding = str | Sequence[tuple[int, int]]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
_IMPLS = ("auto", "xla", "im2col")

# Kernel-gradient batch chunks: as many samples as give about _TARGET_ROWS rows (= output pixels)
# per GEMM, and never more than `chunk_bytes` of x plus gy (the memory bound). About 8192 rows
# (2 frames of 64x64) was the fastest measured on the 2-core EPYC for 16-64 channels: operands
# stay in cache; 4x larger chunks were 1.1-2x slower, single frames up to 1.5x slower. A chunk is
# never smaller than one sample, so peak extra memory is about (k*k + 2) * max(chunk, one
# sample of x): a few MiB for 64x64 frames, far below a 64 MiB budget.
_TARGET_ROWS = 8192
DEFAULT_CHUNK_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class _ConvSpec:
  """Static (hashable) configuration of one convolution; the custom_vjp's non-diff argument."""

  strides: tuple[int, int]
  pads: tuple[tuple[int, int], tuple[int, int]]
  groups: int
  chunk_bytes: int


def conv2d(
  x: jax.Array,
  w: jax.Array,
  *,
  strides: Sequence[int] = (1, 1),
  padding: Padding = "SAME",
  feature_group_count: int = 1,
  impl: str = "auto",
  chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> jax.Array:
  """2-D convolution, numerically equal to `lax.conv_general_dilated` (NHWC, HWIO, NHWC).

  Args:
    x: input [N, H, W, C_in].
    w: kernel [kh, kw, C_in / groups, C_out]; C_out divisible by groups.
    strides: (sh, sw).
    padding: 'SAME', 'SAME_LOWER', 'VALID' or ((pt, pb), (pl, pr)) (negative values crop).
    feature_group_count: groups; C_in == groups is a depthwise conv.
    impl: 'auto' | 'xla' | 'im2col' (see the module docstring).
    chunk_bytes: memory cap on one batch chunk (x + gy bytes) in the im2col kernel gradient.

  Returns:
    y [N, H_out, W_out, C_out] with H_out = (H + pt + pb - kh) // sh + 1 (same for W).
  """
  spec = _make_spec(x, w, strides, padding, feature_group_count, chunk_bytes)
  if _resolve_impl(impl) == "xla":
    return _conv_xla(x, w, spec)
  return _conv_im2col(x, w, spec)


def conv_output_shape(x_shape, w_shape, strides=(1, 1), padding: Padding = "SAME"):
  """Output shape (N, H_out, W_out, C_out) of `conv2d` for x [N,H,W,C] and w [kh,kw,Ci,Co]."""
  pads = _explicit_pads(tuple(x_shape[1:3]), tuple(w_shape[:2]), tuple(strides), padding)
  h_out, w_out = _out_spatial(x_shape[1:3], w_shape[:2], strides, pads)
  return (x_shape[0], h_out, w_out, w_shape[3])


# ----------------------------------------------------------------------------- validation


def _resolve_impl(impl: str) -> str:
  if impl not in _IMPLS:
    raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
  if impl == "auto":
    # cuDNN / TPU convolutions and their autodiff are fast; only XLA:CPU needs the rewrite.
    return "im2col" if jax.default_backend() == "cpu" else "xla"
  return impl


def _explicit_pads(in_hw, k_hw, strides, padding) -> tuple[tuple[int, int], tuple[int, int]]:
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(in_hw, k_hw, strides, padding.upper())
  else:
    pads = [tuple(int(v) for v in p) for p in padding]
    if len(pads) != 2 or any(len(p) != 2 for p in pads):
      raise ValueError(f"explicit padding must be ((pt, pb), (pl, pr)), got {padding!r}")
  return tuple((int(lo), int(hi)) for lo, hi in pads)  # type: ignore[return-value]


def _out_spatial(in_hw, k_hw, strides, pads) -> tuple[int, int]:
  return tuple(  # type: ignore[return-value]
    (size + lo + hi - k) // s + 1 for size, k, s, (lo, hi) in zip(in_hw, k_hw, strides, pads)
  )


def _make_spec(x, w, strides, padding, groups, chunk_bytes) -> _ConvSpec:
  if x.ndim != 4 or w.ndim != 4:
    raise ValueError(f"expected x [N,H,W,C] and w [kh,kw,Ci,Co], got {x.shape}, {w.shape}")
  if x.dtype != w.dtype:
    raise ValueError(f"x and w dtypes differ: {x.dtype} vs {w.dtype}")
  groups = int(groups)
  c_in, (kh, kw, c_in_g, c_out) = x.shape[3], w.shape
  if groups < 1 or c_in % groups or c_out % groups or c_in // groups != c_in_g:
    raise ValueError(f"feature_group_count={groups} incompatible with C_in={c_in}, w {w.shape}")
  strides = tuple(int(s) for s in strides)
  if len(strides) != 2 or min(strides) < 1:
    raise ValueError(f"strides must be two positive ints, got {strides}")
  pads = _explicit_pads(x.shape[1:3], (kh, kw), strides, padding)
  if min(_out_spatial(x.shape[1:3], (kh, kw), strides, pads)) < 1:
    raise ValueError(f"empty output for x {x.shape}, w {w.shape}, padding {pads}")
  return _ConvSpec(strides, pads, groups, int(chunk_bytes))


# ----------------------------------------------------------------------------- XLA path


def _conv_xla(x, w, spec: _ConvSpec):
  return lax.conv_general_dilated(
    x,
    w,
    spec.strides,
    spec.pads,
    dimension_numbers=_DIMENSION_NUMBERS,
    feature_group_count=spec.groups,
  )


# ----------------------------------------------------------------------------- im2col path


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_im2col(x, w, spec: _ConvSpec):
  return _forward(x, w, spec)


def _conv_im2col_fwd(x, w, spec):
  # Same residuals as XLA's autodiff: the primal inputs, nothing im2col-sized.
  return _forward(x, w, spec), (x, w)


def _conv_im2col_bwd(spec, res, gy):
  x, w = res
  dx = _input_grad(gy, w, x.shape, spec)
  dw = _kernel_grad(x, gy, w.shape, spec)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_conv_im2col.defvjp(_conv_im2col_fwd, _conv_im2col_bwd)


def _forward(x, w, spec: _ConvSpec):
  """y [N, Ho, Wo, C_out] for x [N, H, W, C_in], w [kh, kw, C_in/G, C_out]."""
  groups, c_in_g = spec.groups, w.shape[2]
  if groups == 1:
    return _conv_xla(x, w, spec)
  if c_in_g == 1:
    return _depthwise_forward(x, w, spec)
  # XLA:CPU runs a grouped conv ~2x slower than G dense convs of the group sizes (measured
  # G=2, 64 channels), so split the groups.
  c_out_g = w.shape[3] // groups
  dense = dataclasses.replace(spec, groups=1)
  ys = [
    _conv_xla(x[..., g * c_in_g : (g + 1) * c_in_g], w[..., g * c_out_g : (g + 1) * c_out_g], dense)
    for g in range(groups)
  ]
  return jnp.concatenate(ys, axis=-1)


def _input_grad(gy, w, x_shape, spec: _ConvSpec):
  """dL/dx [N, H, W, C_in] from gy [N, Ho, Wo, C_out] and w [kh, kw, C_in/G, C_out]."""
  groups, c_in_g = spec.groups, w.shape[2]
  if groups == 1:
    return _dense_input_grad(gy, w, x_shape[1:3], spec)
  if c_in_g == 1:
    # Transpose of the shift-and-add forward: pads and adds, no convolution at all.
    (dx,) = jax.linear_transpose(
      lambda x_: _depthwise_forward(x_, w, spec), jax.ShapeDtypeStruct(x_shape, gy.dtype)
    )(gy)
    return dx
  c_out_g = w.shape[3] // groups
  dense = dataclasses.replace(spec, groups=1)
  dxs = [
    _dense_input_grad(
      gy[..., g * c_out_g : (g + 1) * c_out_g],
      w[..., g * c_out_g : (g + 1) * c_out_g],
      x_shape[1:3],
      dense,
    )
    for g in range(groups)
  ]
  return jnp.concatenate(dxs, axis=-1)


def _dense_input_grad(gy, w, x_hw, spec: _ConvSpec):
  """Transposed conv: gy [N,Ho,Wo,C_out], w [kh,kw,C_in,C_out] -> dx [N, *x_hw, C_in].

  Same math as JAX's transpose rule (stride -> lhs dilation, flipped kernel), but the flipped,
  in/out-swapped kernel is built as a real HWIO array. JAX's rule instead swaps the kernel's
  dimension numbers; inside the backward while loop of `lax.scan` XLA:CPU then gives the kernel
  a non-default layout and falls off its Eigen conv path (measured 24-28x slower).
  """
  kh, kw = w.shape[:2]
  pads = []
  for size, k, s, (lo, _), out in zip(x_hw, (kh, kw), spec.strides, spec.pads, gy.shape[1:3]):
    before = k - 1 - lo
    # Rows of x never reached by a window (stride remainder) get zero gradient via padding.
    after = size + k - 1 - ((out - 1) * s + 1) - before
    pads.append((before, after))
  w_t = jnp.transpose(jnp.flip(w, (0, 1)), (0, 1, 3, 2))  # [kh, kw, C_out, C_in]
  return lax.conv_general_dilated(
    gy, w_t, (1, 1), pads, lhs_dilation=spec.strides, dimension_numbers=_DIMENSION_NUMBERS
  )


def _taps(x_pad, k_hw, strides, out_hw):
  """Yields ((i, j), patch_ij), patch_ij [n, Ho, Wo, C] = x_pad[:, i::sh, j::sw][:, :Ho, :Wo]."""
  (kh, kw), (sh, sw), (ho, wo) = k_hw, strides, out_hw
  n, _, _, c = x_pad.shape
  for i in range(kh):
    for j in range(kw):
      yield (
        (i, j),
        lax.slice(
          x_pad, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1)
        ),
      )


def _acc_dtype(dtype):
  """float32 for bfloat16/float16/float32 inputs, float64 for float64 (x64 mode)."""
  # Explicit rule rather than jnp.promote_types, which refuses bf16 + f32 under strict promotion.
  return jnp.dtype(jnp.float64) if jnp.dtype(dtype).itemsize > 4 else jnp.dtype(jnp.float32)


def _pad_spatial(x, pads):
  # lax.pad accepts negative padding (cropping), matching conv_general_dilated's semantics.
  (pt, pb), (pl, pr) = pads
  zero = jnp.zeros((), x.dtype)
  return lax.pad(x, zero, ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))


def _depthwise_forward(x, w, spec: _ConvSpec):
  """Depthwise conv (C_in == G) as a sum over taps of patch * w[i, j]; w [kh, kw, 1, G*m]."""
  kh, kw, _, c_out = w.shape
  groups = spec.groups
  mult = c_out // groups
  out_hw = _out_spatial(x.shape[1:3], (kh, kw), spec.strides, spec.pads)
  # Accumulate in (at least) float32 like the conv emitters do for low-precision inputs.
  acc_dtype = _acc_dtype(x.dtype)
  w_g = w.astype(acc_dtype).reshape(kh, kw, groups, mult)
  patches = [
    (ij, p.astype(acc_dtype))
    for ij, p in _taps(_pad_spatial(x, spec.pads), (kh, kw), spec.strides, out_hw)
  ]
  # One 4-D sum per channel multiplier index o (output channel g*mult + o): 5-D products with a
  # trailing axis of size 1 made XLA:CPU's fused loops several times slower.
  outs = [sum(p * w_g[i, j, :, o][None, None, None] for (i, j), p in patches) for o in range(mult)]
  y = outs[0] if mult == 1 else jnp.stack(outs, axis=-1).reshape(*outs[0].shape[:3], c_out)
  return y.astype(x.dtype)


def _kernel_grad(x, gy, w_shape, spec: _ConvSpec):
  """dL/dw [kh, kw, C_in/G, C_out] (accumulation dtype) from x [N,H,W,C_in], gy [N,Ho,Wo,C_out].

  The batch is split into chunks of `chunk` samples (largest divisor of N within _TARGET_ROWS
  output pixels and spec.chunk_bytes) and a `lax.scan` accumulates the per-chunk gradients,
  which bounds the memory of the tap copies and keeps GEMM operands in cache.
  """
  n = x.shape[0]
  per_sample = np.prod(x.shape[1:]) * x.dtype.itemsize + np.prod(gy.shape[1:]) * gy.dtype.itemsize
  max_chunk = max(
    1,
    min(
      int(spec.chunk_bytes // max(per_sample, 1)), _TARGET_ROWS // max(gy.shape[1] * gy.shape[2], 1)
    ),
  )
  # A divisor of N, so that the batch reshapes into equal chunks without padding copies.
  chunk = max(d for d in range(1, min(n, max_chunk) + 1) if n % d == 0)
  grad_chunk = functools.partial(_kernel_grad_chunk, w_shape=w_shape, spec=spec)
  if chunk == n:
    return grad_chunk(x, gy)
  xs = x.reshape(n // chunk, chunk, *x.shape[1:])
  gys = gy.reshape(n // chunk, chunk, *gy.shape[1:])

  def step(acc, x_gy):
    return acc + grad_chunk(*x_gy), None

  acc0 = jnp.zeros(w_shape, _acc_dtype(x.dtype))
  return lax.scan(step, acc0, (xs, gys))[0]


def _kernel_grad_chunk(x, gy, *, w_shape, spec: _ConvSpec):
  """Kernel gradient of one chunk: x [n,H,W,C_in], gy [n,Ho,Wo,C_out] -> w_shape (>= f32)."""
  kh, kw, c_in_g, c_out = w_shape
  groups = spec.groups
  c_out_g = c_out // groups
  n, ho, wo, _ = gy.shape
  m = n * ho * wo
  acc_dtype = _acc_dtype(x.dtype)
  taps = _taps(_pad_spatial(x, spec.pads), (kh, kw), spec.strides, (ho, wo))
  per_tap = []
  if c_in_g == 1:
    # Depthwise: dw[i,j,0,g*mult+o] = sum_m patch[m,g] * gy[m,g,o]; a batched vector dot is
    # slow on XLA:CPU, a fused multiply + reduce is not. Reduce 4-D products only: with a
    # trailing axis of size 1 (a [.., G, mult=1] layout) the reduction was 5x slower.
    gy_by_mult = [
      gy.reshape(n, ho, wo, groups, c_out_g)[..., o].astype(acc_dtype) for o in range(c_out_g)
    ]
    for _, patch in taps:
      p32 = patch.astype(acc_dtype)
      sums = [jnp.sum(p32 * g_o, axis=(0, 1, 2)) for g_o in gy_by_mult]  # each [G]
      per_tap.append(jnp.stack(sums, axis=-1).reshape(1, c_out))
  elif groups == 1:
    gy2 = gy.reshape(m, c_out)
    for _, patch in taps:
      # [m, C_in]^T @ [m, C_out]: XLA:CPU runs this as one transposed-lhs GEMM (Eigen).
      per_tap.append(
        lax.dot_general(
          patch.reshape(m, c_in_g), gy2, (((0,), (0,)), ((), ())), preferred_element_type=acc_dtype
        )
      )
  else:
    gy2 = gy.reshape(m, groups, c_out_g)
    for _, patch in taps:
      # [m, G, Cg] x [m, G, Og] -> [G, Cg, Og]: contract the batch*space axis per group.
      g_co = lax.dot_general(
        patch.reshape(m, groups, c_in_g),
        gy2,
        (((0,), (0,)), ((1,), (1,))),
        preferred_element_type=acc_dtype,
      )
      per_tap.append(jnp.transpose(g_co, (1, 0, 2)).reshape(c_in_g, c_out))
  return jnp.stack(per_tap).reshape(kh, kw, c_in_g, c_out)
