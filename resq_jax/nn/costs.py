"""Per-layer static costs of a model and exact BOPs of a clip run.

``layer_costs`` traces the model once (abstractly, nothing is computed) and asks every quantized
layer for its :class:`~resq_jax.quant.cost.LayerCost` from the shape of the input it receives.
``clip_bops`` combines those with the ``act_bits`` / ``w_bits`` stats of :func:`run_clip`.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import numpy as np

from resq_jax.nn.clip import model_variables
from resq_jax.nn.layers import QuantLayer
from resq_jax.quant.cost import LayerCost, clip_summary, dynamic_bops


def visit_layers(model: nn.Module, variables, frame: jax.Array, fn) -> dict:
  """``{layer path: fn(layer, input_shape)}`` over the quantized layers of ``model``.

  The model is traced abstractly on a frame batch ``[B, H, W, C]`` (nothing is computed).
  Paths are the module names joined by '/', matching the nesting of ``resq_stats``.
  """
  found = {}

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, QuantLayer) and context.method_name == "__call__":
      found["/".join(module.path)] = fn(module, tuple(args[0].shape))
    return next_fun(*args, **kwargs)

  def trace(v, x):
    with nn.intercept_methods(interceptor):
      return model.apply(v, x, phase="key", mutable=["resq_state", "resq_stats"])

  jax.eval_shape(trace, model_variables(variables), frame)
  return found


def layer_costs(model: nn.Module, variables, frame: jax.Array) -> dict[str, LayerCost]:
  """``{layer path: LayerCost}`` for one example of a frame batch ``[B, H, W, C]``."""
  return visit_layers(model, variables, frame, lambda layer, shape: layer.cost(shape))


def flatten_stats(stats) -> dict[str, dict]:
  """Nested ``resq_stats`` -> ``{layer path: {name: array}}``."""
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(stats)[0]:
    keys = [p.key for p in path]
    flat.setdefault("/".join(keys[:-1]), {})[keys[-1]] = leaf
  return flat


def clip_bops(stats, costs: dict[str, LayerCost]) -> dict[str, np.ndarray]:
  """Exact BOPs per layer, ``{path: [T, B] float64}``, from :func:`run_clip` stats."""
  flat = flatten_stats(stats)
  missing = sorted(set(costs) - set(flat))
  if missing:
    raise ValueError(f"stats have no entry for layers {missing}: were they produced by this "
                     "model?")
  return {path: dynamic_bops(c.macs, c.n_locations, np.asarray(flat[path]["w_bits"]),
                             np.asarray(flat[path]["act_bits"])) for path, c in costs.items()}


def network_macs(costs: dict[str, LayerCost]) -> int:
  return sum(c.macs for c in costs.values())


def bops_report(stats, costs: dict[str, LayerCost]) -> dict:
  """Network BOPs per frame (mean over the batch) ``[T]`` with clip average, peak and ratios."""
  per_layer = clip_bops(stats, costs)
  per_frame = functools.reduce(np.add, per_layer.values()).mean(axis=1)
  report = clip_summary(per_frame, network_macs(costs))
  report["bops_per_frame"] = per_frame
  report["macs_per_frame"] = network_macs(costs)
  report["state_elements"] = sum(c.state_elements for c in costs.values())
  return report
