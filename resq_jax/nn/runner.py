"""Running a network over video clips: ``run_clip`` (a scan over frames), and a streaming API
(``stream_init`` / ``stream_step``: ``resq_jax.nn.runner``, re-exported here).

The model is any Flax module whose ``__call__(x, phase=...)`` takes one frame batch
``[B, H, W, C]`` and passes ``phase`` on to its quantized layers (``resq_jax.nn.layers``). Its
per-layer ResQ state lives in the ``resq_state`` collection and is the scan carry.

Keyframes are frames with ``t % period == 0``. Because a keyframe restarts every layer's
reference, the frames between two keyframes form an independent group: ``run_clip`` folds the
groups of a clip into the batch, runs one keyframe step on all of them at once and then a
``lax.scan`` over the ``period - 1`` residual frames. A residual frame therefore never pays for
the keyframe branch (no select over both), and the sequential depth is ``period``, not ``T``.
Recipes without state (float, FQ) have no temporal dependence: their frames are folded into the
batch entirely.

Adaptive keyframes (``trigger=``, a :class:`~resq_jax.quant.keyframes.KeyframeTrigger`): each
example of the batch starts a keyframe where the trigger fires on its own input statistics (scene
cut, accumulated motion since its keyframe, the trigger's ``max_period`` as the longest
distance: the one source of it under a trigger, ``period`` is then left out or equal), so keyframes
are no longer at fixed times and ``run_clip`` runs the clip sequentially: a ``lax.scan`` over
all ``T`` frames whose body is exactly :func:`stream_step`'s. Because the decision is per
example, a frame's key/residual choice is a ``lax.switch`` on the batch's mix: all residual
runs only the residual branch, all key only the keyframe branch, and a mixed frame runs both
on the whole batch and picks per example (``jnp.where`` over the batch axis on the outputs,
the ResQ state and the stats). A mixed frame therefore costs one keyframe pass plus one
residual pass of compute; with batch 1 (streaming) frames are never mixed. The stats record,
per example, the branch it took, so ``bops_report`` counts triggered keyframes at key cost.

Inputs: frames are floating point (normalise integer video first: the model's normalisation is
not this module's to guess); ``B >= 1`` and ``T >= 1``, else a ValueError / TypeError.

Non-finite inputs: a NaN or inf in a frame reaches the layers' ResQ state. Under static ResQ
('closed' and 'prev' carry the reconstruction) it poisons every later frame of its keyframe
group, and the next keyframe clears it. Dynamic ResQ's policies compare magnitudes against
thresholds, so a NaN location is given 0 bits (skipped): its residual is dropped silently while
the reference keeps the NaN. ``stream_step(..., reset_on_nonfinite=True)`` forces a keyframe
whenever the incoming frame or the carried state is not finite, so a stream recovers at the
first finite frame.

Streaming: :func:`stream_init`, :func:`stream_step` and
the :class:`StreamState` they carry.

A step equals the corresponding frame of :func:`~resq_jax.nn.runner.run_clip` over the same
frames (the model, keyframes, adaptive keyframes and non-finite inputs are described in the
module docstring of ``resq_jax.nn.runner``). With a fixed period the keyframe and residual
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

from resq_jax.nn.layers import rolled_loop
from resq_jax.nn.tracing import COLLECTIONS, check_hashable, model_variables
from resq_jax.nn.weights import check_quantizers
from resq_jax.quant.keyframes import (
  KeyframeTrigger,
  TriggerState,
  decide,
  keyframe_period,
  trigger_init,
)

Array = jax.Array

# --- One frame with ResQ state: what run_clip and stream_step share --------------------------


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


def _check_trigger(trigger) -> None:
  if trigger is not None and not isinstance(trigger, KeyframeTrigger):
    raise TypeError(
      f"trigger must be a resq_jax.quant.keyframes.KeyframeTrigger or None, got "
      f"{type(trigger).__name__}"
    )


def _apply(model, variables, frames, phase, state):
  full = dict(variables, resq_state=state) if state else variables
  out, mutated = model.apply(full, frames, phase=phase, mutable=list(COLLECTIONS))
  return out, mutated.get("resq_state", {}), mutated.get("resq_stats", {})


def _has_state(model, variables, frame) -> bool:
  _, state, _ = jax.eval_shape(
    functools.partial(_apply, model, phase="key", state=None), variables, frame
  )
  return bool(jax.tree_util.tree_leaves(state))


def _check_variables(model, variables, frame, check: bool) -> None:
  if check:
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


# --- Streaming: one frame at a time ----------------------------------------------------------


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
  example). The trigger's ``max_period`` is then the longest distance between keyframes of
  the stream: ``stream_step`` is called with the same trigger and without ``period`` (or with
  ``period=trigger.max_period``)."""
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
  period: int | None = None,
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
    period: keyframe period K >= 1 without a trigger (required then); under a trigger leave it
      out or pass ``trigger.max_period`` (a different value is a ValueError).
    reset_on_nonfinite: force a keyframe (and restart the period) when ``frame`` or the carried
      ResQ state holds a NaN or inf, instead of carrying it to the next keyframe.
    check: as in :func:`run_clip` (cached: free after the first step with the same arrays).
    trigger: adaptive keyframes as in :func:`run_clip` (per example, at the latest every
      ``trigger.max_period`` frames); ``stream`` must come from
      ``stream_init(..., trigger=...)``. ``new_stream.is_keyframe`` is then ``[B]``. Under a
      trigger, ``reset_on_nonfinite`` forces a keyframe only in the examples that are not
      finite (the frame's row or that example's ResQ state).
  """
  check_hashable(model, "stream_step")
  period = keyframe_period(period, trigger, "stream_step")
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
      trigger=trigger,
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


# --- Clips: a scan over frames --------------------------------------------------------------


class ClipResult(NamedTuple):
  """``outputs``: the model's outputs with a time axis, ``[B, T, ...]``; ``stats``: per layer,
  per frame ``{path: {name: [T, B, ...]}}``; ``state``: the ResQ state after the last frame;
  ``keyframes``: bool ``[B, T]``, where the keyframe branch ran (every frame of a model without
  ResQ state)."""

  outputs: Any
  stats: Any
  state: Any
  keyframes: Any = None


def _fold(x, n):  # [B, n*k, ...] -> [B*n, k, ...]
  return x.reshape(x.shape[0] * n, x.shape[1] // n, *x.shape[2:])


def _merge_time(x):  # [B, T, ...] -> [B*T, ...]
  return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def _is_rolled(unroll: int | bool, n_steps: int) -> bool:
  """Whether ``lax.scan(..., unroll=unroll)`` over ``n_steps`` keeps a loop."""
  if unroll is True:
    return False
  return n_steps > max(1, int(unroll))


def _run_groups(model, variables, clip, period, unroll, remat):
  """Frames ``[B, G*period, ...]`` as G independent groups. Returns outputs ``[B, G*period, ...]``,
  stats ``[G*period, B, ...]`` and the state of the last group."""
  batch, n_groups = clip.shape[0], clip.shape[1] // period
  groups = _fold(clip, n_groups)  # [B*G, period, ...]
  y0, state, s0 = _apply(model, variables, groups[:, 0], "key", None)
  rolled = _is_rolled(unroll, period - 1)

  def body(state, frame):
    with rolled_loop(rolled):  # QConv(conv_impl='auto') picks the loop-friendly conv VJP
      y, state, s = _apply(model, variables, frame, "residual", state)
    return state, (y, s)

  if remat:
    # Recompute each residual frame's activations in the backward pass instead of storing them:
    # the scan then keeps only its carry per frame (memory flat in the frame count).
    body = jax.checkpoint(body)
  residual_frames = jnp.moveaxis(groups[:, 1:], 1, 0)  # [period-1, B*G, ...]
  state, (ys, ss) = jax.lax.scan(body, state, residual_frames, unroll=unroll)

  def outputs(first, rest):  # [B*G, ...], [period-1, B*G, ...] -> [B, G*period, ...]
    y = jnp.concatenate([first[:, None], jnp.moveaxis(rest, 0, 1)], axis=1)
    return y.reshape(batch, n_groups * period, *y.shape[2:])

  def stats(first, rest):  # -> [G*period, B, ...]
    return jnp.moveaxis(outputs(first, rest), 1, 0)

  last_group = lambda s: s.reshape(batch, n_groups, *s.shape[1:])[:, -1]
  return (
    jax.tree.map(outputs, y0, ys),
    jax.tree.map(stats, s0, ss),
    jax.tree.map(last_group, state),
  )


def run_clip(
  model,
  variables,
  clip: Array,
  *,
  period: int | None = None,
  unroll: int | bool = 1,
  remat: bool = False,
  check: bool = True,
  trigger: KeyframeTrigger | None = None,
) -> ClipResult:
  """Run ``model`` over a clip ``[B, T, H, W, C]`` with keyframes at ``t % period == 0``, or
  where ``trigger`` fires.

  Args:
    model: a Flax module taking ``(frame, phase=...)``. It is a static argument of jit, so it
      must be hashable: attributes are ints, strings, tuples, recipes... never lists, dicts or
      arrays (a clear TypeError says which attribute is not).
    variables: its variables (``params``, ``batch_stats``...); any stale ``resq_state`` /
      ``resq_stats`` are ignored.
    clip: frames ``[B, T, ...]``.
    period: keyframe period K >= 1 (K = 1: every frame is a keyframe, i.e. FQ with key grids),
      required without a trigger; under a trigger leave it out or pass ``trigger.max_period``
      (the trigger is the one source of the longest distance; another value is a ValueError).
    unroll: ``lax.scan`` unroll factor of the residual loop (True unrolls it fully). A rolled
      loop compiles in a time independent of the period; its convs use the im2col kernel
      gradient on CPU (``QConv.conv_impl='auto'``), so training no longer needs unrolling there
      (BENCHMARKS.md, scan table).
    remat: rematerialise each residual frame in the backward pass (``jax.checkpoint`` of the
      scan body): activation memory of training stops growing with the period, for about one
      extra forward pass of the residual frames.
    check: refuse quantizer parameters that do not match the weights (stale scales after
      copying weights by hand, or invalidated by ``load_float_weights`` and not calibrated;
      :func:`~resq_jax.nn.weights.check_quantizers`). Only concrete variables are checked
      (not under an outer jit / grad), once per set of arrays.
    trigger: adaptive keyframes (:class:`~resq_jax.quant.keyframes.KeyframeTrigger`): each
      example starts a keyframe on its first frame and where the trigger fires on its input,
      at the latest ``trigger.max_period`` frames after its last keyframe. The
      clip then runs as one scan over all ``T`` frames with :func:`stream_step`'s body
      (``unroll`` and ``remat`` apply to it); see the module docstring for the cost of frames
      where examples disagree.
  Returns:
    :class:`ClipResult`: ``outputs [B, T, ...]``, ``stats[layer][name] [T, B, ...]`` (time
    first, the layout ``bops_report`` takes), ``keyframes`` bool ``[B, T]``.
  """
  check_hashable(model, "run_clip")
  period = keyframe_period(period, trigger, "run_clip")
  _check_frames(clip, "clip", time_axis=True)
  _check_variables(model, variables, clip[:, 0], check)
  if trigger is not None:
    return _run_clip_triggered(
      model, variables, clip, trigger=trigger, unroll=unroll, remat=bool(remat)
    )
  return _run_clip(model, variables, clip, period=period, unroll=unroll, remat=bool(remat))


@functools.partial(jax.jit, static_argnames=("model", "period", "unroll", "remat"))
def _run_clip(
  model, variables, clip: Array, *, period: int, unroll: int | bool = 1, remat: bool = False
) -> ClipResult:
  """The jitted body of :func:`run_clip`, which checks the arguments."""
  variables = model_variables(variables)
  batch, length = clip.shape[:2]
  if not _has_state(model, variables, clip[:, 0]):
    return _run_stateless(model, variables, clip)
  n_full = (length // period) * period
  parts = []
  if n_full:
    parts.append(_run_groups(model, variables, clip[:, :n_full], period, unroll, remat))
  if length > n_full:
    parts.append(_run_groups(model, variables, clip[:, n_full:], length - n_full, unroll, remat))
  outputs = jax.tree.map(lambda *v: jnp.concatenate(v, axis=1), *[p[0] for p in parts])
  stats = jax.tree.map(lambda *v: jnp.concatenate(v, axis=0), *[p[1] for p in parts])
  keyframes = jnp.broadcast_to(jnp.arange(length) % period == 0, (batch, length))
  return ClipResult(outputs, stats, parts[-1][2], keyframes)


def _run_stateless(model, variables, clip) -> ClipResult:
  """A model without ResQ state: every frame is independent (a keyframe), all in one batch."""
  batch, length = clip.shape[:2]
  y, _, s = _apply(model, variables, _merge_time(clip), "key", None)
  split = lambda v: v.reshape(batch, length, *v.shape[1:])
  return ClipResult(
    jax.tree.map(split, y),
    jax.tree.map(lambda v: jnp.moveaxis(split(v), 1, 0), s),
    {},
    jnp.ones((batch, length), bool),
  )


@functools.partial(jax.jit, static_argnames=("model", "trigger", "unroll", "remat"))
def _run_clip_triggered(
  model, variables, clip: Array, *, trigger: KeyframeTrigger, unroll: int | bool, remat: bool
) -> ClipResult:
  """The jitted body of :func:`run_clip` with a trigger (``trigger`` already capped)."""
  variables = model_variables(variables)
  batch, length = clip.shape[:2]
  if not _has_state(model, variables, clip[:, 0]):
    return _run_stateless(model, variables, clip)
  rolled = _is_rolled(unroll, length)

  def body(carry, frame):
    resq, trig = carry
    with rolled_loop(rolled):
      y, stats, resq, trig, is_key = _triggered_step(
        model, variables, resq, trig, frame, trigger, False
      )
    return (resq, trig), (y, stats, is_key)

  if remat:
    body = jax.checkpoint(body)
  init = (_zero_state(model, variables, clip[:, 0]), trigger_init(clip[:, 0]))
  (resq, _), (ys, stats, keys) = jax.lax.scan(body, init, jnp.moveaxis(clip, 1, 0), unroll=unroll)
  outputs = jax.tree.map(lambda v: jnp.moveaxis(v, 0, 1), ys)
  return ClipResult(outputs, stats, resq, jnp.moveaxis(keys, 0, 1))


# The jit caches behind the wrappers (tests and tools count compilations with these).
run_clip._cache_size = lambda: _run_clip._cache_size() + _run_clip_triggered._cache_size()
