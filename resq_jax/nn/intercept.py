"""``quantize(model, rules)``: an unmodified ``flax.linen`` model under ResQ recipes.

The user's model is run as it is, inside a wrapper (:class:`QuantizedModel`) that intercepts the
calls of its linear ops with ``flax.linen.intercept_methods``:

* ``nn.Conv`` (2-D, strided, dilated, grouped and depthwise; padding 'SAME', 'VALID',
  explicit, 'CIRCULAR' or 'REFLECT'), ``nn.ConvTranspose`` (2-D; ``transpose_kernel=True``
  runs as its unflipped kernel, ``resq_jax.nn.layers.unflipped_kernel``)
  and ``nn.Dense`` run :func:`~resq_jax.nn.quantized.quantized_linear` under the recipe of the
  first rule that matches their module path (``RecipeRules``, ``re.fullmatch``); ops no rule
  matches run in float (and are counted at 32x32 bits).
* The phase ('key' / 'residual') comes from the runner: ``QuantizedModel.__call__(x, ...,
  phase=...)`` sets it around the model (:func:`~resq_jax.nn.quantized.phase_scope`, trace time
  only), so the model's own ``__call__`` has no phase argument. ``QConv`` / ``QDense`` layers
  in the model read it as well.
* Variables: the float model's ``params`` (and ``batch_stats``...) unchanged, same paths;
  quantizer scales / zero points are added beside each op's kernel in the op's own scope.
  One ResQ state per call: an op called twice per frame keeps two (``resq_state/<op>/ref`` and
  ``resq_state/<op>/call1/ref``), and its MACs count twice (``layer_costs``).
* Costs come from the op's shapes at trace time, with the formulas of ``QConv`` /
  ``QConvTranspose`` / ``QDense`` (equal numbers for equal geometry).
* BatchNorm is not folded: an ``nn.BatchNorm`` after a conv stays a float per-channel affine map
  on the conv's output (docs/design.md, "Quantizing an unmodified model", says why this gives
  the numbers and BOPs of the folded layer).

Refused with a clear error: attention modules (products of two activations, which a weight
quantizer cannot cover) and lifted transforms (``nn.scan``, ``nn.remat``, ``nn.vmap``...)
inside the model, whose inner scopes would not carry the per-call ResQ state. Products of two
activations written as plain ``jnp`` ops (``q @ k``) are not module calls: they run in float
and, like additions and resizes, are not counted.

The op's own float computation is traced first (it creates the parameters exactly as Flax
does); under a quantized recipe its result is unused and dropped by XLA under ``jit`` (every
runner entry point is jitted), under the float recipe it is the output, so a float recipe
equals the float model bit for bit.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import meta
from flax.linen.linear import canonicalize_padding

from resq_jax.nn.layers import (
  CONV_IMPLS,
  policy_cost,
  resolve_conv_impl,
  rules_recipe,
  unflipped_kernel,
)
from resq_jax.nn.quantized import phase_scope, probing, quantized_linear, variable_path
from resq_jax.nn.weights import invalidate_act_quantizers
from resq_jax.ops import conv2d
from resq_jax.quant.cost import (
  LayerCost,
  conv_macs,
  conv_padding,
  conv_transpose_macs,
  dense_macs,
)
from resq_jax.quant.recipe import LayerRecipe, RecipeRules, float_recipe

INTERCEPTED_OPS = (nn.Conv, nn.ConvTranspose, nn.Dense)
ATTENTION_MODULES = (nn.MultiHeadDotProductAttention,)


@dataclasses.dataclass(frozen=True)
class InterceptedOp:
  """A Flax op run by :func:`quantize`, as the layer visitors see it (``visit_layers``,
  ``layer_calls``): the bound ``module`` and the recipe it executes."""

  module: nn.Module
  active_recipe: LayerRecipe

  @property
  def path(self) -> tuple[str, ...]:
    return variable_path(self.module)

  @property
  def recipe(self) -> LayerRecipe:
    return self.active_recipe


def _tuple(v, n: int) -> tuple[int, ...]:
  if v is None:
    v = 1
  return (v,) * n if isinstance(v, int) else tuple(v)


def _refuse(module: nn.Module, what: str) -> None:
  raise ValueError(
    f"quantize: op {'/'.join(variable_path(module))!r} ({type(module).__name__}) {what}; "
    "quantize covers "
    "2-D nn.Conv / nn.ConvTranspose on [B, H, W, C] and nn.Dense in float32 (use QConv / "
    "QConvTranspose / QDense for anything else)"
  )


def _check_op(module: nn.Module, x) -> None:
  if getattr(module, "mask", None) is not None:
    _refuse(module, "has a kernel mask")
  if module.dtype not in (None, jnp.float32) or module.param_dtype != jnp.float32:
    _refuse(module, f"computes in dtype={module.dtype}, param_dtype={module.param_dtype}")
  if jnp.dtype(x.dtype) != jnp.float32:
    _refuse(module, f"receives a {x.dtype} input")
  if isinstance(module, nn.Dense):
    if x.ndim < 2:
      _refuse(module, f"receives an input of shape {x.shape} (no batch axis)")
    return
  if x.ndim != 4 or len(_tuple(module.kernel_size, 1)) != 2:
    _refuse(module, f"has kernel_size={module.kernel_size} on an input of shape {x.shape}")
  if isinstance(module, nn.ConvTranspose):
    if canonicalize_padding(module.padding, 2) == "CIRCULAR":
      _refuse(module, "has padding='CIRCULAR'")


def _conv_geometry(module: nn.Conv, x_shape):
  """``(pre-padding (pads, mode) or None, padding for lax, strides, input and kernel
  dilation)`` exactly as ``nn.Conv.__call__`` resolves them."""
  strides = _tuple(module.strides, 2)
  in_dil, k_dil = _tuple(module.input_dilation, 2), _tuple(module.kernel_dilation, 2)
  padding = canonicalize_padding(module.padding, 2)
  pre = None
  if padding in ("CIRCULAR", "REFLECT"):
    k_eff = [(k - 1) * d + 1 for k, d in zip(_tuple(module.kernel_size, 2), k_dil)]
    pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in k_eff] + [(0, 0)]
    pre = (pads, {"CIRCULAR": "wrap", "REFLECT": "reflect"}[padding])
    padding = "VALID"
  elif padding == "CAUSAL":
    _refuse(module, "has padding='CAUSAL' (1-D convs only)")
  return pre, padding, strides, in_dil, k_dil


def _conv_linear(module: nn.Conv, x_shape, conv_impl: str):
  pre, padding, strides, in_dil, k_dil = _conv_geometry(module, x_shape)
  groups = module.feature_group_count
  plain = pre is None and in_dil == (1, 1) and k_dil == (1, 1) and module.precision is None
  if plain and resolve_conv_impl(conv_impl) == "im2col":
    pads = conv_padding(x_shape[1:3], _tuple(module.kernel_size, 2), strides, padding)
    return lambda x, w: conv2d(
      x, w, strides=strides, padding=pads, feature_group_count=groups, impl="im2col"
    )

  def linear(x, w):
    if pre is not None:
      x = jnp.pad(x, pre[0], mode=pre[1])
    return jax.lax.conv_general_dilated(
      x,
      w,
      strides,
      padding,
      lhs_dilation=in_dil,
      rhs_dilation=k_dil,
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups,
      precision=module.precision,
    )

  return linear


def _conv_cost(module: nn.Conv, x_shape, y_shape, recipe: LayerRecipe) -> LayerCost:
  pre, padding, strides, in_dil, k_dil = _conv_geometry(module, x_shape)
  in_hw = x_shape[1:3]
  if pre is not None:  # a wrapped / reflected border is real input: every tap counts
    in_hw = tuple(s + lo + hi for s, (lo, hi) in zip(in_hw, pre[0][1:3]))
  macs = conv_macs(
    in_hw,
    _tuple(module.kernel_size, 2),
    x_shape[-1],
    module.features,
    strides,
    padding,
    module.feature_group_count,
    in_dil,
    k_dil,
  )
  return _cost(macs, x_shape, y_shape, recipe)


def _conv_transpose_linear(module: nn.ConvTranspose):
  strides, k_dil = _tuple(module.strides, 2), _tuple(module.kernel_dilation, 2)
  padding = canonicalize_padding(module.padding, 2)
  return lambda x, w: jax.lax.conv_transpose(
    x,
    w,
    strides,
    padding,
    rhs_dilation=k_dil,
    transpose_kernel=False,
    precision=module.precision,
    preferred_element_type=module.preferred_element_type,
  )


def _conv_transpose_cost(module, x_shape, y_shape, recipe) -> LayerCost:
  padding = canonicalize_padding(module.padding, 2)
  macs = conv_transpose_macs(
    x_shape[1:3],
    _tuple(module.kernel_size, 2),
    x_shape[-1],
    module.features,
    _tuple(module.strides, 2),
    padding,
    1,
    _tuple(module.kernel_dilation, 2),
  )
  return _cost(macs, x_shape, y_shape, recipe)


def _dense_linear(module: nn.Dense):
  return lambda x, w: jax.lax.dot_general(
    x, w, (((x.ndim - 1,), (0,)), ((), ())), precision=module.precision
  )


def _dense_cost(module, x_shape, y_shape, recipe) -> LayerCost:
  return _cost(
    dense_macs(x_shape[-1], module.features, math.prod(x_shape[1:-1])), x_shape, y_shape, recipe
  )


def _cost(macs: int, x_shape, y_shape, recipe: LayerRecipe) -> LayerCost:
  """Per example: locations are the input's (channels excluded); the ResQ carry holds the
  input and the output of the op."""
  n_loc = math.prod(x_shape[1:-1])
  state = math.prod(x_shape[1:]) + math.prod(y_shape[1:]) if recipe.has_state else 0
  return LayerCost(
    macs=macs,
    n_locations=n_loc,
    state_elements=state,
    policy_comparisons=policy_cost(recipe, n_loc, x_shape[-1]),
  )


def _quantized_op(module: nn.Module, next_fun, args, kwargs, conv_impl: str):
  """One call of an intercepted op under the recipe its path selects."""
  if len(args) != 1 or kwargs:
    _refuse(module, "is called with arguments other than its input")
  x = args[0]
  _check_op(module, x)
  # The op's own computation creates its parameters exactly as Flax does (initialisers,
  # order, rngs); under a quantized recipe its result is unused (dead code under jit).
  y_float = next_fun(*args, **kwargs)
  found = rules_recipe(module)
  recipe = float_recipe() if found is None else found
  kernel = meta.unbox(module.get_variable("params", "kernel"))
  if isinstance(module, nn.ConvTranspose) and module.transpose_kernel:
    kernel = unflipped_kernel(kernel)  # the same layer, in the layout the quantizers assume
  bias = meta.unbox(module.get_variable("params", "bias")) if module.use_bias else None
  if isinstance(module, nn.ConvTranspose):
    linear, cost_fn = _conv_transpose_linear(module), _conv_transpose_cost
  elif isinstance(module, nn.Conv):
    linear, cost_fn = _conv_linear(module, x.shape, conv_impl), _conv_cost
  else:
    linear, cost_fn = _dense_linear(module), _dense_cost
  y = quantized_linear(
    module,
    x,
    kernel,
    bias,
    linear=linear,
    recipe=recipe,
    phase=None,
    cost=lambda: cost_fn(module, tuple(x.shape), tuple(y_float.shape), recipe),
    layer=InterceptedOp(module, recipe),
  )
  return y_float if recipe.mode == "float" and not probing() else y


def _interceptor(conv_impl: str):
  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    scope = module.scope
    if scope is not None and any("(" in name for name in scope.debug_path):
      raise ValueError(
        f"quantize: module {'/'.join(scope.debug_path)!r} runs inside a lifted transform "
        "(nn.scan, nn.remat, nn.vmap, nn.jit...), which quantize does not support: its "
        "inner scopes would not carry the per-call ResQ state. Use plain Python loops and "
        "jax.checkpoint outside the model (run_clip(remat=True)) instead"
      )
    if isinstance(module, ATTENTION_MODULES):
      raise ValueError(
        f"quantize: module {'/'.join(variable_path(module))!r} ({type(module).__name__}) "
        "multiplies two activations (attention), which ResQ does not cover: it quantizes "
        "linear ops with a weight operand (nn.Conv, nn.ConvTranspose, nn.Dense). Quantize "
        "the parts around it, e.g. quantize(block_without_attention, rules)"
      )
    if type(module) in INTERCEPTED_OPS or (
      isinstance(module, INTERCEPTED_OPS) and type(module).__call__ in _OP_CALLS
    ):
      return _quantized_op(module, next_fun, args, kwargs, conv_impl)
    return next_fun(*args, **kwargs)

  return intercept


_OP_CALLS = tuple(cls.__call__ for cls in INTERCEPTED_OPS)


class QuantizedModel(nn.Module):
  """``model`` (an unmodified linen module, sharing its scope: same variables and paths) with
  its ``nn.Conv`` / ``nn.ConvTranspose`` / ``nn.Dense`` calls under ``recipe_rules``. Build it
  with :func:`quantize`. ``__call__(x, *args, phase=None, **kwargs)`` runs ``model(x, *args,
  **kwargs)`` with ``phase`` given to every quantized op."""

  model: nn.Module
  recipe_rules: RecipeRules
  conv_impl: str = "auto"

  def setup(self):
    nn.share_scope(self, self.model)

  def __call__(self, x, *args, phase: str | None = None, **kwargs):
    with phase_scope(phase), nn.intercept_methods(_interceptor(self.conv_impl)):
      return self.model(x, *args, **kwargs)

  @property
  def recipe(self) -> LayerRecipe:
    """The recipe of ops no rule matches: float."""
    return float_recipe()


def quantize(model: nn.Module, rules, *, conv_impl: str = "auto") -> QuantizedModel:
  """``model`` (a plain ``flax.linen`` module) whose ``nn.Conv``, ``nn.ConvTranspose`` and
  ``nn.Dense`` calls execute the recipe of the first rule of ``rules`` matching their module
  path ('/'-joined, ``re.fullmatch``); unmatched ops stay float.

  Args:
    model: the float model, unchanged; its variables run the quantized model as they are, plus
      quantizer parameters (:func:`init_quantizers`).
    rules: a :class:`~resq_jax.quant.recipe.RecipeRules` or a tuple of ``(regex, recipe)``.
    conv_impl: 'auto', 'xla' or 'im2col', as ``QConv.conv_impl`` (the kernel-gradient
      implementation of undilated convs).
  Returns:
    a hashable :class:`QuantizedModel` (a static argument of ``run_clip`` / ``stream_step``)
    called as ``(x, *args, phase=..., **kwargs)``; ``run_clip``, ``stream_step``,
    ``calibrate_model``, ``layer_costs`` and QAT (gradients through ``run_clip``) take it.
  """
  if not isinstance(model, nn.Module):
    raise TypeError(f"quantize: model must be a flax.linen Module, got {type(model).__name__}")
  if not isinstance(rules, RecipeRules):
    if not isinstance(rules, (tuple, list)):
      raise TypeError(
        f"quantize: rules must be a RecipeRules or a tuple of (regex, LayerRecipe) pairs, got "
        f"{type(rules).__name__}"
      )
    rules = RecipeRules(tuple(rules))
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"quantize: conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
  if isinstance(model, QuantizedModel):
    return QuantizedModel(
      model.model, RecipeRules(rules.rules + model.recipe_rules.rules), conv_impl
    )
  return QuantizedModel(model, rules, conv_impl)


def init_quantizers(model, variables, frame, *, rng=None) -> dict:
  """Variables of a quantized ``model`` from the float model's ``variables`` (used as they are):
  every quantizer parameter added, weight scales fitted to the weights (min-max per channel,
  as ``init``), activation ranges invalidated (NaN) until ``calibrate_model`` sets them
  (``run_clip`` refuses them before).

  Args:
    model: from :func:`quantize` (or any model of ``QConv`` / ``QDense`` layers).
    variables: the float variables ``{'params': ..., 'batch_stats': ...}``.
    frame: a frame batch ``[B, H, W, C]`` to trace the model.
  """
  if "params" not in variables:
    raise ValueError("init_quantizers: variables must hold the float model's 'params'")
  rng = jax.random.key(0) if rng is None else rng
  base = {k: v for k, v in variables.items() if k not in ("resq_state", "resq_stats")}
  _, new = model.apply(base, frame, phase="key", mutable=["params"], rngs={"params": rng})
  return invalidate_act_quantizers(dict(base, params=new["params"]))


__all__ = [
  "ATTENTION_MODULES",
  "INTERCEPTED_OPS",
  "InterceptedOp",
  "QuantizedModel",
  "init_quantizers",
  "quantize",
]
