"""Range setting (min-max, percentile, MSE, EMA) and qparams against NumPy and hand values."""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.quant.calibration import (
  calibrate,
  lsq_init_scale,
  lsq_range,
  minmax_range,
  mse_range,
  percentile_range,
  range_to_qparams,
)
from resq_jax.quant.spec import QuantSpec
from resq_jax.quant.uniform import fake_quant, param_shape, scale_floor

SHAPES = [(40,), (12, 5), (3, 8, 4)]
settings = functools.partial(
  hypothesis.settings,
  deadline=None,
  derandomize=True,
  suppress_health_check=[hypothesis.HealthCheck.too_slow],
)


@st.composite
def specs(draw, ndim, bits=st.integers(1, 16)):
  b = draw(bits)
  signed = draw(st.booleans())
  axis = draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1)))
  return QuantSpec(
    bits=b,
    signed=signed,
    symmetric=draw(st.booleans()),
    narrow_range=signed and b >= 2 and draw(st.booleans()),
    channel_axis=axis,
  )


@st.composite
def cases(draw, bits=st.integers(1, 16)):
  """(x, spec): channels with different spreads and offsets, so per-channel ranges differ."""
  shape = draw(st.sampled_from(SHAPES))
  spec = draw(specs(len(shape), bits))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  x = rng.normal(size=shape) * np.exp(rng.uniform(-3, 3, shape[-1])) + rng.normal(size=shape[-1])
  if spec.symmetric and not spec.signed:
    x = np.abs(x)  # a zero-point-0 unsigned grid is meant for non-negative data
  return x.astype(np.float32), spec


def np_channels(x, spec):
  """Per-channel slices of x (one slice, x itself, per tensor)."""
  if spec.channel_axis is None:
    return [x]
  return [np.take(x, c, axis=spec.channel_axis) for c in range(x.shape[spec.channel_axis])]


def np_per_channel(fn, x, spec):
  return np.reshape(np.array([fn(c) for c in np_channels(x, spec)]), param_shape(x.shape, spec))


def expand(p, x_shape, spec):
  shape = [1] * len(x_shape)
  if spec.channel_axis is not None:
    shape[spec.channel_axis] = x_shape[spec.channel_axis]
  return np.reshape(np.asarray(p), shape)


def np_range_to_qparams(lo, hi, spec):
  """float64 reference of the documented rule (scale floor 1e-12 for float32)."""
  lo, hi = np.minimum(np.float64(lo), 0), np.maximum(np.float64(hi), 0)
  steps = spec.qmax - spec.qmin
  if spec.symmetric:
    scale = (max(-lo, hi) / (steps / 2)) if spec.signed else hi / steps
  else:
    scale = (hi - lo) / steps
  scale = max(scale, 1e-12)
  zero_point = (
    0.0 if spec.symmetric else np.clip(spec.qmin - np.round(lo / scale), spec.qmin, spec.qmax)
  )
  return scale, zero_point


def np_fake_quant(x, scale, zero_point, spec):
  """float32 NumPy reference of fake_quant (as in test_quant_uniform; np.round is half-even)."""
  s = np.maximum(expand(scale, x.shape, spec).astype(np.float32), np.float32(1e-12))
  z = np.clip(np.round(expand(zero_point, x.shape, spec)), spec.qmin, spec.qmax).astype(np.float32)
  return (np.clip(np.round(x / s + z), spec.qmin, spec.qmax).astype(np.float32) - z) * s


def sq_error(x, scale, zero_point, spec):
  """Per-channel sum of squared fake-quantization errors (float64)."""
  err = np_fake_quant(x, scale, zero_point, spec).astype(np.float64) - x
  axes = tuple(
    i for i in range(x.ndim) if spec.channel_axis is None or i != spec.channel_axis % x.ndim
  )
  return np.sum(err**2, axis=axes)


def sq_error_tol(x, spec):
  """Float32 rounding noise of sq_error: (a few ulps of max|x|)^2 per element."""
  return x.size / max(1, np.prod(param_shape(x.shape, spec))) * (1e-6 * np.max(np.abs(x))) ** 2


# ----------------------------------------------------------------------------------------------
# Ranges


@settings(max_examples=8)
@hypothesis.given(cases())
def test_minmax_equals_numpy(case):
  x, spec = case
  lo, hi = minmax_range(x, spec)
  assert lo.shape == hi.shape == param_shape(x.shape, spec)
  np.testing.assert_array_equal(np.asarray(lo), np_per_channel(np.min, x, spec))
  np.testing.assert_array_equal(np.asarray(hi), np_per_channel(np.max, x, spec))


