"""Tests of resq_jax.ops.conv2d against lax.conv_general_dilated, its autodiff and NumPy.

Tolerance: float32 results are compared with `atol = 1e-5 * max|oracle|` (plus rtol 1e-5): the
im2col kernel gradient sums the same products in another order (per tap, per batch chunk), which
changes float32 rounding by a few ulps of the largest partial sums, never more.
"""

import functools

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
from jax import lax

from resq_jax.ops import conv2d, conv_output_shape
from resq_jax.ops.conv import _kernel_grad, _make_spec

DN = ("NHWC", "HWIO", "NHWC")

# (N, H, W, C_in, C_out, k, strides, padding, groups)
CASES = [
  (2, 7, 9, 3, 5, 3, (1, 1), "SAME", 1),  # odd sizes
  (3, 9, 7, 4, 6, 3, (2, 2), "SAME", 1),  # stride 2, odd input
  (2, 8, 10, 4, 6, 3, (2, 1), "VALID", 1),  # anisotropic stride
  (2, 11, 10, 4, 6, 5, (2, 2), ((2, 1), (0, 3)), 2),  # 5x5, explicit asymmetric, groups 2
  (2, 9, 9, 6, 12, 3, (2, 2), "SAME", 6),  # depthwise, channel multiplier 2
  (2, 8, 8, 6, 6, 3, (1, 1), ((1, -1), (2, 0)), 6),  # depthwise, negative (cropping) padding
  (1, 6, 5, 3, 4, 3, (1, 1), ((4, 3), (3, 5)), 1),  # padding larger than the kernel
  (2, 8, 8, 5, 7, 1, (1, 1), "SAME", 1),  # 1x1
  (2, 9, 8, 4, 4, 1, (2, 2), "VALID", 1),  # strided 1x1
  (5, 6, 6, 8, 4, 3, (1, 1), "SAME", 4),  # groups 4, prime batch
]


def _lax_conv(x, w, strides, padding, groups):
  return lax.conv_general_dilated(
    x, w, strides, padding, dimension_numbers=DN, feature_group_count=groups
  )


def _normal(shape, seed, dtype=jnp.float32):
  # NumPy rather than jax.random: compiling threefry for every new shape costs ~1-2 s each.
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _random_case(n, h, w_, c_in, c_out, k, groups, dtype=jnp.float32, seed=0):
  x = _normal((n, h, w_, c_in), seed, dtype)
  w = _normal((k, k, c_in // groups, c_out), seed + 100, dtype)
  return x, w


def _assert_close(actual, desired, rel=1e-5):
  desired = np.asarray(desired, np.float64)
  scale = float(np.max(np.abs(desired))) or 1.0
  np.testing.assert_allclose(np.asarray(actual, np.float64), desired, rtol=rel, atol=rel * scale)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"case{i}" for i in range(len(CASES))])
def test_values_and_gradients_match_lax(index):
  n, h, w_, c_in, c_out, k, strides, padding, groups = CASES[index]
  x, w = _random_case(n, h, w_, c_in, c_out, k, groups)
  # Odd cases: chunk_bytes=1 forces one sample per chunk (the lax.scan accumulation path);
  # even cases: the whole batch in one chunk.
  chunk_bytes = 1 if index % 2 else 1 << 30

  def ours(x_, w_):
    return conv2d(
      x_,
      w_,
      strides=strides,
      padding=padding,
      feature_group_count=groups,
      impl="im2col",
      chunk_bytes=chunk_bytes,
    )

  def ref(x_, w_):
    return _lax_conv(x_, w_, strides, padding, groups)

  @jax.jit  # one program for both (compilation dominates the test time)
  def both(a, b, g):
    return [(fn(a, b), *jax.vjp(fn, a, b)[1](g)) for fn in (ours, ref)]

  gy = _normal(jax.eval_shape(ref, x, w).shape, 7)
  (y, dx, dw), (y_ref, dx_ref, dw_ref) = both(x, w, gy)
  assert y.shape == y_ref.shape == conv_output_shape(x.shape, w.shape, strides, padding)
  _assert_close(y, y_ref)
  _assert_close(dx, dx_ref)
  _assert_close(dw, dw_ref)


