"""Per-channel residual activation scales (``resq_recipe(..., residual_channel_axis=-1)``):
one scale per input channel of each layer's residual, for layers whose channels change at very
different rates (docs/real_models.md)."""

import jax
import jax.numpy as jnp
import numpy as np
from test_stream_own_model import TinyMask

from resq_jax.nn.calibrate import CalibrationMethods, calibrate_model
from resq_jax.nn.intercept import init_quantizers, quantize
from resq_jax.nn.quantized import RES_A, scale_name
from resq_jax.nn.runner import run_clip
from resq_jax.quant.recipe import resq_recipe

PER_TENSOR = resq_recipe((8, 8), (8, 4))
PER_CHANNEL = resq_recipe((8, 8), (8, 4), residual_channel_axis=-1)


def _clip():
  """Channels that move at rates 100x apart: [B=2, T=4, 8, 8, 3]."""
  rng = np.random.default_rng(0)
  base = rng.uniform(size=(2, 1, 8, 8, 3))
  steps = rng.normal(size=(2, 4, 8, 8, 3)) * np.array([1.0, 0.1, 0.01])
  return jnp.asarray(base + np.cumsum(steps, axis=1), jnp.float32)


def _variables(recipe, clip, methods=CalibrationMethods()):
  model = quantize(TinyMask(), ((r".*", recipe),))
  float_vars = TinyMask().init(jax.random.key(0), clip[:, 0])
  v = init_quantizers(model, float_vars, clip[:, 0])
  return model, calibrate_model(model, variables=v, clips=[clip], period=4, methods=methods)


def test_first_layer_scales_are_each_channels_minmax():
  """The first conv's input is the clip: its residual scale per channel is max |x_t - x_{t-1}|
  of that channel over the residual frames, over the grid's top level (4-bit narrow: 7)."""
  clip = _clip()
  methods = CalibrationMethods(residual_act="minmax")
  _, v = _variables(PER_CHANNEL, clip, methods)
  got = np.asarray(v["params"]["Conv_0"][scale_name(RES_A)])
  x = np.asarray(clip)
  want = np.abs(x[:, 1:] - x[:, :-1]).max(axis=(0, 1, 2, 3)) / 7.0
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got[0] > 50 * got[2]


def test_equal_channel_scales_equal_the_per_tensor_quantizer():
  """Per-channel scales all set to the per-tensor scale give the per-tensor outputs exactly."""
  clip = _clip()
  model_t, v_t = _variables(PER_TENSOR, clip)
  model_c, v_c = _variables(PER_CHANNEL, clip)
  params = jax.tree_util.tree_map_with_path(
    lambda path, leaf: leaf, v_c["params"]
  )  # copy, then overwrite the residual scales with the per-tensor ones
  for layer, entry in v_t["params"].items():
    scale = entry[scale_name(RES_A)]
    params[layer] = dict(
      params[layer], **{scale_name(RES_A): jnp.full_like(params[layer][scale_name(RES_A)], scale)}
    )
  v_c = dict(v_c, params=params)
  want = run_clip(model_t, v_t, clip, period=4).outputs
  got = run_clip(model_c, v_c, clip, period=4).outputs
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
