"""Looking at a model without running it: the per-run collections, the variables without them,
the check that a model can be a static argument of jit, and an abstract trace that visits every
quantized layer with the shape of its input.

Every other module of ``resq_jax.nn`` that inspects a model builds on these (costs, weights,
calibration, the runner), so this module imports only the layer classes.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from resq_jax.nn.layers import QuantLayer

COLLECTIONS = ("resq_state", "resq_stats")


def model_variables(variables) -> dict:
  """``variables`` without the per-run collections (state and stats)."""
  return {k: v for k, v in variables.items() if k not in COLLECTIONS}


def check_hashable(model, where: str) -> None:
  """A clear error for a model that cannot be a static argument of jit (a list, dict or array
  attribute): name the attribute and the fix."""
  try:
    hash(model)
    return
  except TypeError:
    pass
  bad = []
  for field in dataclasses.fields(model) if dataclasses.is_dataclass(model) else ():
    try:
      hash(getattr(model, field.name, None))
    except TypeError:
      bad.append(f"{field.name}={type(getattr(model, field.name)).__name__}")
  raise TypeError(
    f"{where}: the model {type(model).__name__} is not hashable"
    f"{' (attributes ' + ', '.join(bad) + ')' if bad else ''}. Models are static "
    "arguments of jit (run_clip, stream_step, calibrate_model): give them "
    "hashable attributes (tuples instead of lists, tuples of pairs or frozen "
    "dataclasses instead of dicts, no arrays)."
  )


def trace_calls(model, variables, frame, on_call) -> None:
  """Trace ``model`` abstractly on ``frame``, calling ``on_call(module, args, out)`` for every
  ``__call__`` of a submodule."""

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__":
      on_call(context.module, args, kwargs, out)
    return out

  def trace(v, x):
    with nn.intercept_methods(interceptor):
      return model.apply(v, x, phase="key", mutable=["resq_state", "resq_stats"])

  jax.eval_shape(trace, model_variables(variables), frame)


def visit_layers(model: nn.Module, variables, frame: jax.Array, fn) -> dict:
  """``{layer path: fn(layer, input_shape)}`` over the quantized layers of ``model``.

  The model is traced abstractly on a frame batch ``[B, H, W, C]`` (nothing is computed).
  Paths are the module names joined by '/', matching the nesting of ``resq_stats``. ``layer``
  is bound: ``layer.active_recipe`` is the recipe it executes (per-layer rules applied).
  """
  found = {}

  def on_call(module, args, kwargs, out):
    if isinstance(module, QuantLayer):
      found["/".join(module.path)] = fn(module, tuple(args[0].shape))

  trace_calls(model, variables, frame, on_call)
  return found
