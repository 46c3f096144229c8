"""Adaptive keyframes: when to restart ResQ's references, from cheap input statistics.

A residual frame of closed-loop ResQ carries the residual weights' error ``Qr(W) - W`` applied
to the whole displacement ``x_t - xh_key`` since its keyframe (docs/drift.md), and a scene cut
makes that displacement as large as a frame. A :class:`KeyframeTrigger` decides, per frame and
per example (each video of a batch for itself), whether to start a new keyframe:

* scene cut: ``mean |x_t - x_key|`` over the frame (``x_key``: the input of the example's last
  keyframe) ``> cut_threshold``;
* drift: ``sum`` since the keyframe of ``mean |x_s - x_{s-1}|`` ``> drift_threshold`` (a proxy
  for the displacement that the residual weights' error multiplies);
* period: frames since the keyframe ``>= max_period``;

never when fewer than ``min_period`` frames have passed since the keyframe, and always on an
example's first frame. Means are over every axis but the batch, in input units (the model's
normalised frames). Everything here is pure array math; ``resq_jax.nn.runner`` runs it.

One source for the longest distance between keyframes: without a trigger it is the ``period``
argument of ``run_clip`` / ``stream_step`` / ``calibrate_model``; with a trigger it is the
trigger's ``max_period``, and ``period`` is then left out (None) or must equal it
(:func:`keyframe_period` refuses anything else).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class KeyframeTrigger:
  """When a new keyframe starts (module docstring). Hashable: a static argument of jit.

  ``None`` thresholds switch their criterion off; with both off the trigger is a fixed period
  ``max_period`` (keyframes at ``t % max_period == 0``).
  """

  cut_threshold: float | None = None
  drift_threshold: float | None = None
  max_period: int = 64
  min_period: int = 1

  def __post_init__(self):
    for name in ("max_period", "min_period"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"KeyframeTrigger.{name} must be an int >= 1, got {value!r}")
    if self.min_period > self.max_period:
      raise ValueError(
        f"KeyframeTrigger.min_period={self.min_period} exceeds max_period={self.max_period}"
      )
    for name in ("cut_threshold", "drift_threshold"):
      value = getattr(self, name)
      if value is not None and (isinstance(value, bool) or not float(value) >= 0.0):
        raise ValueError(f"KeyframeTrigger.{name} must be None or >= 0, got {value!r}")

  def capped(self, period: int) -> KeyframeTrigger:
    """This trigger with ``max_period`` at most ``period`` (``min_period`` lowered with it)."""
    top = min(self.max_period, int(period))
    return dataclasses.replace(self, max_period=top, min_period=min(self.min_period, top))


def keyframe_period(period: int | None, trigger: KeyframeTrigger | None, where: str) -> int:
  """The longest distance between keyframes of a run: ``period`` without a trigger (required,
  an int >= 1); with ``trigger`` its ``max_period``, the single source, so ``period`` must be
  None or equal to it. ``where`` names the caller in the error."""
  if trigger is not None and not isinstance(trigger, KeyframeTrigger):
    raise TypeError(
      f"{where}: trigger must be a resq_jax.quant.keyframes.KeyframeTrigger or None, got "
      f"{type(trigger).__name__}"
    )
  if period is not None and (isinstance(period, bool) or not isinstance(period, int) or period < 1):
    raise ValueError(f"{where}: period must be an int >= 1, got period={period!r}")
  if trigger is None:
    if period is None:
      raise ValueError(f"{where}: period is required without a keyframe trigger")
    return period
  if period is not None and period != trigger.max_period:
    raise ValueError(
      f"{where}: period={period} disagrees with trigger.max_period={trigger.max_period}; under "
      "a trigger its max_period alone caps the distance between keyframes: leave period out "
      "or pass the same value"
    )
  return trigger.max_period


class TriggerState(NamedTuple):
  """Per-example trigger carry.

  ``since_key`` int32 ``[B]``: frames since the example's last keyframe, counting it (1 right
  after a keyframe; 0 before the first frame, so the first frame is a keyframe);
  ``key_input`` ``[B, ...]``: the input of the last keyframe; ``prev_input`` ``[B, ...]``: the
  previous frame's input; ``drift`` float32 ``[B]``: the sum of ``mean |x_s - x_{s-1}|`` over the
  frames since the keyframe.
  """

  since_key: Array
  key_input: Array
  prev_input: Array
  drift: Array


def trigger_init(frame: Array) -> TriggerState:
  """The state before the first frame of a batch shaped like ``frame`` ``[B, ...]``."""
  batch = frame.shape[0]
  return TriggerState(
    since_key=jnp.zeros((batch,), jnp.int32),
    key_input=jnp.zeros(frame.shape, frame.dtype),
    prev_input=jnp.zeros(frame.shape, frame.dtype),
    drift=jnp.zeros((batch,), jnp.float32),
  )


def _mean_abs(a: Array, b: Array) -> Array:
  """``mean |a - b|`` over every axis but the first: ``[B, ...] -> [B]`` float32."""
  diff = jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))
  return jnp.mean(diff.reshape(diff.shape[0], -1), axis=1)


def decide(
  trigger: KeyframeTrigger, state: TriggerState, frame: Array, force: Array | None = None
) -> tuple[Array, TriggerState]:
  """Whether ``frame`` ``[B, ...]`` starts a keyframe, per example: ``(is_key [B] bool,
  new_state)``.

  ``force`` (bool ``[B]``, optional) makes a keyframe regardless of the criteria (and of
  ``min_period``), e.g. for a non-finite frame.
  """
  n = state.since_key
  cut = _mean_abs(frame, state.key_input)
  drift = state.drift + _mean_abs(frame, state.prev_input)
  fire = n >= trigger.max_period
  if trigger.cut_threshold is not None:
    fire = fire | (cut > trigger.cut_threshold)
  if trigger.drift_threshold is not None:
    fire = fire | (drift > trigger.drift_threshold)
  is_key = (n == 0) | (fire & (n >= trigger.min_period))
  if force is not None:
    is_key = is_key | force
  wide = is_key.reshape((-1,) + (1,) * (frame.ndim - 1))
  new_state = TriggerState(
    since_key=jnp.where(is_key, 1, n + 1).astype(jnp.int32),
    key_input=jnp.where(wide, frame, state.key_input),
    prev_input=frame,
    drift=jnp.where(is_key, 0.0, drift).astype(jnp.float32),
  )
  return is_key, new_state


@functools.partial(jax.jit, static_argnames="trigger")
def trigger_keyframes(trigger: KeyframeTrigger, clip: Array) -> Array:
  """bool ``[B, T]``: where ``trigger`` starts keyframes over ``clip`` ``[B, T, ...]`` (each
  example's first frame included), i.e. the keyframes of ``run_clip(..., trigger=trigger)`` on
  it (a stateful model, finite frames). Calibration uses it to see the run's residuals."""

  def body(state, frame):
    is_key, state = decide(trigger, state, frame)
    return state, is_key

  _, keys = jax.lax.scan(body, trigger_init(clip[:, 0]), jnp.moveaxis(clip, 1, 0))
  return jnp.moveaxis(keys, 0, 1)


def trigger_ops(trigger: KeyframeTrigger, frame_shape: tuple[int, ...]) -> int:
  """Arithmetic operations of :func:`decide` per example and frame (not bit operations: report
  them beside BOPs). ``frame_shape``: ``[B, H, W, C]`` or ``[H, W, C]`` (the per-example part is
  the last three axes). Each enabled statistic costs ``N`` subtractions, ``N`` absolute values
  and ``N`` additions (``N = H * W * C``); the drift adds one more addition; the threshold
  comparisons and the counter are ignored."""
  n = math.prod(frame_shape[-3:])
  ops = 0
  if trigger.cut_threshold is not None:
    ops += 3 * n
  if trigger.drift_threshold is not None:
    ops += 3 * n + 1
  return ops
