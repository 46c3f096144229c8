"""One frame of a model with ResQ state: what :func:`~resq_jax.nn.clip.run_clip` and
:func:`~resq_jax.nn.streaming.stream_step` share.

``model.apply`` with the per-run collections (:data:`COLLECTIONS`: the ``resq_state`` carried
in and out, the ``resq_stats`` out), the zero state a clip or stream starts from, the checks of
their arguments (frames, period, trigger, a hashable model, quantizers that match the weights),
and the step of one frame under a keyframe trigger: per example, a keyframe where the trigger
fires, the branches chosen by a ``lax.switch`` on the batch's mix (module docstring of
``resq_jax.nn.clip``).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from resq_jax.quant.keyframes import KeyframeTrigger, decide

Array = jax.Array
COLLECTIONS = ("resq_state", "resq_stats")


def _check_frames(x: Array, what: str, time_axis: bool) -> None:
  """Clear errors for inputs that would otherwise fail deep inside XLA, or divide by zero."""
  rank = 3 if time_axis else 2
  layout = "[B, T, ...]" if time_axis else "[B, ...]"
  if x.ndim < rank:
    raise ValueError(f"{what} must be {layout}, got shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
      f"{what} must be floating point, got dtype {x.dtype}: convert and "
      "normalise integer video first (e.g. (frames / 255 - mean) / std)"
    )
  sizes = {"B": x.shape[0]} | ({"T": x.shape[1]} if time_axis else {})
  empty = [f"{k}={v}" for k, v in sizes.items() if v < 1]
  if empty:
    raise ValueError(f"{what} of shape {x.shape} is empty ({', '.join(empty)})")


def _check_period(period) -> None:
  if isinstance(period, bool) or not isinstance(period, int) or period < 1:
    raise ValueError(f"period must be an int >= 1, got period={period!r}")


def _check_trigger(trigger) -> None:
  if trigger is not None and not isinstance(trigger, KeyframeTrigger):
    raise TypeError(
      f"trigger must be a resq_jax.quant.keyframes.KeyframeTrigger or None, got "
      f"{type(trigger).__name__}"
    )


def model_variables(variables) -> dict:
  """``variables`` without the per-run collections (state and stats)."""
  return {k: v for k, v in variables.items() if k not in COLLECTIONS}


def _apply(model, variables, frames, phase, state):
  full = dict(variables, resq_state=state) if state else variables
  out, mutated = model.apply(full, frames, phase=phase, mutable=list(COLLECTIONS))
  return out, mutated.get("resq_state", {}), mutated.get("resq_stats", {})


def _has_state(model, variables, frame) -> bool:
  _, state, _ = jax.eval_shape(
    functools.partial(_apply, model, phase="key", state=None), variables, frame
  )
  return bool(jax.tree_util.tree_leaves(state))


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


def _check_variables(model, variables, frame, check: bool) -> None:
  if check:
    from resq_jax.nn.weights import check_quantizers  # weights imports layers and costs

    check_quantizers(model, model_variables(variables), frame)


def model_has_state(model, variables, frame) -> bool:
  """Whether any layer of ``model`` carries ResQ state (per-layer recipes applied), i.e.
  whether ``period`` matters. ``frame``: a frame batch ``[B, H, W, C]`` or its shape struct."""
  return _has_state(model, model_variables(variables), frame)


def _zero_state(model, variables, frame):
  """The per-layer ResQ state of ``frame``'s batch, zeros (the first step is a keyframe)."""
  _, state, _ = jax.eval_shape(
    functools.partial(_apply, model, phase="key", state=None), variables, frame
  )
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state)


def _finite_rows(tree, batch: int) -> Array:
  """bool ``[B]``: every leaf ``[B, ...]`` of ``tree`` is finite in that example."""
  ok = jnp.ones((batch,), bool)
  for v in jax.tree_util.tree_leaves(tree):
    ok = ok & jnp.all(jnp.isfinite(v.reshape(batch, -1)), axis=1)
  return ok


def _select_rows(is_key: Array, key_value: Array, residual_value: Array) -> Array:
  """Per example (the leading axis), the keyframe branch's value where ``is_key``."""
  if key_value.ndim == 0 or key_value.shape[0] != is_key.shape[0]:
    raise ValueError(
      f"per-example keyframes need every output, state and stats leaf to lead with the batch "
      f"axis ({is_key.shape[0]}), got a leaf of shape {key_value.shape}"
    )
  wide = is_key.reshape((-1,) + (1,) * (key_value.ndim - 1))
  return jnp.where(wide, key_value, residual_value)


def _triggered_step(model, variables, resq, trig, frame, trigger, reset_on_nonfinite):
  """One frame under a keyframe trigger, per example: ``(y, stats, resq, trig, is_key [B])``.
  The one body of ``stream_step(..., trigger=)`` and ``run_clip(..., trigger=)``."""
  batch = frame.shape[0]
  stateful = bool(jax.tree_util.tree_leaves(resq))
  force = None
  if not stateful:
    force = jnp.ones((batch,), bool)
  elif reset_on_nonfinite:
    force = ~(_finite_rows(frame, batch) & _finite_rows(resq, batch))
  is_key, trig = decide(trigger, trig, frame, force)
  key = lambda state: _apply(model, variables, frame, "key", None)
  if not stateful:
    y, resq, stats = key(resq)
    return y, stats, resq, trig, is_key
  residual = lambda state: _apply(model, variables, frame, "residual", state)

  def mixed(state):  # both branches on the whole batch, then per example
    return jax.tree.map(functools.partial(_select_rows, is_key), key(state), residual(state))

  # 0: every example residual, 1: every example key, 2: a mix.
  branch = jnp.where(jnp.all(is_key), 1, jnp.where(jnp.any(is_key), 2, 0))
  y, resq, stats = jax.lax.switch(branch, (residual, key, mixed), resq)
  return y, stats, resq, trig, is_key
