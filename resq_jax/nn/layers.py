"""Quantized Flax layers: ``QConv`` (optionally dilated, with BatchNorm folded in),
``QConvTranspose`` and ``QDense``.

Every layer executes a :class:`~resq_jax.quant.recipe.LayerRecipe` (float, FQ, static or dynamic
ResQ): its own ``recipe`` attribute unless a :class:`~resq_jax.quant.recipe.RecipeRules` of an
enclosing module (an attribute named ``recipe_rules``, or :func:`with_recipe_rules`) matches the
layer's path (:func:`layer_recipe`). Call them with ``phase='key'`` or ``phase='residual'``; the
clip runner (``resq_jax.nn.runner``) does that for you, and inside ``resq_jax.quantize(model,
rules)`` the phase comes from the runner (``phase=None`` reads it). Without any phase a layer
whose recipe has state (ResQ) raises instead of silently running the keyframe branch on every
frame; float and FQ layers do not need it.

A layer called several times per frame (weight sharing) keeps one ResQ state and one set of
stats per call, and its cost is counted per call (``resq_jax.nn.quantized``, one state per call).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from resq_jax.nn.quantized import quantized_linear, variable_path
from resq_jax.ops import conv2d
from resq_jax.quant.cost import (
  LayerCost,
  conv_macs,
  conv_output_hw,
  conv_padding,
  conv_transpose_macs,
  conv_transpose_output_hw,
  conv_transpose_padding,
  dense_macs,
)
from resq_jax.quant.dynamic import decision_comparisons
from resq_jax.quant.recipe import LayerRecipe, RecipeRules, float_recipe

Padding = str | Sequence[tuple[int, int]]
CONV_IMPLS = ("auto", "xla", "im2col")
_IN_ROLLED_LOOP = contextvars.ContextVar("resq_jax_in_rolled_loop", default=False)


@contextlib.contextmanager
def rolled_loop(rolled: bool = True):
  """Marks what is traced inside as the body of a rolled loop (a ``lax.scan`` that is not fully
  unrolled); ``QConv(conv_impl='auto')`` reads it. ``run_clip`` sets it for its residual scan."""
  token = _IN_ROLLED_LOOP.set(rolled)
  try:
    yield
  finally:
    _IN_ROLLED_LOOP.reset(token)


def resolve_conv_impl(impl: str) -> str:
  """'xla' or 'im2col' for a ``conv_impl`` field, decided at trace time.

  'auto' picks :func:`resq_jax.ops.conv2d`'s im2col kernel gradient inside rolled loops on the
  CPU backend, where XLA:CPU's autodiff convs leave their fast path (measured 9.6-12x slower
  ResQ training with the scan rolled, docs/conv_benchmark.md), and XLA's own conv everywhere
  else (on small maps outside loops the im2col VJP was measured slower, docs/model.md).
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
  if impl != "auto":
    return impl
  return "im2col" if _IN_ROLLED_LOOP.get() and jax.default_backend() == "cpu" else "xla"


def _ancestors(module: nn.Module) -> list[nn.Module]:
  """Enclosing modules of a bound ``module``, outermost first."""
  chain, parent = [], module.parent
  while isinstance(parent, nn.Module):
    chain.append(parent)
    parent = parent.parent
  return chain[::-1]


def rules_recipe(layer: nn.Module) -> LayerRecipe | None:
  """The recipe of the first matching rule of the outermost enclosing module's
  ``recipe_rules``, then of the next one inward; None if no rule matches ``layer``'s path
  (where its variables live, :func:`~resq_jax.nn.quantized.variable_path`)."""
  path = "/".join(variable_path(layer))
  for ancestor in _ancestors(layer):
    rules = getattr(ancestor, "recipe_rules", None)
    if rules is not None:
      found = rules.match(path)
      if found is not None:
        return found
  return None


def layer_recipe(layer: nn.Module) -> LayerRecipe:
  """The recipe a bound layer executes: the first matching rule of the outermost enclosing
  module's ``recipe_rules``, then of the next one inward, else the layer's own ``recipe``."""
  found = rules_recipe(layer)
  return layer.recipe if found is None else found


