"""ResQ step math (resq_jax.quant.resq) against identities and error bounds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.quant import resq
from resq_jax.quant.dynamic import FixedStepPolicy, dynamic_residual_quantizer
from resq_jax.quant.spec import QuantSpec, residual_spec, weight_spec
from resq_jax.quant.uniform import fake_quant


def conv(x, w):
  return jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def quantizer(scale, spec):
  return lambda v: fake_quant(v, scale, spec=spec)


def run_frames(frames, w, b, *, period, ref_mode, qk_x, qk_w, qr, qr_w):
  """Reference loop over frames ``[T, B, H, W, C]`` with keyframes at t % period == 0."""
  outs, state = [], None
  for t, x in enumerate(frames):
    if t % period == 0:
      y, state = resq.key_forward(
        x, w, b, linear=conv, quant_x=qk_x, quant_w=qk_w, ref_mode=ref_mode
      )
    else:
      y, state, _ = resq.residual_forward(
        x, w, state, linear=conv, quant_r=qr, quant_w=qr_w, ref_mode=ref_mode
      )
    outs.append(y)
  return jnp.stack(outs)


@pytest.fixture
def layer():
  kw, kb, kx = jax.random.split(jax.random.key(0), 3)
  w = 0.3 * jax.random.normal(kw, (3, 3, 4, 5))
  b = jax.random.normal(kb, (5,))
  steps = 0.05 * jax.random.normal(kx, (8, 2, 6, 6, 4))
  frames = jax.random.normal(kx, (1, 2, 6, 6, 4)) + jnp.cumsum(steps, axis=0)
  return w, b, frames


def test_float_linearity(layer):
  """y_key + L(x_t - x_key) == L(x_t): the identity that ResQ rests on."""
  w, b, frames = layer
  y_key = conv(frames[0], w)
  for x in frames[1:]:
    np.testing.assert_allclose(y_key + conv(x - frames[0], w), conv(x, w), atol=1e-5)


@pytest.mark.parametrize("ref_mode", ["closed", "key", "prev"])
def test_16_bit_resq_equals_float_layer(layer, ref_mode):
  """16-bit key and residual grids reproduce the float layer on every frame (atol 2e-3 on
  outputs of magnitude ~5: the 16-bit steps are ~1e-4 of the ranges)."""
  w, b, frames = layer
  amax = float(jnp.max(jnp.abs(frames)))
  ramax = float(jnp.max(jnp.abs(frames[1:] - frames[:1])))
  wspec, aspec = weight_spec(16), QuantSpec(bits=16, narrow_range=True)
  w_scale = jnp.max(jnp.abs(w), axis=(0, 1, 2)) / wspec.qmax
  out = run_frames(
    frames,
    w,
    b,
    period=4,
    ref_mode=ref_mode,
    qk_x=quantizer(amax / aspec.qmax, aspec),
    qk_w=quantizer(w_scale, wspec),
    qr=resq.static_residual_quantizer(quantizer(ramax / aspec.qmax, aspec)),
    qr_w=quantizer(w_scale, wspec),
  )
  expected = jnp.stack([conv(x, w) + b.reshape(1, 1, 1, -1) for x in frames])
  np.testing.assert_allclose(out, expected, atol=2e-3)
  assert float(jnp.max(jnp.abs(expected))) > 1.0  # the tolerance is meaningful


def test_period_one_is_frame_quantization(layer):
  """K = 1: every frame is a keyframe, bit-for-bit equal to Frame Quantization."""
  w, b, frames = layer
  qx, qw = quantizer(0.05, QuantSpec(bits=4)), quantizer(0.02, QuantSpec(bits=4))
  out = run_frames(frames, w, b, period=1, ref_mode="closed", qk_x=qx, qk_w=qw, qr=None, qr_w=None)
  fq = jnp.stack([resq.fq_forward(x, w, b, linear=conv, quant_x=qx, quant_w=qw) for x in frames])
  np.testing.assert_array_equal(out, fq)


def _identity_layer_walk(ref_mode, n_frames=1000, step=0.01, bits=8):
  """Reconstruction error of an identity dense layer (output == reconstructed input)."""
  rng = np.random.default_rng(0)
  x = np.cumsum(rng.normal(0, 0.1, size=(n_frames, 1, 16)), axis=0).astype(np.float32)
  eye = jnp.eye(16)
  matmul = lambda v, w: v @ w
  qr = resq.static_residual_quantizer(quantizer(step, residual_spec(bits)))
  ident = lambda v: v
  y, state = resq.key_forward(
    jnp.asarray(x[0]), eye, None, linear=matmul, quant_x=ident, quant_w=ident, ref_mode=ref_mode
  )

  def body(state, xt):
    y, state, _ = resq.residual_forward(
      xt, eye, state, linear=matmul, quant_r=qr, quant_w=ident, ref_mode=ref_mode
    )
    return state, y

  _, ys = jax.lax.scan(body, state, jnp.asarray(x[1:]))
  return np.abs(np.asarray(ys) - x[1:]).max(axis=(1, 2)), step


def test_closed_loop_error_stays_within_half_a_step():
  err, step = _identity_layer_walk("closed")
  assert err.max() <= step / 2 * (1 + 1e-3)


def test_prev_mode_drifts():
  """Open loop: each frame's rounding error adds up (a random walk of errors)."""
  err_prev, step = _identity_layer_walk("prev")
  err_closed, _ = _identity_layer_walk("closed")
  assert err_prev[-100:].mean() > 5 * step / 2
  assert err_prev[-100:].mean() > 10 * err_closed[-100:].mean()


