"""Quantized Flax layers: ``QConv`` (optionally with BatchNorm folded in) and ``QDense``.

Every layer executes the :class:`~resq_jax.quant.recipe.LayerRecipe` it is given (float, FQ,
static or dynamic ResQ). Call them with ``phase='key'`` or ``phase='residual'``; the clip runner
(``resq_jax.nn.clip``) does that for you.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from resq_jax.nn.quantized import quantized_linear
from resq_jax.quant.cost import LayerCost, conv_macs, conv_output_hw, dense_macs
from resq_jax.quant.recipe import LayerRecipe

Padding = str | Sequence[tuple[int, int]]


class QuantLayer(nn.Module):
  """Marker base: a layer whose cost is counted (``resq_jax.nn.costs``)."""

  def cost(self, x_shape: tuple[int, ...]) -> LayerCost:  # pragma: no cover - abstract
    raise NotImplementedError


class QConv(QuantLayer):
  """2-D convolution ``[B, H, W, C_in] -> [B, H', W', features]`` under a recipe.

  With ``use_bn=True`` the conv has no bias of its own and a BatchNorm follows it. Float training
  (``train=True`` with a 'float' recipe) normalises with batch statistics and updates the
  running ones in ``batch_stats``; every other execution folds the running statistics into the
  weights and bias (``W * gamma / sqrt(var + eps)``, ``beta - mean * gamma / sqrt(var + eps)``),
  so that quantizers see the weights that actually run (frozen-BN QAT).

  ``bn_axis_name``: under data parallelism (``jax.shard_map`` over that mesh axis) the batch
  statistics of float training are averaged over the axis (synchronised BatchNorm), so that a
  step on N devices equals the step on one device with the same global batch. ``None``: the
  statistics of the local batch (only right on one device, or when that is wanted).
  """
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  strides: tuple[int, int] = (1, 1)
  padding: Padding = "SAME"
  feature_group_count: int = 1
  use_bias: bool = True
  use_bn: bool = False
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_axis_name: str | None = None
  recipe: LayerRecipe = LayerRecipe()
  kernel_init: Any = nn.initializers.he_normal()

  def _linear(self, x, w):
    return jax.lax.conv_general_dilated(
        x, w, self.strides, self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=self.feature_group_count)

  @nn.compact
  def __call__(self, x: jax.Array, phase: str = "key", train: bool = False) -> jax.Array:
    c_in = x.shape[-1]
    if c_in % self.feature_group_count:
      raise ValueError(f"feature_group_count={self.feature_group_count} must divide the input "
                       f"channels {c_in}")
    kernel = self.param("kernel", self.kernel_init,
                        (*self.kernel_size, c_in // self.feature_group_count, self.features))
    if not self.use_bn:
      bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
      return quantized_linear(self, x, kernel, bias, linear=self._linear, recipe=self.recipe,
                              phase=phase)
    gamma = self.param("bn_scale", nn.initializers.ones, (self.features,))
    beta = self.param("bn_bias", nn.initializers.zeros, (self.features,))
    mean = self.variable("batch_stats", "mean", jnp.zeros, (self.features,))
    var = self.variable("batch_stats", "var", jnp.ones, (self.features,))
    if train and not self.recipe.is_quantized:
      return self._batch_norm_train(x, kernel, gamma, beta, mean, var, phase)
    inv = gamma * jax.lax.rsqrt(var.value + self.bn_epsilon)
    return quantized_linear(self, x, kernel * inv.reshape(1, 1, 1, -1), beta - mean.value * inv,
                            linear=self._linear, recipe=self.recipe, phase=phase)

  def _batch_norm_train(self, x, kernel, gamma, beta, mean, var, phase):
    # Float path: run the conv through quantized_linear so that stats are still recorded.
    y = quantized_linear(self, x, kernel, None, linear=self._linear, recipe=self.recipe,
                         phase=phase)
    axes = tuple(range(y.ndim - 1))
    mu = jnp.mean(y, axis=axes)
    mean_sq = jnp.mean(jnp.square(y), axis=axes)
    if self.bn_axis_name is not None:
      # Equal local batches (shard_batch splits evenly): the global moments are the means of
      # the local ones.
      mu, mean_sq = jax.lax.pmean((mu, mean_sq), self.bn_axis_name)
    sigma2 = jnp.maximum(mean_sq - jnp.square(mu), 0.0)
    if not self.is_initializing():
      m = self.bn_momentum
      mean.value = m * mean.value + (1 - m) * jax.lax.stop_gradient(mu)
      var.value = m * var.value + (1 - m) * jax.lax.stop_gradient(sigma2)
    per_channel = lambda v: v.reshape((1,) * (y.ndim - 1) + (-1,))
    inv = gamma * jax.lax.rsqrt(sigma2 + self.bn_epsilon)
    return (y - per_channel(mu)) * per_channel(inv) + per_channel(beta)

  def cost(self, x_shape: tuple[int, ...]) -> LayerCost:
    in_hw = x_shape[1:3]
    out_hw = conv_output_hw(in_hw, self.kernel_size, self.strides, self.padding)
    macs = conv_macs(in_hw, self.kernel_size, x_shape[-1], self.features, self.strides,
                     self.padding, self.feature_group_count)
    state = (math.prod(x_shape[1:]) + math.prod(out_hw) * self.features
             if self.recipe.has_state else 0)
    return LayerCost(macs=macs, n_locations=math.prod(in_hw), state_elements=state)


class QDense(QuantLayer):
  """Dense layer on the last axis, ``[B, ..., C_in] -> [B, ..., features]``, under a recipe."""
  features: int
  use_bias: bool = True
  recipe: LayerRecipe = LayerRecipe()
  kernel_init: Any = nn.initializers.lecun_normal()

  @staticmethod
  def _linear(x, w):
    return jnp.matmul(x, w)

  @nn.compact
  def __call__(self, x: jax.Array, phase: str = "key") -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
    return quantized_linear(self, x, kernel, bias, linear=self._linear, recipe=self.recipe,
                            phase=phase)

  def cost(self, x_shape: tuple[int, ...]) -> LayerCost:
    n_loc = math.prod(x_shape[1:-1])
    state = n_loc * (x_shape[-1] + self.features) if self.recipe.has_state else 0
    return LayerCost(macs=dense_macs(x_shape[-1], self.features, n_loc), n_locations=n_loc,
                     state_elements=state)