class QuantLayer(nn.Module):
  """Marker base: a layer whose cost is counted (``resq_jax.nn.costs``)."""

  @property
  def active_recipe(self) -> LayerRecipe:
    """The recipe this (bound) layer executes, per-layer rules applied (:func:`layer_recipe`)."""
    return layer_recipe(self)

  def cost(self, x_shape: tuple[int, ...]) -> LayerCost:  # pragma: no cover - abstract
    raise NotImplementedError


class WithRecipeRules(nn.Module):
  """``module`` (sharing its scope: same variables and layer paths) under ``recipe_rules``.
  Build it with :func:`with_recipe_rules`."""

  module: nn.Module
  recipe_rules: RecipeRules

  def setup(self):
    nn.share_scope(self, self.module)

  def __call__(self, *args, **kwargs):
    return self.module(*args, **kwargs)

  @property
  def recipe(self) -> LayerRecipe:
    """The default recipe: the wrapped model's own (layers no rule matches)."""
    return self.module.recipe


def with_recipe_rules(model: nn.Module, rules: RecipeRules) -> WithRecipeRules:
  """``model`` whose layers follow ``rules`` (first match wins; rules given here come before
  any the model already has). Variables and layer paths are those of ``model``: the result
  runs with ``model``'s variables and is hashable (a static argument of ``run_clip``)."""
  if not isinstance(rules, RecipeRules):
    rules = RecipeRules(tuple(rules))
  if isinstance(model, WithRecipeRules):
    return WithRecipeRules(model.module, RecipeRules(rules.rules + model.recipe_rules.rules))
  return WithRecipeRules(model, rules)


FLOAT_RULES = RecipeRules(((r".*", float_recipe()),))


def float_twin(model: nn.Module) -> nn.Module:
  """``model`` with every layer in float, whatever its recipes or rules (for calibration and
  for float reference runs); same variables (quantizer parameters are simply not read)."""
  return with_recipe_rules(model, FLOAT_RULES)