@settings(max_examples=8)
@hypothesis.given(cases(), st.sampled_from([50.0, 90.0, 99.0, 99.99, 100.0]))
def test_percentile_equals_numpy(case, p):
  x, spec = case
  lo, hi = percentile_range(x, spec, percentile=p)
  if spec.signed and spec.symmetric:
    want_hi = np_per_channel(lambda c: np.percentile(np.abs(c), p), x, spec)
    want_lo = -want_hi
  else:
    want_lo = np_per_channel(lambda c: np.percentile(c, 100 - p), x, spec)
    want_hi = np_per_channel(lambda c: np.percentile(c, p), x, spec)
  np.testing.assert_allclose(lo, want_lo, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(hi, want_hi, rtol=1e-5, atol=1e-6)


def np_grid_search(x, spec, num):
  """Coarse NumPy grid search of the shrink factor: best squared error per channel."""
  lo, hi = (np.asarray(r) for r in minmax_range(x, spec))
  best = np.full(lo.shape, np.inf)
  for k in range(1, num + 1):
    a = np.float32(k) / np.float32(num)
    params = [
      np_range_to_qparams(lo_, hi_, spec) for lo_, hi_ in zip(np.ravel(a * lo), np.ravel(a * hi))
    ]
    scale, zp = (np.reshape(np.array(p, np.float32), lo.shape) for p in zip(*params))
    best = np.minimum(best, sq_error(x, scale, zp, spec))
  return best


@settings(max_examples=5)
@hypothesis.given(cases(bits=st.integers(2, 8)))
def test_mse_no_worse_than_minmax_and_numpy_grid(case):
  x, spec = case
  err = lambda r: sq_error(x, *range_to_qparams(*r, spec), spec)
  e_mse = err(mse_range(x, spec, num_candidates=40))
  tol = sq_error_tol(x, spec)
  np.testing.assert_array_less(e_mse, err(minmax_range(x, spec)) * (1 + 1e-5) + tol)
  # 1/10, 2/10, ... are among the candidates k/40, so the search must match or beat them.
  np.testing.assert_array_less(e_mse, np_grid_search(x, spec, 10) * (1 + 1e-5) + tol)


@pytest.mark.parametrize(
  "spec",
  [
    QuantSpec(bits=4, narrow_range=True),
    QuantSpec(bits=4, signed=False, symmetric=False, channel_axis=1),
  ],
)
def test_mse_clips_heavy_tails(spec):
  # Laplace samples (kurtosis 6): a 4-bit min-max range wastes levels on a few outliers.
  x = np.random.default_rng(0).laplace(size=(4000, 3)).astype(np.float32)
  lo, hi = (np.asarray(r) for r in mse_range(x, spec))
  np.testing.assert_array_less(hi, np.max(np.abs(x)) if spec.symmetric else np.max(x, axis=0))
  e_mse = sq_error(x, *range_to_qparams(lo, hi, spec), spec)
  e_minmax = sq_error(x, *calibrate(x, spec, "minmax"), spec)
  np.testing.assert_array_less(e_mse, 0.8 * e_minmax)  # a clear win, not a tie
  np.testing.assert_array_less(e_mse, np_grid_search(x, spec, 20) * (1 + 1e-5))


def test_mse_per_channel_equals_per_tensor_on_each_channel():
  # A channel's error depends only on its own scale, so per-channel search == separate searches.
  x = np.random.default_rng(1).standard_t(3, size=(300, 4)).astype(np.float32)
  x = x * np.array([0.1, 1.0, 10.0, 100.0], np.float32)
  spec = QuantSpec(bits=3, channel_axis=1)
  lo, hi = mse_range(x, spec, num_candidates=50)
  for c in range(4):
    lo_c, hi_c = mse_range(x[:, c], spec.replace(channel_axis=None), num_candidates=50)
    np.testing.assert_allclose([lo[c], hi[c]], [lo_c, hi_c], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Quantization parameters


@pytest.mark.parametrize(
  "spec, lo, hi, scale, zero_point",
  [
    # Asymmetric: scale = (hi - lo) / (qmax - qmin), zp = qmin - round(lo / scale).
    (QuantSpec(8, signed=False, symmetric=False), -1.0, 3.0, 4 / 255, 64),  # round(63.75)
    (QuantSpec(8, signed=True, symmetric=False), -1.0, 3.0, 4 / 255, -64),
    (QuantSpec(8, signed=False, symmetric=False), 2.0, 5.0, 5 / 255, 0),  # widened to [0, 5]
    (QuantSpec(8, signed=False, symmetric=False), -5.0, -2.0, 5 / 255, 255),  # [-5, 0]
    (QuantSpec(4, signed=False, symmetric=False), -0.5, 1.0, 0.1, 5),
    # Signed symmetric: amax / ((qmax - qmin) / 2); 127.5 on the full grid, 127 when narrow.
    (QuantSpec(8, narrow_range=False), -2.0, 1.0, 2 / 127.5, 0),
    (QuantSpec(8, narrow_range=True), -2.0, 1.0, 2 / 127, 0),
    (QuantSpec(2, narrow_range=True), -0.5, 3.0, 3.0, 0),  # grid [-1, 1]
    (QuantSpec(1), -1.0, 1.0, 2.0, 0),  # grid [-1, 0], steps 1 -> scale 2 * amax
    # Unsigned symmetric (zero point 0): [0, hi] only.
    (QuantSpec(8, signed=False), -2.0, 1.0, 1 / 255, 0),
    # Constant zero: the scale floor, and for asymmetric grids zero sits at qmin.
    (QuantSpec(8, symmetric=False), 0.0, 0.0, 1e-12, -128),
  ],
)
def test_range_to_qparams_hand_values(spec, lo, hi, scale, zero_point):
  s, z = range_to_qparams(jnp.float32(lo), jnp.float32(hi), spec)
  np.testing.assert_allclose(s, scale, rtol=1e-6)
  assert float(z) == zero_point


@settings(max_examples=10)
@hypothesis.given(cases())
def test_minmax_calibration_error_at_most_half_step(case):
  x, spec = case
  scale, zero_point = calibrate(x, spec, "minmax")
  s = expand(scale, x.shape, spec).astype(np.float64)
  err = np.abs(np.asarray(fake_quant(x, scale, zero_point, spec=spec), np.float64) - x)
  # float32 rounding of x / s + z costs up to ~2^-23 * |x / s + z| steps, i.e. <= 2^(b-22) s.
  tol = s * (0.5 + 2.0 ** (spec.bits - 21)) + 1e-6 * np.abs(x)
  assert np.all(err <= tol), float(np.max(err / s))


@settings(max_examples=8)
@hypothesis.given(cases())
def test_per_channel_qparams_equal_numpy(case):
  x, spec = case
  for method, rng_fn in [
    ("minmax", lambda c: (c.min(), c.max())),
    (
      "percentile",
      lambda c: (
        (np.percentile(c, 0.01), np.percentile(c, 99.99))
        if not (spec.signed and spec.symmetric)
        else (-np.percentile(np.abs(c), 99.99), np.percentile(np.abs(c), 99.99))
      ),
    ),
  ]:
    scale, zero_point = calibrate(x, spec, method)
    assert scale.shape == zero_point.shape == param_shape(x.shape, spec)
    want = [np_range_to_qparams(*rng_fn(c), spec) for c in np_channels(x, spec)]
    np.testing.assert_allclose(np.ravel(scale), [w[0] for w in want], rtol=1e-5)
    # Zero points from the implementation's own scale: the rounding must match exactly.
    lo = np.ravel(
      np.minimum(
        np.asarray(
          percentile_range(x, spec, 99.99)[0]
          if method == "percentile"
          else minmax_range(x, spec)[0]
        ),
        0,
      )
    )
    want_z = (
      np.zeros_like(lo)
      if spec.symmetric
      else np.clip(spec.qmin - np.round(lo / np.ravel(scale)), spec.qmin, spec.qmax)
    )
    np.testing.assert_array_equal(np.ravel(zero_point), want_z)


@pytest.mark.parametrize("value", [0.0, 1e-30, -1e-30, 5.0, -3.0, 1e30, -1e30])
@pytest.mark.parametrize("method", ["minmax", "percentile", "mse"])
def test_constant_inputs_give_finite_positive_scales(value, method):
  for spec in [
    QuantSpec(8),
    QuantSpec(4, signed=False, symmetric=False),
    QuantSpec(2, symmetric=False, channel_axis=0),
    QuantSpec(1, signed=False),
  ]:
    x = np.full((3, 4), value, np.float32)
    scale, zero_point = calibrate(x, spec, method)
    assert np.all(np.isfinite(scale)), (spec, scale)
    assert np.all(np.asarray(scale) >= scale_floor(jnp.float32))
    x_hat = np.asarray(fake_quant(x, scale, zero_point, spec=spec))
    if value >= 0 or spec.signed or not spec.symmetric:  # representable on this grid
      np.testing.assert_array_less(np.abs(x_hat - x), np.max(scale) * 0.5001 + 1e-6 * abs(value))
    else:  # negative constant on the zero-point-0 unsigned grid: clipped to 0
      np.testing.assert_array_equal(x_hat, 0)


@pytest.mark.parametrize(
  "spec", [QuantSpec(8), QuantSpec(2, symmetric=False), QuantSpec(1, signed=False)]
)
def test_float32_max_sized_inputs(spec):
  # 3e38 / (qmax - qmin) exceeds the 2^126 scale ceiling for 1 and 2 bits: the scale is capped,
  # the grid top is then (qmax - z) * 2^126 and x_hat stays finite and equals the NumPy reference.
  x = np.array([3e38, -3e38, 1.0, 0.0], np.float32)
  scale, zero_point = calibrate(x, spec, "minmax")
  assert 0 < float(scale) <= 2.0**126
  x_hat = np.asarray(fake_quant(x, scale, zero_point, spec=spec))
  np.testing.assert_array_equal(x_hat, np_fake_quant(x, scale, zero_point, spec))
  assert np.all(np.isfinite(x_hat))
  if spec.bits == 8:  # scale = 3e38 / 127.5 < 2^126: the usual half-step bound holds
    np.testing.assert_array_less(np.abs(x_hat.astype(np.float64) - x), 0.5001 * float(scale))


@settings(max_examples=8)
@hypothesis.given(cases())
def test_lsq_init_scale_equals_numpy(case):
  x, spec = case
  want = np_per_channel(lambda c: 2 * np.mean(np.abs(c)) / np.sqrt(max(spec.qmax, 1)), x, spec)
  np.testing.assert_allclose(lsq_init_scale(x, spec), want, rtol=1e-5)
  np.testing.assert_array_equal(
    lsq_init_scale(np.zeros(5, np.float32), QuantSpec()), np.float32(scale_floor(jnp.float32))
  )


def test_calibrate_under_jit_equals_eager():
  spec = QuantSpec(6, signed=False, symmetric=False, channel_axis=0)
  x = np.random.default_rng(3).standard_t(4, size=(3, 50)).astype(np.float32)
  for method in ["minmax", "mse"]:  # eager minmax is op-by-op; mse is a jitted scan inside
    eager = calibrate(x, spec, method)
    jitted = jax.jit(lambda x, m=method: calibrate(x, spec, m))(x)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)


def test_bad_arguments():
  x = jnp.ones((4, 3))
  with pytest.raises(ValueError, match=r"method.*'kmeans'"):
    calibrate(x, QuantSpec(), "kmeans")
  with pytest.raises(ValueError, match=r"percentile.*0"):
    percentile_range(x, QuantSpec(), percentile=0)
  with pytest.raises(ValueError, match=r"percentile.*100\.5"):
    calibrate(x, QuantSpec(), "percentile", percentile=100.5)
  with pytest.raises(ValueError, match=r"num_candidates.*0"):
    mse_range(x, QuantSpec(), num_candidates=0)
  with pytest.raises(ValueError, match=r"channel_axis=2"):
    minmax_range(x, QuantSpec(channel_axis=2))
  with pytest.raises(ValueError, match=r"x must be non-empty"):
    minmax_range(jnp.ones((0, 3)), QuantSpec())


@pytest.mark.parametrize(
  "spec",
  [
    QuantSpec(4),
    QuantSpec(4, narrow_range=False),
    QuantSpec(4, signed=False),
    QuantSpec(4, signed=False, symmetric=False),
  ],
)
def test_lsq_calibration_gives_lsq_initial_step(spec):
  # calibrate(..., 'lsq') turns the LSQ paper's initial step 2 mean|x| / sqrt(qmax) into a
  # range whose grid has exactly that step; offset grids start at min(min(x), 0).
  x = np.array([-1.0, 0.5, 2.0, 3.5], np.float32)
  step = 2 * np.mean(np.abs(x)) / np.sqrt(spec.qmax)
  scale, zero_point = calibrate(x, spec, "lsq")
  np.testing.assert_allclose(scale, step, rtol=1e-6)
  want_z = spec.qmin - np.round(-1.0 / step) if not spec.symmetric else 0.0
  assert float(zero_point) == want_z
  lo, hi = lsq_range(x, spec)
  np.testing.assert_allclose(float(hi) - float(lo), step * (spec.qmax - spec.qmin), rtol=1e-6)
