"""fake_quant / quantize / dequantize / PACT against NumPy references and hand-derived values.

Random inputs come from NumPy generators seeded by hypothesis, so that a failure is
reproducible and shapes stay in a small set (each new shape costs XLA compilations).
"""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from resq_jax.quant.calibration import calibrate
from resq_jax.quant.spec import QuantSpec
from resq_jax.quant.uniform import (
  dequantize,
  fake_quant,
  lsq_grad_scale,
  param_shape,
  quantize,
  scale_floor,
)

SHAPES = [(7,), (3, 5), (2, 3, 4), (2, 1, 3, 2)]
FLOOR = np.float32(scale_floor(jnp.float32))
settings = functools.partial(
  hypothesis.settings,
  deadline=None,
  derandomize=True,
  suppress_health_check=[hypothesis.HealthCheck.too_slow],
)


# ----------------------------------------------------------------------------------------------
# NumPy reference and strategies


def _np_expand(p, x_shape, spec):
  shape = [1] * len(x_shape)
  if spec.channel_axis is not None:
    shape[spec.channel_axis] = x_shape[spec.channel_axis]
  return np.reshape(np.asarray(p, np.float32), shape)


def np_qparams(x_shape, scale, zero_point, spec):
  """Effective (floored scale, rounded and clamped zero point), broadcastable against x."""
  s = np.maximum(_np_expand(scale, x_shape, spec), FLOOR)
  if spec.symmetric or zero_point is None:
    z = np.zeros_like(s)
  else:
    z = np.clip(np.round(_np_expand(zero_point, x_shape, spec)), spec.qmin, spec.qmax)
  return s, z.astype(np.float32)


def np_fake_quant(x, scale, zero_point, spec):
  """float32 NumPy reference of the PyTorch/ONNX convention (np.round is half to even)."""
  x = np.asarray(x, np.float32)
  s, z = np_qparams(x.shape, scale, zero_point, spec)
  u = x * (np.float32(1) / s)  # PyTorch: inv_scale = 1.0f / scale; nearbyint(x * inv_scale) + z
  q = np.clip(np.round(u) + z, spec.qmin, spec.qmax).astype(np.float32)
  return (q - z) * s


@st.composite
def specs(draw, bits=st.integers(1, 16), ndim=None):
  b = draw(bits)
  signed = draw(st.booleans())
  narrow = signed and b >= 2 and draw(st.booleans())
  axis = None
  if ndim is not None and draw(st.booleans()):
    axis = draw(st.integers(-ndim, ndim - 1))
  return QuantSpec(
    bits=b, signed=signed, symmetric=draw(st.booleans()), narrow_range=narrow, channel_axis=axis
  )


@st.composite
def cases(draw, bits=st.integers(1, 16)):
  """(x, scale, zero_point, spec): random shape, axis, parameters; some inputs clip."""
  shape = draw(st.sampled_from(SHAPES))
  spec = draw(specs(bits=bits, ndim=len(shape)))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  pshape = param_shape(shape, spec)
  scale = np.exp(rng.uniform(-4, 2, pshape)).astype(np.float32)
  # Non-integer zero points exercise the rounding and clamping of the offset as well.
  zero_point = rng.uniform(spec.qmin - 2, spec.qmax + 2, pshape).astype(np.float32)
  if spec.symmetric:
    zero_point = None  # a symmetric grid has no zero point (a non-zero one is a ValueError)
  span = _np_expand(scale, shape, spec) * (spec.qmax - spec.qmin + 1)
  x = (rng.normal(size=shape) * span).astype(np.float32)
  return x, scale, zero_point, spec


# ----------------------------------------------------------------------------------------------
# Forward values


@settings(max_examples=25)
@hypothesis.given(cases())
def test_fake_quant_equals_numpy_reference(case):
  # Jitted: one compilation per example costs less than eager dispatch of new shapes; the
  # eager path is compared with the same reference in the round-trip and idempotence tests.
  x, scale, zero_point, spec = case
  got = jax.jit(fake_quant, static_argnames="spec")(x, scale, zero_point, spec=spec)
  np.testing.assert_array_equal(np.asarray(got), np_fake_quant(x, scale, zero_point, spec))


def test_round_half_to_even_hand_values():
  x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.49], np.float32)
  got = fake_quant(x, 1.0, spec=QuantSpec(bits=8))
  np.testing.assert_array_equal(np.asarray(got), [0, 2, 2, 0, -2, -2, 3])