def fold_bn(kernel, gamma, beta, mean, var, epsilon: float):
  """BatchNorm folded into a conv: ``(W * gamma / sqrt(var + eps), beta - mean * gamma /
  sqrt(var + eps))`` with the output channel last."""
  inv = gamma * jax.lax.rsqrt(var + epsilon)
  return kernel * inv.reshape((1,) * (kernel.ndim - 1) + (-1,)), beta - mean * inv


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class QConv(QuantLayer):
  """2-D convolution ``[B, H, W, C_in] -> [B, H', W', features]`` under a recipe.

  ``kernel_dilation`` (atrous conv) spreads the taps; ``input_dilation`` inserts ``d - 1`` zeros
  between input elements (a fractionally strided conv; see also :class:`QConvTranspose`).
  'SAME' padding is resolved on the dilated input and kernel. MACs: kernel dilation keeps the
  undilated count at the same output size; inserted zeros are not counted
  (:func:`~resq_jax.quant.cost.conv_macs`). Weight scales are per output channel (``features``).

  With ``use_bn=True`` the conv has no bias of its own and a BatchNorm follows it. Float training
  (``train=True`` with a 'float' recipe) normalises with batch statistics and updates the
  running ones in ``batch_stats``; every other execution folds the running statistics into the
  weights and bias (``W * gamma / sqrt(var + eps)``, ``beta - mean * gamma / sqrt(var + eps)``),
  so that quantizers see the weights that actually run (frozen-BN QAT).

  ``bn_axis_name``: under data parallelism (``jax.shard_map`` over that mesh axis) the batch
  statistics of float training are averaged over the axis (synchronised BatchNorm), so that a
  step on N devices equals the step on one device with the same global batch. ``None``: the
  statistics of the local batch (only right on one device, or when that is wanted).

  ``conv_impl``: 'xla' (``lax.conv_general_dilated`` and XLA's autodiff), 'im2col'
  (:func:`resq_jax.ops.conv2d`: the same forward, a custom VJP whose kernel gradient is per-tap
  GEMMs; undilated, non-transposed convs only, others fall back to 'xla') or 'auto' (default:
  im2col inside rolled loops on CPU, see :func:`resolve_conv_impl`). Results agree to float
  round-off.
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
  kernel_dilation: tuple[int, int] = (1, 1)
  input_dilation: tuple[int, int] = (1, 1)
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, phase: str | None = None, train: bool = False) -> jax.Array:
    recipe = self.active_recipe
    linear = _conv_linear(self, x.shape[1:3])
    c_in = x.shape[-1]
    if c_in % self.feature_group_count:
      raise ValueError(
        f"feature_group_count={self.feature_group_count} must divide the input channels {c_in}"
      )
    transposed = getattr(self, "transpose_kernel", False)
    if transposed and self.feature_group_count != 1:
      raise ValueError("QConvTranspose(transpose_kernel=True) takes feature_group_count=1")
    shape = (*self.kernel_size, c_in // self.feature_group_count, self.features)
    kernel = self.param(
      "kernel", self.kernel_init, shape[:2] + shape[2:][::-1] if transposed else shape
    )
    if transposed:
      kernel = unflipped_kernel(kernel)
    cost = lambda: self.cost(x.shape)
    if not self.use_bn:
      bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
      return quantized_linear(
        self, x, kernel, bias, linear=linear, recipe=recipe, phase=phase, cost=cost
      )
    gamma = self.param("bn_scale", nn.initializers.ones, (self.features,))
    beta = self.param("bn_bias", nn.initializers.zeros, (self.features,))
    mean = self.variable("batch_stats", "mean", jnp.zeros, (self.features,))
    var = self.variable("batch_stats", "var", jnp.ones, (self.features,))
    if train and not recipe.is_quantized:
      return self._batch_norm_train(x, kernel, gamma, beta, mean, var, phase, linear, recipe)
    w, b = fold_bn(kernel, gamma, beta, mean.value, var.value, self.bn_epsilon)
    return quantized_linear(self, x, w, b, linear=linear, recipe=recipe, phase=phase, cost=cost)

  def _batch_norm_train(self, x, kernel, gamma, beta, mean, var, phase, linear, recipe):
    # Float path: run the conv through quantized_linear so that stats are still recorded.
    y = quantized_linear(
      self,
      x,
      kernel,
      None,
      linear=linear,
      recipe=recipe,
      phase=phase,
      cost=lambda: self.cost(x.shape),
    )
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
    macs, out_hw = _conv_macs(self, in_hw, x_shape[-1])
    state = (
      math.prod(x_shape[1:]) + math.prod(out_hw) * self.features
      if self.active_recipe.has_state
      else 0
    )
    return LayerCost(
      macs=macs,
      n_locations=math.prod(in_hw),
      state_elements=state,
      policy_comparisons=policy_cost(self.active_recipe, math.prod(in_hw), x_shape[-1]),
    )


class QConvTranspose(QConv):
  """Transposed 2-D convolution (``lax.conv_transpose`` / ``flax.linen.ConvTranspose`` with
  ``transpose_kernel=False``): ``[B, H, W, C_in] -> [B, H * s, W * s, features]`` with 'SAME'
  padding, ``(H - 1) * s + k`` with 'VALID'; explicit pairs pad the stride-dilated input.

  The kernel is ``[k_h, k_w, C_in / groups, features]`` (flax ConvTranspose's layout, so its
  weights load unchanged) and weight scales are per true output channel (``features``). A
  transposed conv is linear in its input, so it runs every recipe, ResQ included. MACs count
  the products that meet a real input element: ``H_in * W_in * k_h * k_w * C_in * C_out /
  groups`` less what the padding crops (:func:`~resq_jax.quant.cost.conv_transpose_macs`), not
  the MACs of a conv over the zero-inserted input. ``input_dilation`` must stay (1, 1).

  ``transpose_kernel=True``, as ``flax.linen.ConvTranspose``: the kernel is stored
  ``[k_h, k_w, features, C_in]`` as the *gradient of a forward convolution* (TensorFlow's,
  TFLite's and PyTorch's convention, up to their own axis orders), flipped spatially and with
  in/out swapped before it runs (:func:`unflipped_kernel`). Forgetting the flip when loading
  such weights gives plausible but wrong outputs (e.g. a mask IoU of 0.98 against the truth).
  """

  transpose_kernel: bool = False


def unflipped_kernel(kernel: jax.Array) -> jax.Array:
  """A ``transpose_kernel=True`` kernel ``[k_h, k_w, O, I]`` as the unflipped
  ``[k_h, k_w, I, O]`` one the convolution of the stride-dilated input runs (the same layer)."""
  return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


# Geometry of QConv / QConvTranspose as functions, not methods (Flax would wrap methods and
# capture_intermediates would record their non-array results).
def _conv_pads(layer: QConv, in_hw):
  if isinstance(layer, QConvTranspose):
    if _pair(layer.input_dilation) != (1, 1):
      raise ValueError("QConvTranspose takes no input_dilation: its strides dilate the input")
    return conv_transpose_padding(
      layer.kernel_size, layer.strides, layer.padding, layer.kernel_dilation
    )
  return conv_padding(
    in_hw,
    layer.kernel_size,
    layer.strides,
    layer.padding,
    layer.input_dilation,
    layer.kernel_dilation,
  )


def policy_cost(recipe: LayerRecipe, n_locations: int, channels: int) -> int:
  """Comparisons of a dynamic recipe's policy per residual frame (0 for other recipes)."""
  if recipe.mode != "dynamic":
    return 0
  return decision_comparisons(recipe.policy, n_locations, channels)


