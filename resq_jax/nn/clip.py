"""Running a network over video clips: ``run_clip`` (a scan over frames), and a streaming API
(``stream_init`` / ``stream_step``: ``resq_jax.nn.streaming``, re-exported here).

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
cut, accumulated motion since its keyframe, ``period`` as the longest distance), so keyframes
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

The parts that clips and streams share (the apply with the ResQ collections, the argument
checks, the per-example step under a trigger) are in ``resq_jax.nn.frame_step``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from resq_jax.nn.frame_step import (  # noqa: F401 (re-exported: defined here before)
  COLLECTIONS,
  Array,
  _apply,
  _check_frames,
  _check_period,
  _check_trigger,
  _check_variables,
  _has_state,
  _triggered_step,
  _zero_state,
  check_hashable,
  model_has_state,
  model_variables,
)
from resq_jax.nn.layers import rolled_loop
from resq_jax.nn.streaming import (  # noqa: F401 (re-exported: defined here before)
  StreamState,
  stream_init,
  stream_step,
)
from resq_jax.quant.keyframes import KeyframeTrigger, trigger_init


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
  period: int,
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
    period: keyframe period K >= 1 (K = 1: every frame is a keyframe, i.e. FQ with key grids).
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
      at the latest ``min(period, trigger.max_period)`` frames after its last keyframe. The
      clip then runs as one scan over all ``T`` frames with :func:`stream_step`'s body
      (``unroll`` and ``remat`` apply to it); see the module docstring for the cost of frames
      where examples disagree.
  Returns:
    :class:`ClipResult`: ``outputs [B, T, ...]``, ``stats[layer][name] [T, B, ...]`` (time
    first, the layout ``bops_report`` takes), ``keyframes`` bool ``[B, T]``.
  """
  check_hashable(model, "run_clip")
  _check_period(period)
  _check_trigger(trigger)
  _check_frames(clip, "clip", time_axis=True)
  _check_variables(model, variables, clip[:, 0], check)
  if trigger is not None:
    return _run_clip_triggered(
      model, variables, clip, trigger=trigger.capped(period), unroll=unroll, remat=bool(remat)
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