def test_fake_quant_per_channel_hand_values():
  # Axis -2 of a (2, 3) input: row 0 uses scale 0.5, row 1 scale 2 (4-bit signed: [-8, 7]).
  spec = QuantSpec(bits=4, narrow_range=False, channel_axis=-2)
  x = np.array([[0.3, 1.0, 9.0], [3.1, -20.0, 1.0]], np.float32)
  got = fake_quant(x, np.array([0.5, 2.0], np.float32), spec=spec)
  np.testing.assert_array_equal(np.asarray(got), [[0.5, 1.0, 3.5], [4.0, -16.0, 0.0]])


@settings(max_examples=15)
@hypothesis.given(cases(), st.integers(0, 2**32 - 1))
def test_grid_values_round_trip_exactly(case, seed):
  x, scale, zero_point, spec = case
  s, z = np_qparams(x.shape, scale, zero_point, spec)
  q = np.random.default_rng(seed).integers(spec.qmin, spec.qmax + 1, x.shape)
  grid = ((q.astype(np.float32) - z) * s).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(fake_quant(grid, scale, zero_point, spec=spec)), grid)
  np.testing.assert_array_equal(np.asarray(quantize(grid, scale, zero_point, spec=spec)), q)


@settings(max_examples=15)
@hypothesis.given(cases())
def test_idempotent_and_quantize_dequantize(case):
  x, scale, zero_point, spec = case
  once = fake_quant(x, scale, zero_point, spec=spec)
  np.testing.assert_array_equal(
    np.asarray(fake_quant(once, scale, zero_point, spec=spec)), np.asarray(once)
  )
  q = quantize(x, scale, zero_point, spec=spec)
  assert q.dtype == jnp.int32
  assert spec.qmin <= int(q.min()) and int(q.max()) <= spec.qmax
  np.testing.assert_array_equal(
    np.asarray(dequantize(q, scale, zero_point, spec=spec)), np.asarray(once)
  )


# ----------------------------------------------------------------------------------------------
# Gradients (hand-derived)


def test_ste_gradient_wrt_x():
  # 4-bit signed wide grid, s = 0.5: codes round(x / s) in [-8, 7] pass the gradient (PyTorch's
  # mask is on the rounded code): x = 3.6 -> round(7.2) = 7 inside, 3.8 -> 8 outside,
  # -4.2 -> round(-8.4) = -8 inside, -4.3 -> -9 outside.
  spec = QuantSpec(bits=4, narrow_range=False)
  x = jnp.array([-5.0, -4.3, -4.2, -1.3, 0.0, 2.2, 3.5, 3.6, 3.8, 100.0])
  g = jax.grad(lambda x: jnp.sum(fake_quant(x, 0.5, spec=spec)))(x)
  np.testing.assert_array_equal(np.asarray(g), [0, 0, 1, 1, 1, 1, 1, 1, 0, 0])


def test_lsq_scale_gradient_hand_values():
  # v = x / s = [0.6, -2.2, 10, -12] on [-8, 7]: inside round(v) - v = [0.4, 0.2];
  # clipped ends give qmax - z = 7 and qmin - z = -8. Sum: 0.4 + 0.2 + 7 - 8 = -0.4.
  spec = QuantSpec(bits=4, narrow_range=False)
  x = jnp.array([0.3, -1.1, 5.0, -6.0])
  loss = lambda s, gs: jnp.sum(fake_quant(x, s, spec=spec, grad_scale=gs))
  np.testing.assert_allclose(jax.grad(loss)(jnp.float32(0.5), 1.0), -0.4, rtol=1e-6)
  # Default grad_scale: 1 / sqrt(N * qmax) with N = 4 elements, qmax = 7.
  assert lsq_grad_scale(x.shape, spec) == pytest.approx(1 / np.sqrt(28))
  np.testing.assert_allclose(jax.grad(loss)(jnp.float32(0.5), None), -0.4 / np.sqrt(28), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(fake_quant(x, 0.5, spec=spec)), [0.5, -1, 3.5, -4])


