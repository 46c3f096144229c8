"""Looking at a model without running it: the per-run collections, the variables without them,
the check that a model can be a static argument of jit, and an abstract trace that visits every
quantized layer call with the shape of its input.

Every other module of ``resq_jax.nn`` that inspects a model builds on these (costs, weights,
calibration, the runner), so this module imports only the layer classes.

Quantized layers (``QConv`` / ``QDense`` and the Flax ops ``resq_jax.quantize`` intercepts)
report their calls themselves while the model is traced (``resq_jax.nn.quantized.LayerCall``),
one per call: a layer called twice per frame is visited twice, with its own input shape and
cost, under the paths where each call keeps its state and stats (``conv``, ``conv/call1``).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from resq_jax.nn.quantized import LayerCall, recording_calls

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


def trace_calls(model, variables, frame, on_call=None, on_record=None) -> list[LayerCall]:
  """Trace ``model`` abstractly on ``frame`` (nothing is computed), calling
  ``on_call(module, args, kwargs, out)`` for every ``__call__`` of a submodule and
  ``on_record(call)`` for every call of a quantized layer, inside the trace. Returns the calls
  of quantized layers, in call order (:class:`~resq_jax.nn.quantized.LayerCall`)."""

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and on_call is not None:
      on_call(context.module, args, kwargs, out)
    return out

  def trace(v, x):
    with nn.intercept_methods(interceptor):
      return model.apply(v, x, phase="key", mutable=["resq_state", "resq_stats"])

  with recording_calls(on_record) as log:
    jax.eval_shape(trace, model_variables(variables), frame)
  return list(log)


def layer_calls(model: nn.Module, variables, frame: jax.Array) -> list[LayerCall]:
  """Every call of a quantized layer of ``model`` on a frame batch ``[B, H, W, C]``, in call
  order: ``path`` (where the call's state and stats live), ``layer_path`` (its parameters),
  the bound ``layer``, ``x_shape``, the ``recipe`` it executes and its ``cost``."""
  return trace_calls(model, variables, frame)


def visit_layers(model: nn.Module, variables, frame: jax.Array, fn) -> dict:
  """``{layer path: fn(layer, input_shape)}`` over the quantized layers of ``model`` (their
  first call; :func:`layer_calls` lists every call).

  The model is traced abstractly on a frame batch ``[B, H, W, C]`` (nothing is computed).
  Paths are the module names joined by '/', matching the nesting of ``params``. ``layer`` is
  bound: ``layer.active_recipe`` is the recipe it executes (per-layer rules applied); for a
  Flax op intercepted by ``resq_jax.quantize`` it is a view of the op
  (``resq_jax.nn.intercept.InterceptedOp``).
  """
  found = {}

  def on_record(call):  # inside the trace: the layer is bound and sees its enclosing modules
    if call.layer_path not in found:
      found[call.layer_path] = fn(call.layer, call.x_shape)

  trace_calls(model, variables, frame, on_record=on_record)
  return found