def test_matches_numpy_definition():
  """Independent oracle: direct NumPy loops for y and dL/dw (stride 2, SAME, groups 2)."""
  x, w = _random_case(2, 7, 6, 4, 6, 3, groups=2, seed=3)
  strides, groups = (2, 2), 2
  (pt, _), (pl, _) = lax.padtype_to_pads((7, 6), (3, 3), strides, "SAME")

  def ours(a, b):
    return conv2d(a, b, strides=strides, feature_group_count=groups, impl="im2col")

  gy = np.random.default_rng(1).standard_normal(jax.eval_shape(ours, x, w).shape)
  y, dw = jax.jit(lambda a, b, g: (ours(a, b), jax.vjp(ours, a, b)[1](g)[1]))(
    x, w, jnp.asarray(gy, jnp.float32)
  )

  xn, wn = np.asarray(x, np.float64), np.asarray(w, np.float64)
  xp = np.pad(xn, ((0, 0), (pt, 3), (pl, 3), (0, 0)))
  cg, og = 2, 3
  y_np, dw_np = np.zeros(y.shape), np.zeros(w.shape)
  for b in range(y.shape[0]):
    for i in range(y.shape[1]):
      for j in range(y.shape[2]):
        for o in range(y.shape[3]):
          g = o // og
          patch = xp[b, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, g * cg : (g + 1) * cg]
          y_np[b, i, j, o] = np.sum(patch * wn[..., o])
          dw_np[..., o] += patch * gy[b, i, j, o]
  _assert_close(y, y_np)
  _assert_close(dw, dw_np)


# One sample of x [7,7,4] plus gy [7,7,5] in float32 is 1764 bytes.
@pytest.mark.parametrize("chunk_bytes", [1, 3 * 1764, 1 << 30])
def test_kernel_grad_chunking_is_exact(chunk_bytes):
  """Chunk of 1 sample, 3 samples (scan over 2 chunks of N=6) and all: same dw, and the loop
  exists in the program only when there is more than one chunk."""
  x, w = _random_case(6, 7, 7, 4, 5, 3, groups=1)
  y, vjp_ref = jax.vjp(lambda a, b: _lax_conv(a, b, (1, 1), "SAME", 1), x, w)
  s = _make_spec(x, w, (1, 1), "SAME", 1, chunk_bytes)
  dw = jax.jit(lambda a, g: _kernel_grad(a, g, w.shape, s))(x, y)
  _assert_close(dw, vjp_ref(y)[1])
  jaxpr = str(jax.make_jaxpr(lambda a, g: _kernel_grad(a, g, w.shape, s))(x, y))
  assert ("scan" in jaxpr) == (chunk_bytes < 1 << 30)


def test_kernel_grad_chunks_target_8192_output_pixels():
  """4 frames of 64x64 (4096 output pixels each) -> 2 chunks of 2 frames (trace only)."""
  x = jax.ShapeDtypeStruct((4, 64, 64, 2), jnp.float32)
  s = _make_spec(x, jax.ShapeDtypeStruct((3, 3, 2, 2), jnp.float32), (1, 1), "SAME", 1, 1 << 30)
  jaxpr = jax.make_jaxpr(lambda a, g: _kernel_grad(a, g, (3, 3, 2, 2), s))(x, x)
  scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
  assert len(scans) == 1 and scans[0].params["length"] == 2


def test_xla_impl_is_plain_lax_and_auto_dispatches_by_backend():
  x, w = _random_case(2, 6, 6, 3, 4, 3, groups=1)
  np.testing.assert_array_equal(conv2d(x, w, impl="xla"), _lax_conv(x, w, (1, 1), "SAME", 1))
  auto = str(jax.make_jaxpr(lambda a, b: conv2d(a, b))(x, w))
  expect_custom = jax.default_backend() == "cpu"
  assert ("custom_vjp_call" in auto) == expect_custom
  assert "custom_vjp_call" not in str(jax.make_jaxpr(lambda a, b: conv2d(a, b, impl="xla"))(x, w))


def test_grad_inside_lax_scan_matches_xla():
  """Recurrence y_t = relu(conv(x_t, w1)) conv w2 + 0.5 y_{t-1} over T=3, both impls."""
  xs = _normal((3, 2, 6, 6, 3), 4)
  w1 = _normal((3, 3, 3, 4), 5) * 0.3
  w2 = _normal((3, 3, 4, 4), 6) * 0.3

  def loss(params, impl):
    def step(y, x_t):
      h = jax.nn.relu(conv2d(x_t, params[0], impl=impl))
      y = conv2d(h, params[1], impl=impl) + 0.5 * y
      return y, jnp.sum(y * y)

    return jnp.sum(lax.scan(step, jnp.zeros((2, 6, 6, 4)), xs)[1])

  g_ours, g_ref = jax.jit(lambda p: [jax.grad(loss)(p, impl) for impl in ("im2col", "xla")])(
    (w1, w2)
  )
  for a, b in zip(g_ours, g_ref):
    _assert_close(a, b, rel=2e-5)