def test_lsq_plus_scale_and_zero_point_gradients_hand_values():
  # Unsigned 4-bit [0, 15], s = 0.5, z = 3: v = x / s + z = [3.6, 0.8, 17, -1], q = [4, 1, 15, 0].
  # d/ds: [4 - 3.6, 1 - 0.8, 15 - 3, 0 - 3] = [0.4, 0.2, 12, -3] -> 9.6.
  # d/dz (integer units): 0 inside, -s outside -> -1.0.  dx: [1, 1, 0, 0].
  spec = QuantSpec(bits=4, signed=False, symmetric=False)
  x = jnp.array([0.3, -1.1, 7.0, -2.0])
  f = lambda x, s, z, gs: jnp.sum(fake_quant(x, s, z, spec=spec, grad_scale=gs))
  dx, ds, dz = jax.grad(f, argnums=(0, 1, 2))(x, jnp.float32(0.5), jnp.float32(3.0), 1.0)
  np.testing.assert_array_equal(np.asarray(dx), [1, 1, 0, 0])
  np.testing.assert_allclose(ds, 9.6, rtol=1e-6)
  np.testing.assert_allclose(dz, -1.0, rtol=1e-6)
  gs = 1 / np.sqrt(4 * 15)
  _, ds, dz = jax.grad(f, argnums=(0, 1, 2))(x, jnp.float32(0.5), jnp.float32(3.0), None)
  np.testing.assert_allclose([ds, dz], [9.6 * gs, -1.0 * gs], rtol=1e-6)
  np.testing.assert_array_equal(
    np.asarray(fake_quant(x, 0.5, 3.0, spec=spec)), [0.5, -1.0, 6.0, -1.5]
  )


@pytest.mark.parametrize("axis", [0, -2])
def test_lsq_per_channel_gradient_reduces_per_channel(axis):
  # Rows are channels (4-bit signed, [-8, 7]); N = 3 elements per channel.
  # Row 0, s = 0.5: v = [0.6, -2.2, 10] -> 0.4 + 0.2 + 7 = 7.6.
  # Row 1, s = 2.0: v = [1.25, -5, -4.5 (tie -> -4)] -> -0.25 + 0 + 0.5 = 0.25.
  spec = QuantSpec(bits=4, narrow_range=False, channel_axis=axis)
  x = jnp.array([[0.3, -1.1, 5.0], [2.5, -10.0, -9.0]])
  s = jnp.array([0.5, 2.0])
  ds = jax.grad(lambda s: jnp.sum(fake_quant(x, s, spec=spec, grad_scale=1.0)))(s)
  np.testing.assert_allclose(ds, [7.6, 0.25], rtol=1e-6)
  ds = jax.grad(lambda s: jnp.sum(fake_quant(x, s, spec=spec)))(s)
  np.testing.assert_allclose(ds, np.array([7.6, 0.25]) / np.sqrt(3 * 7), rtol=1e-6)
  # The transposed layout with the channel axis last gives the same gradient.
  spec_t = QuantSpec(bits=4, narrow_range=False, channel_axis=-1)
  ds_t = jax.grad(lambda s: jnp.sum(fake_quant(x.T, s, spec=spec_t)))(s)
  np.testing.assert_allclose(ds_t, ds, rtol=1e-6)


def test_lsq_gradient_is_true_derivative_where_clipped():
  # The quantizer is piecewise constant in x (true derivative 0, STE says 1), so check_grads
  # cannot apply to x. Where every element is clipped, x_hat = (qmax - z) * s or (qmin - z) * s
  # is linear in s, and the LSQ gradient is then the exact derivative: finite differences agree.
  spec = QuantSpec(bits=3, signed=False, symmetric=False)
  x = jnp.array([50.0, 80.0, -30.0])
  f = lambda s: fake_quant(x, s, 2.0, spec=spec, grad_scale=1.0)
  check_grads(f, (jnp.float32(1.5),), order=1, modes=("rev",), eps=1e-2, rtol=1e-2)


# ----------------------------------------------------------------------------------------------
# Transformations


def test_jit_matches_eager_and_does_not_retrace():
  spec = QuantSpec(bits=5, signed=False, symmetric=False, channel_axis=1)
  x, s, z = (
    np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32),
    [0.1, 0.2, 0.3],
    [3.0, 7.0, 12.0],
  )
  s, z = np.asarray(s, np.float32), np.asarray(z, np.float32)
  traces = []

  @jax.jit
  def f(x, s, z):
    traces.append(1)
    return fake_quant(x, s, z, spec=spec)

  np.testing.assert_array_equal(np.asarray(f(x, s, z)), np_fake_quant(x, s, z, spec))
  np.testing.assert_array_equal(np.asarray(f(2 * x, s, z)), np_fake_quant(2 * x, s, z, spec))
  assert len(traces) == 1


