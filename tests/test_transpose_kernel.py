"""transpose_kernel=True (TF / TFLite / PyTorch's transposed-conv convention) for QConvTranspose
and for an intercepted nn.ConvTranspose: the same layer as Flax's (float: equal to
nn.ConvTranspose(transpose_kernel=True)), and under quantization equal to the unflipped layer
with the kernel flipped and transposed (the identity unflipped_kernel states)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from resq_jax.nn.intercept import init_quantizers, quantize
from resq_jax.nn.layers import QConvTranspose, unflipped_kernel
from resq_jax.nn.runner import run_clip
from resq_jax.quant.recipe import float_recipe, fq_recipe

X = jax.random.normal(jax.random.key(0), (2, 5, 4, 3))
KW = dict(features=4, kernel_size=(3, 3), strides=(2, 2), padding="SAME")


def test_qconvtranspose_transpose_kernel_equals_flax():
  flax_layer = nn.ConvTranspose(**KW, transpose_kernel=True)
  v = flax_layer.init(jax.random.key(1), X)
  want = flax_layer.apply(v, X)
  q = QConvTranspose(**KW, transpose_kernel=True, recipe=float_recipe())
  got = q.apply({"params": v["params"]}, X, phase="key")
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  # The unflipped layer with the converted kernel is the same function.
  plain = QConvTranspose(**KW, recipe=float_recipe())
  params = dict(v["params"], kernel=unflipped_kernel(v["params"]["kernel"]))
  np.testing.assert_allclose(
    np.asarray(plain.apply({"params": params}, X, phase="key")), np.asarray(want), atol=1e-5
  )


def test_intercepted_transpose_kernel_quantizes_like_the_unflipped_layer():
  class Flipped(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.ConvTranspose(**KW, transpose_kernel=True, name="up")(x)

  class Plain(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.ConvTranspose(**KW, name="up")(x)

  v = Flipped().init(jax.random.key(1), X)
  plain_v = {
    "params": {"up": dict(v["params"]["up"], kernel=unflipped_kernel(v["params"]["up"]["kernel"]))}
  }
  clip = X[:, None]
  outs = []
  for module, variables in ((Flipped(), v), (Plain(), plain_v)):
    model = quantize(module, ((".*", fq_recipe(8, 8)),))
    qv = init_quantizers(model, variables, X)
    qv["params"]["up"]["key_a_scale"] = jnp.float32(0.02)
    qv["params"]["up"]["key_a_zero_point"] = jnp.float32(128.0)
    outs.append(np.asarray(run_clip(model, qv, clip, period=1).outputs))
  np.testing.assert_array_equal(outs[0], outs[1])
  float_model = quantize(Flipped(), ((".*", float_recipe()),))
  got = run_clip(float_model, v, clip, period=1).outputs[:, 0]
  np.testing.assert_array_equal(np.asarray(got), np.asarray(Flipped().apply(v, X)))