def test_key_mode_keeps_key_reference(layer):
  w, b, frames = layer
  ident = lambda v: v
  qr = resq.static_residual_quantizer(ident)
  y0, state = resq.key_forward(
    frames[0], w, b, linear=conv, quant_x=ident, quant_w=ident, ref_mode="key"
  )
  y1, state1, _ = resq.residual_forward(
    frames[1], w, state, linear=conv, quant_r=qr, quant_w=ident, ref_mode="key"
  )
  assert state1 is state  # the reference does not move between keyframes
  np.testing.assert_allclose(y1, y0 + conv(frames[1] - frames[0], w), atol=1e-5)


def test_dynamic_static_scene_skips_everything(layer):
  """A frame equal to the keyframe has a zero residual: every location is skipped and the
  output is exactly the keyframe's."""
  w, b, frames = layer
  ident = lambda v: v
  y0, state = resq.key_forward(frames[0], w, b, linear=conv, quant_x=ident, quant_w=ident)
  qr = dynamic_residual_quantizer(FixedStepPolicy(bits=(0, 4, 8), step=1.0), 0.01)
  y1, _, bits = resq.residual_forward(frames[0], w, state, linear=conv, quant_r=qr, quant_w=ident)
  np.testing.assert_array_equal(bits, np.zeros((2, 6, 6), np.int32))
  np.testing.assert_array_equal(y1, y0)


def test_stop_ref_gradient_truncates_bptt(layer):
  w, b, frames = layer
  ident = lambda v: v
  qr = resq.static_residual_quantizer(ident)

  def loss(x0, stop):
    _, state = resq.key_forward(x0, w, b, linear=conv, quant_x=ident, quant_w=ident)
    y, _, _ = resq.residual_forward(
      frames[1], w, state, linear=conv, quant_r=qr, quant_w=ident, stop_ref_gradient=stop
    )
    return jnp.sum(y)

  # y = y_key + L(x1 - x0) = L(x1) + b: d/dx0 is zero with full BPTT. With the reference
  # truncated, only the path through y_key = L(x0) + b remains: L^T 1.
  g_full = jax.grad(loss)(frames[0], False)
  g_trunc = jax.grad(loss)(frames[0], True)
  np.testing.assert_allclose(g_full, 0.0, atol=1e-4)
  expected = jax.grad(lambda x: jnp.sum(conv(x, w)))(frames[0])
  np.testing.assert_allclose(g_trunc, expected, atol=1e-4)


def test_bad_ref_mode_raises(layer):
  w, b, frames = layer
  with pytest.raises(ValueError, match="ref_mode"):
    resq.key_forward(
      frames[0], w, b, linear=conv, quant_x=lambda v: v, quant_w=lambda v: v, ref_mode="open"
    )


def test_residual_forward_rejects_a_plain_quantizer(layer):
  # A plain quantizer (the kind key_forward takes) returns an array; unpacking it as
  # (r_hat, aux) would silently take its first two rows.
  w, b, frames = layer
  frames = frames[:, :2]  # batch 2: the unpacking would even succeed without the check
  _, state = resq.key_forward(
    frames[0], w, b, linear=conv, quant_x=lambda v: v, quant_w=lambda v: v
  )
  with pytest.raises(TypeError, match="static_residual_quantizer"):
    resq.residual_forward(
      frames[1], w, state, linear=conv, quant_r=lambda v: v, quant_w=lambda v: v
    )
  y, _, aux = resq.residual_forward(
    frames[1],
    w,
    state,
    linear=conv,
    quant_r=resq.static_residual_quantizer(lambda v: v),
    quant_w=lambda v: v,
  )
  assert aux is None
  np.testing.assert_allclose(y, resq.add_bias(conv(frames[1], w), b), atol=1e-5)