def test_quantize_jaxpr_produces_int32():
  jaxpr = jax.make_jaxpr(functools.partial(quantize, spec=QuantSpec(bits=8)))(jnp.ones(3), 0.1)
  assert jaxpr.out_avals[0].dtype == jnp.int32


def test_vmap_per_tensor_equals_per_channel_rows():
  # vmap over rows with a per-tensor spec == one call with channel_axis=0 == a loop over rows,
  # for the values and for the LSQ scale gradient (N = 6 per row in all three).
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(4, 6)).astype(np.float32) * 3)
  s = jnp.asarray([0.1, 0.3, 0.5, 1.0], jnp.float32)
  tensor, channel = QuantSpec(bits=3), QuantSpec(bits=3, channel_axis=0)
  vm = jax.vmap(lambda x, s: fake_quant(x, s, spec=tensor))(x, s)
  np.testing.assert_array_equal(np.asarray(vm), np.asarray(fake_quant(x, s, spec=channel)))
  np.testing.assert_array_equal(np.asarray(vm), np_fake_quant(x, s, None, channel))
  row_loss = lambda x, s: jnp.sum(fake_quant(x, s, spec=tensor))
  row_grad = jax.jit(jax.grad(row_loss, argnums=1))
  g_vmap = jax.jit(jax.vmap(row_grad))(x, s)
  g_chan = jax.jit(jax.grad(lambda s: jnp.sum(fake_quant(x, s, spec=channel))))(s)
  g_loop = [row_grad(x[i], s[i]) for i in range(4)]
  np.testing.assert_allclose(g_vmap, g_chan, rtol=1e-6)
  np.testing.assert_allclose(g_vmap, g_loop, rtol=1e-6)


