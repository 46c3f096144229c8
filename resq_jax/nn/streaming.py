"""Running a network online, one frame at a time: :func:`stream_init`, :func:`stream_step` and
the :class:`StreamState` they carry.

A step equals the corresponding frame of :func:`~resq_jax.nn.clip.run_clip` over the same
frames (the model, keyframes, adaptive keyframes and non-finite inputs are described in the
module docstring of ``resq_jax.nn.clip``). With a fixed period the keyframe and residual
branches are a ``lax.cond`` on a scalar, so only one of them executes; under a keyframe trigger
the decision is per example (the step ``run_clip(..., trigger=)`` scans), and with batch 1
frames are never mixed. ``stream_step(..., reset_on_nonfinite=True)`` forces a keyframe
whenever the incoming frame or the carried state is not finite, so a stream recovers at the
first finite frame.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from resq_jax.nn.frame_step import (
  Array,
  _apply,
  _check_frames,
  _check_period,
  _check_trigger,
  _check_variables,
  _triggered_step,
  _zero_state,
  check_hashable,
  model_variables,
)
from resq_jax.quant.keyframes import KeyframeTrigger, TriggerState, trigger_init


class StreamState(NamedTuple):
  """Online state: ``t`` the index of the next frame, ``since_key`` the frames processed since
  the last keyframe, counting it (1 right after a keyframe; with a fixed period the next frame
  is a keyframe when ``since_key % period == 0``), and the per-layer ResQ state.

  Under a keyframe trigger (``stream_init(..., trigger=...)``) ``since_key`` is per example,
  int32 ``[B]``, and ``trigger`` holds the trigger's carry
  (:class:`~resq_jax.quant.keyframes.TriggerState`, whose ``since_key`` is the same array);
  otherwise ``since_key`` is a scalar and ``trigger`` None."""

  t: Array
  since_key: Array
  resq: Any
  trigger: TriggerState | None = None

  @property
  def is_keyframe(self) -> Array:
    """Whether the frame just processed was a keyframe: scalar, or ``[B]`` under a trigger."""
    return self.since_key == 1


def stream_init(
  model, variables, frame: Array, *, trigger: KeyframeTrigger | None = None
) -> StreamState:
  """Initial online state for frames shaped like ``frame`` ``[B, H, W, C]`` (zeros; the first
  step is a keyframe). With ``trigger``, the state of a stream stepped with that trigger
  (per-example ``since_key`` ``[B]`` and the trigger's carry: two frames and a number per
  example)."""
  check_hashable(model, "stream_init")
  _check_trigger(trigger)
  _check_frames(frame, "frame", time_axis=False)
  zeros = _zero_state(model, model_variables(variables), frame)
  t = jnp.zeros((), jnp.int32)
  if trigger is None:
    return StreamState(t=t, since_key=jnp.zeros((), jnp.int32), resq=zeros)
  trig = trigger_init(frame)
  return StreamState(t=t, since_key=trig.since_key, resq=zeros, trigger=trig)


def _all_finite(tree) -> Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in leaves]))


def stream_step(
  model,
  variables,
  stream: StreamState,
  frame: Array,
  *,
  period: int,
  reset_on_nonfinite: bool = False,
  check: bool = True,
  trigger: KeyframeTrigger | None = None,
):
  """One online step: ``(stream, frame [B, H, W, C]) -> (output, stats, new_stream)``.

  Equal to the corresponding frame of :func:`run_clip` over the same frames. Keyframe and
  residual branches are a ``lax.cond`` on a scalar, so only one of them executes. ``stats`` are
  ``[B, ...]`` per layer: stack a list of them with ``stack_stream_stats`` into run_clip's
  ``[T, B, ...]`` layout for ``bops_report``. ``model`` must be hashable (see :func:`run_clip`).

  Args:
    reset_on_nonfinite: force a keyframe (and restart the period) when ``frame`` or the carried
      ResQ state holds a NaN or inf, instead of carrying it to the next keyframe.
    check: as in :func:`run_clip` (cached: free after the first step with the same arrays).
    trigger: adaptive keyframes as in :func:`run_clip` (per example, at the latest every
      ``min(period, trigger.max_period)`` frames); ``stream`` must come from
      ``stream_init(..., trigger=...)``. ``new_stream.is_keyframe`` is then ``[B]``. Under a
      trigger, ``reset_on_nonfinite`` forces a keyframe only in the examples that are not
      finite (the frame's row or that example's ResQ state).
  """
  check_hashable(model, "stream_step")
  _check_period(period)
  _check_trigger(trigger)
  _check_frames(frame, "frame", time_axis=False)
  _check_variables(model, variables, frame, check)
  if (trigger is None) != (stream.trigger is None):
    raise ValueError(
      "stream_step(trigger=...) needs a stream from stream_init(..., trigger=...), and a "
      "stream initialised for a trigger needs stream_step(..., trigger=...)"
    )
  if trigger is not None:
    return _stream_step_triggered(
      model,
      variables,
      stream,
      frame,
      trigger=trigger.capped(period),
      reset_on_nonfinite=reset_on_nonfinite,
    )
  return _stream_step(
    model, variables, stream, frame, period=period, reset_on_nonfinite=reset_on_nonfinite
  )


@functools.partial(jax.jit, static_argnames=("model", "period", "reset_on_nonfinite"))
def _stream_step(
  model,
  variables,
  stream: StreamState,
  frame: Array,
  *,
  period: int,
  reset_on_nonfinite: bool = False,
):
  """The jitted body of :func:`stream_step`, which checks the arguments."""
  variables = model_variables(variables)
  key = lambda state: _apply(model, variables, frame, "key", None)
  residual = lambda state: _apply(model, variables, frame, "residual", state)
  if not jax.tree_util.tree_leaves(stream.resq):
    is_key = jnp.asarray(True)
    y, state, stats = key(stream.resq)
  else:
    is_key = stream.since_key % period == 0
    if reset_on_nonfinite:
      is_key = is_key | ~(_all_finite(frame) & _all_finite(stream.resq))
    y, state, stats = jax.lax.cond(is_key, key, residual, stream.resq)
  since_key = jnp.where(is_key, 1, stream.since_key + 1).astype(jnp.int32)
  return y, stats, StreamState(t=stream.t + 1, since_key=since_key, resq=state)


@functools.partial(jax.jit, static_argnames=("model", "trigger", "reset_on_nonfinite"))
def _stream_step_triggered(
  model,
  variables,
  stream: StreamState,
  frame: Array,
  *,
  trigger: KeyframeTrigger,
  reset_on_nonfinite: bool,
):
  """The jitted body of :func:`stream_step` with a trigger (``trigger`` already capped)."""
  y, stats, resq, trig, _ = _triggered_step(
    model,
    model_variables(variables),
    stream.resq,
    stream.trigger,
    frame,
    trigger,
    reset_on_nonfinite,
  )
  new = StreamState(t=stream.t + 1, since_key=trig.since_key, resq=resq, trigger=trig)
  return y, stats, new


# The jit caches behind the wrappers (tests and tools count compilations with these).
stream_step._cache_size = lambda: _stream_step._cache_size() + _stream_step_triggered._cache_size()
