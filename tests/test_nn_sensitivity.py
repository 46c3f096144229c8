"""layer_sensitivity against exact values: on a network whose output is linear in each layer's
input, ||J_l||_F^2 has a closed form (a Dense layer's Jacobian is its kernel), Hutchinson's
estimate converges to it, and the noise terms equal NumPy's fake quantization of the layer's
own inputs and residuals."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.nn.calibrate import CalibrationMethods, calibrate_model
from resq_jax.nn.intercept import init_quantizers, quantize
from resq_jax.nn.quantized import KEY_A, RES_A, scale_name, zero_point_name
from resq_jax.nn.sensitivity import layer_sensitivity
from resq_jax.quant.recipe import resq_recipe


class TwoDense(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3, name="second")(nn.Dense(5, name="first")(x))


def _setup():
  rng = np.random.default_rng(0)
  base = rng.normal(size=(2, 1, 4))
  clips = jnp.asarray(base + np.cumsum(0.1 * rng.normal(size=(2, 4, 4)), axis=1), jnp.float32)
  module = TwoDense()
  float_vars = module.init(jax.random.key(0), clips[:, 0])
  model = quantize(module, ((r".*", resq_recipe((8, 8), (8, 4))),))
  v = init_quantizers(model, float_vars, clips[:, 0])
  methods = CalibrationMethods(key_act="minmax", residual_act="minmax")
  v = calibrate_model(model, variables=v, clips=[clips], period=4, methods=methods)
  return model, v, clips


def test_jacobian_and_noise_against_closed_forms():
  model, v, clips = _setup()
  sens = layer_sensitivity(model, v, clips, period=4, probes=4000)
  w1 = np.asarray(v["params"]["first"]["kernel"])
  w2 = np.asarray(v["params"]["second"]["kernel"])
  # y = (x W1 + b1) W2 + b2: d y / d x = W1 W2 at 'first', W2 at 'second' (per frame).
  np.testing.assert_allclose(sens["second"]["jacobian_sq"], np.sum(w2**2), rtol=0.05)
  np.testing.assert_allclose(sens["first"]["jacobian_sq"], np.sum((w1 @ w2) ** 2), rtol=0.05)

  x = np.asarray(clips)  # the first layer's input
  p = v["params"]["first"]
  s, z = float(p[scale_name(KEY_A)]), float(p[zero_point_name(KEY_A)])
  q = (np.clip(np.round(x / s) + z, 0, 255) - z) * s  # unsigned 8-bit asymmetric
  np.testing.assert_allclose(sens["first"]["key_noise"], np.mean((q - x) ** 2), rtol=1e-4)
  r = x[:, 1:] - x[:, :-1]  # residual frames t = 1, 2, 3 against t - 1
  sr = float(p[scale_name(RES_A)])
  qr = np.clip(np.round(r / sr), -7, 7) * sr  # signed 4-bit narrow
  np.testing.assert_allclose(sens["first"]["residual_noise"], np.mean((qr - r) ** 2), rtol=1e-4)
  np.testing.assert_allclose(sens["first"]["residual_zero_fraction"], np.mean(qr == 0))
  y = np.asarray(
    model.apply(v, clips.reshape(8, 4), phase="key", mutable=["resq_state", "resq_stats"])[0]
  )
  del y  # the float output's norm is the denominator of the effects:
  yf = (x.reshape(8, 4) @ w1 + np.asarray(p["bias"])) @ w2 + np.asarray(
    v["params"]["second"]["bias"]
  )
  want = sens["first"]["residual_noise"] * sens["first"]["jacobian_sq"] / np.mean(np.sum(yf**2, 1))
  np.testing.assert_allclose(sens["first"]["residual_effect"], want, rtol=1e-4)


def test_bad_arguments():
  model, v, clips = _setup()
  with pytest.raises(ValueError, match="period must be an int >= 2"):
    layer_sensitivity(model, v, clips, period=1)
  with pytest.raises(ValueError, match=r"clips must be \[B, T >= 2"):
    layer_sensitivity(model, v, clips[:, :1], period=4)


def test_dominant_layers_cover_the_share_hand_count():
  from resq_jax.nn.sensitivity import dominant_layers

  sens = {
    "a": {"residual_effect": 0.5},
    "b": {"residual_effect": 0.3},
    "b/call1": {"residual_effect": 0.1},  # a second call of b: b's parameters
    "c": {"residual_effect": 0.1},
  }
  assert dominant_layers(sens, share=0.5) == ["a"]
  assert dominant_layers(sens, share=0.8) == ["a", "b"]
  assert dominant_layers(sens, share=1.0) == ["a", "b", "c"]
  with pytest.raises(ValueError, match="share must be in"):
    dominant_layers(sens, share=0.0)