def test_inside_scan_matches_python_loop():
  spec = QuantSpec(bits=4, signed=False, symmetric=False)
  frames = jnp.asarray(np.random.default_rng(2).normal(size=(5, 8)).astype(np.float32))

  def loss(s, z, scan):
    if scan:

      def body(acc, f):
        return acc + jnp.sum(fake_quant(f, s, z, spec=spec) ** 2), None

      return jax.lax.scan(body, jnp.float32(0), frames)[0]
    return sum(jnp.sum(fake_quant(f, s, z, spec=spec) ** 2) for f in frames)

  args = (jnp.float32(0.2), jnp.float32(7.0))
  np.testing.assert_allclose(loss(*args, True), loss(*args, False), rtol=1e-6)
  g_scan = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(*args, True)
  g_loop = jax.grad(loss, argnums=(0, 1))(*args, False)
  np.testing.assert_allclose(g_scan, g_loop, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Properties over extreme inputs


def _extreme_input(kind, shape, rng):
  if kind == "normal":
    return rng.normal(size=shape) * 10.0 ** rng.uniform(-30, 30)
  if kind == "constant":
    return np.full(shape, rng.normal() * 10.0 ** rng.uniform(-30, 30))
  if kind == "zeros":
    return np.zeros(shape)
  if kind == "tiny":
    return np.full(shape, 1e-30) * rng.choice([-1, 1], shape)
  if kind == "huge":
    return np.full(shape, 1e30) * rng.choice([-1, 1], shape)
  return rng.choice([-1e30, -1e-30, 0.0, 1e-30, 1e30, 1.0], shape)  # "mixed"


@settings(max_examples=25)
@hypothesis.given(
  kind=st.sampled_from(["normal", "constant", "zeros", "tiny", "huge", "mixed"]),
  case=cases(),
  how=st.sampled_from(["given", "minmax", "percentile", "mse"]),
  seed=st.integers(0, 2**32 - 1),
)
def test_outputs_finite_on_grid_and_in_range(kind, case, how, seed):
  _, scale, zero_point, spec = case
  rng = np.random.default_rng(seed)
  x = _extreme_input(kind, case[0].shape, rng).astype(np.float32)
  if how != "given":
    scale, zero_point = (np.asarray(p) for p in calibrate(x, spec, how))
  x_hat = np.asarray(fake_quant(x, scale, zero_point, spec=spec)).astype(np.float64)
  assert np.all(np.isfinite(x_hat))
  assert np.all(np.isfinite(scale)) and np.all(np.asarray(scale) > 0)
  s, z = (p.astype(np.float64) for p in np_qparams(x.shape, scale, zero_point, spec))
  k = x_hat / s + z
  # float32 products (q - z) * s carry a relative error of 2^-24 per factor.
  np.testing.assert_allclose(k, np.round(k), atol=1e-6 + 1e-6 * np.max(np.abs(k)))
  assert np.all(np.round(k) >= spec.qmin) and np.all(np.round(k) <= spec.qmax)
  lo, hi = (spec.qmin - z) * s, (spec.qmax - z) * s
  tol = 1e-6 * np.maximum(np.abs(lo), np.abs(hi))
  assert np.all(x_hat >= lo - tol) and np.all(x_hat <= hi + tol)


# ----------------------------------------------------------------------------------------------
# Bad arguments


@pytest.mark.parametrize(
  "bits, pattern", [(0, r"bits.*0"), (17, r"bits.*17"), (8.0, r"bits.*8\.0"), (True, r"bits.*True")]
)
def test_bad_bits(bits, pattern):
  with pytest.raises(ValueError, match=pattern):
    QuantSpec(bits=bits)


def test_narrow_range_needs_signed():
  with pytest.raises(ValueError, match=r"narrow_range=True.*signed"):
    QuantSpec(bits=8, signed=False, narrow_range=True)


@pytest.mark.parametrize(
  "scale, pattern", [(0.0, r"scale.*0\.0"), (-0.5, r"scale.*-0\.5"), (np.nan, r"scale.*nan")]
)
def test_non_positive_scale(scale, pattern):
  with pytest.raises(ValueError, match=pattern):
    fake_quant(jnp.ones(3), scale, spec=QuantSpec())
  with pytest.raises(ValueError, match=pattern):
    quantize(jnp.ones(3), scale, spec=QuantSpec())


@pytest.mark.parametrize("axis", [2, -3])
def test_channel_axis_out_of_range(axis):
  with pytest.raises(ValueError, match=rf"channel_axis={axis}"):
    fake_quant(jnp.ones((2, 3)), jnp.ones(3), spec=QuantSpec(channel_axis=axis))


def test_parameter_shape_mismatch():
  spec = QuantSpec(channel_axis=-1, symmetric=False, signed=False)
  with pytest.raises(ValueError, match=r"scale has shape \(4,\), expected \(3,\)"):
    fake_quant(jnp.ones((2, 3)), jnp.ones(4), spec=spec)
  with pytest.raises(ValueError, match=r"zero_point has shape \(2,\), expected \(3,\)"):
    fake_quant(jnp.ones((2, 3)), jnp.ones(3), jnp.zeros(2), spec=spec)
  with pytest.raises(ValueError, match=r"scale has shape \(2,\), expected \(3,\)"):
    dequantize(jnp.ones((2, 3), jnp.int32), jnp.ones(2), spec=spec)


# ----------------------------------------------------------------------------------------------
# Rounding convention at ties and near-ties (PyTorch: nearbyint(x * inv_scale) + z)


def test_zero_point_is_added_after_rounding_hand_values():
  # Unsigned 8-bit, s = 1, z = 1: round([0.5, 1.5, 2.5]) = [0, 2, 2] (half to even), then + z.
  # round(x / s + z) would give [2, 2, 4] -> x_hat [1, 1, 3]: one step off at every tie.
  spec = QuantSpec(bits=8, signed=False, symmetric=False)
  x = jnp.array([0.5, 1.5, 2.5])
  np.testing.assert_array_equal(np.asarray(fake_quant(x, 1.0, 1.0, spec=spec)), [0, 2, 2])
  np.testing.assert_array_equal(np.asarray(quantize(x, 1.0, 1.0, spec=spec)), [1, 3, 3])


def _tie_inputs(scale):
  """Exact ties k + 0.5 and the float32 neighbours on each side, times ``scale``."""
  k = np.arange(-6, 6, dtype=np.float32) + np.float32(0.5)
  near = np.concatenate(
    [k, np.nextafter(k, np.float32(-np.inf)), np.nextafter(k, np.float32(np.inf))]
  )
  return (near * np.float32(scale)).astype(np.float32)


@pytest.mark.parametrize("zero_point", [0.0, 1.0, 2.0, 3.0, 7.0, 8.0, 115.0])
@pytest.mark.parametrize("scale", [1.0, 0.1, 0.37, 3.0])
@pytest.mark.parametrize("how", ["eager", "jit"])
def test_ties_and_near_ties_match_pytorch_convention(zero_point, scale, how):
  # Odd and even zero points; with s != 1 the products x * (1/s) land on and next to ties.
  spec = QuantSpec(bits=8, signed=False, symmetric=False)
  x = _tie_inputs(scale)
  want = np_fake_quant(x, np.float32(scale), np.float32(zero_point), spec)
  fq = functools.partial(fake_quant, spec=spec)
  qz = functools.partial(quantize, spec=spec)
  if how == "jit":
    fq, qz = jax.jit(fq), jax.jit(qz)
  got = fq(jnp.asarray(x), jnp.float32(scale), jnp.float32(zero_point))
  np.testing.assert_array_equal(np.asarray(got), want)
  codes = qz(jnp.asarray(x), jnp.float32(scale), jnp.float32(zero_point))
  s = np.float32(scale)
  want_codes = np.clip(np.round(x * (np.float32(1) / s)) + np.float32(zero_point), 0, 255)
  np.testing.assert_array_equal(np.asarray(codes), want_codes.astype(np.int32))


def test_near_tie_below_half_with_odd_zero_point():
  # u = 0.49999997 rounds to 0; u + 1 = 1.49999997 is not representable in float32 and becomes
  # 1.5, which rounds to 2: adding z before rounding lands one step off.
  spec = QuantSpec(bits=8, signed=False, symmetric=False)
  u = np.nextafter(np.float32(0.5), np.float32(0))
  for f in (fake_quant, jax.jit(fake_quant, static_argnames="spec")):
    assert float(f(jnp.float32(u), jnp.float32(1.0), jnp.float32(1.0), spec=spec)) == 0.0


def test_lsq_gradient_scale_counts_features_per_example():
  # batch_dims=1: N excludes the batch axis, so the gradient of a batch is the sum of the
  # gradients of its examples run one by one.
  spec = QuantSpec(bits=4, signed=False, symmetric=False)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(6, 5, 3)).astype(np.float32))
  assert lsq_grad_scale(x.shape, spec, batch_dims=1) == pytest.approx(1 / np.sqrt(15 * 15))
  assert lsq_grad_scale(x.shape, spec) == pytest.approx(1 / np.sqrt(90 * 15))

  def grads(batch):
    f = lambda s, z: jnp.sum(jnp.sin(fake_quant(batch, s, z, spec=spec, batch_dims=1)))
    return jax.grad(f, argnums=(0, 1))(jnp.float32(0.2), jnp.float32(5.0))

  whole = grads(x)
  parts = [grads(x[i : i + 2]) for i in range(0, 6, 2)]
  np.testing.assert_allclose(whole, np.sum(parts, axis=0), rtol=1e-5)
  with pytest.raises(ValueError, match="batch axis"):
    lsq_grad_scale((4, 3), QuantSpec(bits=4, channel_axis=0), batch_dims=1)
  with pytest.raises(ValueError, match="batch_dims"):
    lsq_grad_scale((4, 3), spec, batch_dims=3)