def test_jit_does_not_retrace():
  traces = []

  @jax.jit
  def f(x, w):
    traces.append(1)
    return jax.grad(lambda a, b: jnp.sum(conv2d(a, b, impl="im2col") ** 2), (0, 1))(x, w)

  x, w = _random_case(2, 5, 5, 2, 3, 3, groups=1)
  f(x, w)
  f(x + 1.0, w)
  assert len(traces) == 1


def test_vmap_over_leading_axis(groups=1):
  """vmap of the conv and of its gradient equals a loop over the mapped axis (lax oracle)."""
  x, w = _random_case(6, 6, 6, 4, 4, 3, groups=groups)
  xs = x.reshape(3, 2, 6, 6, 4)

  def loss(x_, w_, conv):
    return jnp.sum(conv(x_, w_) ** 2)

  def ours(x_, w_):
    return conv2d(x_, w_, strides=(2, 2), feature_group_count=groups, impl="im2col")

  def ref(x_, w_):
    return _lax_conv(x_, w_, (2, 2), "SAME", groups)

  @functools.partial(jax.jit, static_argnums=2)
  def mapped(xs_, w_, conv):
    ys = jax.vmap(conv, in_axes=(0, None))(xs_, w_)
    gx, gw = jax.vmap(jax.grad(loss, (0, 1)), in_axes=(0, None, None))(xs_, w_, conv)
    # grad of a vmapped (batched-clip) loss: per-clip weight gradients are summed.
    gw_sum = jax.grad(lambda b: jnp.sum(jax.vmap(loss, (0, None, None))(xs_, b, conv)))(w_)
    return ys, gx, gw, gw_sum

  outs = mapped(xs, w, ours)
  # The oracle loops over the mapped axis in Python (no vmap involved).
  ref_one = jax.jit(lambda a, b: (ref(a, b), *jax.grad(loss, (0, 1))(a, b, ref)))
  ref_loop = [jnp.stack(r) for r in zip(*[ref_one(xs[i], w) for i in range(3)])]
  for out, expected in zip(outs, ref_loop + [jnp.sum(ref_loop[2], axis=0)]):
    _assert_close(out, expected)


def test_check_grads_float64():
  """Finite differences (float64) of reverse-mode derivatives: depthwise with channel
  multiplier 2 and anisotropic stride, and a dense strided VALID conv over 2 batch chunks."""
  with jax.enable_x64(True):
    for shape, groups, strides, padding in [
      ((2, 5, 4, 2, 4), 2, (2, 1), "SAME"),
      ((2, 6, 5, 3, 2), 1, (2, 2), "VALID"),
    ]:
      x, w = _random_case(*shape, 3, groups=groups, dtype=jnp.float64)
      # jit: check_grads evaluates f and its VJP many times; compile them once.
      f = jax.jit(
        lambda a, b, g=groups, s=strides, p=padding: conv2d(
          a, b, strides=s, padding=p, feature_group_count=g, impl="im2col", chunk_bytes=1
        )
      )
      jax.test_util.check_grads(f, (x, w), order=1, modes=("rev",))


@pytest.mark.parametrize("groups", [1, 8])
def test_bfloat16_close_to_float32(groups):
  x, w = _random_case(2, 8, 8, 8, 8, 3, groups=groups, dtype=jnp.bfloat16)

  def run(a, b):
    y, vjp = jax.vjp(lambda a_, b_: conv2d(a_, b_, feature_group_count=groups, impl="im2col"), a, b)
    return (y, *vjp(jnp.ones_like(y)))

  run = jax.jit(run)
  outs = run(x, w)
  refs = run(x.astype(jnp.float32), w.astype(jnp.float32))
  for out, ref in zip(outs, refs):
    assert out.dtype == jnp.bfloat16
    # bf16 has an 8-bit mantissa: inputs are exact, outputs carry one final rounding.
    _assert_close(out.astype(jnp.float32), ref, rel=1e-2)


@pytest.mark.parametrize(
  "kwargs, x_shape, w_shape",
  [
    (dict(impl="cudnn"), (1, 4, 4, 2), (3, 3, 2, 2)),
    (dict(feature_group_count=2), (1, 4, 4, 3), (3, 3, 1, 2)),
    (dict(padding="VALID"), (1, 2, 2, 2), (3, 3, 2, 2)),
    (dict(strides=(0, 1)), (1, 4, 4, 2), (3, 3, 2, 2)),
  ],
)
def test_invalid_arguments_raise(kwargs, x_shape, w_shape):
  with pytest.raises(ValueError):
    conv2d(jnp.zeros(x_shape), jnp.zeros(w_shape), **kwargs)


def test_dtype_mismatch_raises():
  with pytest.raises(ValueError):
    conv2d(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 2), jnp.bfloat16))