def _conv_linear(layer: QConv, in_hw):
  """``(x, w) -> conv(x, w)`` without bias, padding resolved for inputs of size ``in_hw``."""
  pads = _conv_pads(layer, in_hw)
  if isinstance(layer, QConvTranspose):
    strides, lhs_dilation = (1, 1), _pair(layer.strides)
  else:
    strides, lhs_dilation = _pair(layer.strides), _pair(layer.input_dilation)

  plain = lhs_dilation == (1, 1) and _pair(layer.kernel_dilation) == (1, 1)
  if plain and resolve_conv_impl(layer.conv_impl) == "im2col":
    return lambda x, w: conv2d(
      x,
      w,
      strides=strides,
      padding=pads,
      feature_group_count=layer.feature_group_count,
      impl="im2col",
    )

  def linear(x, w):
    return jax.lax.conv_general_dilated(
      x,
      w,
      strides,
      pads,
      lhs_dilation=lhs_dilation,
      rhs_dilation=_pair(layer.kernel_dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=layer.feature_group_count,
    )

  return linear


def _conv_macs(layer: QConv, in_hw, c_in: int):
  """``(MACs, output size)`` for one example."""
  if isinstance(layer, QConvTranspose):
    out_hw = conv_transpose_output_hw(
      in_hw, layer.kernel_size, layer.strides, layer.padding, layer.kernel_dilation
    )
    macs = conv_transpose_macs(
      in_hw,
      layer.kernel_size,
      c_in,
      layer.features,
      layer.strides,
      layer.padding,
      layer.feature_group_count,
      layer.kernel_dilation,
    )
    return macs, out_hw
  out_hw = conv_output_hw(
    in_hw,
    layer.kernel_size,
    layer.strides,
    layer.padding,
    layer.input_dilation,
    layer.kernel_dilation,
  )
  macs = conv_macs(
    in_hw,
    layer.kernel_size,
    c_in,
    layer.features,
    layer.strides,
    layer.padding,
    layer.feature_group_count,
    layer.input_dilation,
    layer.kernel_dilation,
  )
  return macs, out_hw


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
  def __call__(self, x: jax.Array, phase: str | None = None) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
    return quantized_linear(
      self,
      x,
      kernel,
      bias,
      linear=self._linear,
      recipe=self.active_recipe,
      phase=phase,
      cost=lambda: self.cost(x.shape),
    )

  def cost(self, x_shape: tuple[int, ...]) -> LayerCost:
    n_loc = math.prod(x_shape[1:-1])
    state = n_loc * (x_shape[-1] + self.features) if self.active_recipe.has_state else 0
    return LayerCost(
      macs=dense_macs(x_shape[-1], self.features, n_loc),
      n_locations=n_loc,
      state_elements=state,
      policy_comparisons=policy_cost(self.active_recipe, n_loc, x_shape[-1]),
    )