def test_symmetric_spec_rejects_non_zero_zero_point():
  spec = QuantSpec(bits=4)
  x = jnp.ones(3)
  for f in (fake_quant, quantize):
    with pytest.raises(ValueError, match="symmetric spec has no zero point"):
      f(x, 0.5, 1.0, spec=spec)
    np.testing.assert_array_equal(
      np.asarray(f(x, 0.5, 0.0, spec=spec)), np.asarray(f(x, 0.5, spec=spec))
    )
  with pytest.raises(ValueError, match="symmetric spec has no zero point"):
    dequantize(jnp.ones(3, jnp.int32), 0.5, 2.0, spec=spec)


def test_one_narrow_range_convention():
  from resq_jax.quant.spec import activation_spec, residual_spec, weight_spec

  # Signed symmetric grids of >= 2 bits are narrow unless asked otherwise, like the helpers.
  assert QuantSpec(bits=8) == weight_spec(8, channel_axis=None) == residual_spec(8)
  assert (QuantSpec(bits=8).qmin, QuantSpec(bits=8).qmax) == (-127, 127)
  assert QuantSpec(bits=8, narrow_range=False).qmin == -128
  assert QuantSpec(bits=1).qmin == -1 and not QuantSpec(bits=1).narrow_range
  assert not QuantSpec(bits=8, symmetric=False).narrow_range  # offset grids stay wide
  assert activation_spec(8).qmin == 0 and not activation_spec(8).narrow_range
