"""Small networks shared by the nn tests (not a test module)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from resq_jax.nn.layers import QConv, QDense
from resq_jax.quant.recipe import LayerRecipe, float_recipe


class TinyNet(nn.Module):
  """conv-BN-ReLU, strided conv-ReLU, depthwise conv, dense head:
  [B, H, W, 3] -> [B, H/2, W/2, 3]."""

  recipe: LayerRecipe = float_recipe()

  @nn.compact
  def __call__(self, x, phase="key", train=False):
    x = nn.relu(QConv(8, recipe=self.recipe, use_bn=True)(x, phase, train))
    x = nn.relu(QConv(8, strides=(2, 2), recipe=self.recipe)(x, phase))
    x = QConv(8, feature_group_count=8, recipe=self.recipe)(x, phase)
    return QDense(3, recipe=self.recipe)(nn.relu(x), phase)


def random_walk_clip(key, shape, step=0.1):
  """A smooth clip ``[B, T, H, W, C]``: a random field plus small per-frame increments."""
  k0, k1 = jax.random.split(key)
  base = jax.random.normal(k0, (shape[0], 1, *shape[2:]))
  steps = step * jax.random.normal(k1, shape)
  return base + jnp.cumsum(steps, axis=1)
