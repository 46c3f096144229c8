"""Adaptive keyframes: the trigger's decisions against a NumPy loop, and run_clip / stream_step
under a trigger against a per-example reference loop, fixed periods and hand-counted BOPs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_nets import TinyNet, random_walk_clip

from resq_jax.nn import KeyframeTrigger, trigger_ops
from resq_jax.nn.calibrate import CalibrationMethods, calibrate_model
from resq_jax.nn.costs import bops_report, layer_costs, stack_stream_stats
from resq_jax.nn.runner import run_clip, stream_init, stream_step
from resq_jax.quant.dynamic import FixedStepPolicy
from resq_jax.quant.keyframes import decide, trigger_init
from resq_jax.quant.recipe import dynamic_recipe, float_recipe, resq_recipe

T = 12
MINMAX = CalibrationMethods("minmax", "minmax", "minmax", "minmax")
RECIPES = {
  "float": float_recipe(),
  "resq_closed": resq_recipe((8, 8), (4, 4), "closed"),
  "dynamic": dynamic_recipe(FixedStepPolicy(bits=(0, 2, 4, 8), step=1.0)),
}


def numpy_decisions(trigger, frames):
  """The definition, one example and one frame at a time: ``[B][T]`` keyframe flags."""
  frames = np.asarray(frames, np.float64)
  out = []
  for clip in frames:
    flags, since, key, prev, drift = [], 0, None, None, 0.0
    for x in clip:
      if since == 0:
        is_key = True
      else:
        cut = np.mean(np.abs(x - key))
        drift += np.mean(np.abs(x - prev))
        fire = since >= trigger.max_period
        fire |= trigger.cut_threshold is not None and cut > trigger.cut_threshold
        fire |= trigger.drift_threshold is not None and drift > trigger.drift_threshold
        is_key = bool(fire) and since >= trigger.min_period
      since, key, drift = (1, x, 0.0) if is_key else (since + 1, key, drift)
      prev = x
      flags.append(is_key)
    out.append(flags)
  return out


def cut_clip(key=0, shape=(3, T, 8, 8, 3), cuts=((0, 5), (2, 8))):
  """A slow random walk with a scene cut (a new random field) at (example, frame) pairs."""
  clip = random_walk_clip(jax.random.key(key), shape, step=0.05)
  for b, t in cuts:
    jump = 3.0 * jax.random.normal(jax.random.key(100 + b), shape[2:])
    clip = clip.at[b, t:].add(jump)
  return clip


def jax_decisions(trigger, clip):
  state, flags = trigger_init(clip[:, 0]), []
  for t in range(clip.shape[1]):
    is_key, state = decide(trigger, state, clip[:, t])
    flags.append(np.asarray(is_key))
  return np.stack(flags, 1).tolist()


TRIGGERS = [
  KeyframeTrigger(max_period=4),
  KeyframeTrigger(cut_threshold=1.0, max_period=64),
  KeyframeTrigger(drift_threshold=0.3, max_period=64),
  KeyframeTrigger(cut_threshold=1.0, drift_threshold=0.3, max_period=5, min_period=3),
  KeyframeTrigger(cut_threshold=0.0, max_period=8, min_period=2),
]


@pytest.mark.parametrize("trigger", TRIGGERS, ids=str)
def test_decisions_equal_the_numpy_loop(trigger):
  clip = cut_clip()
  want = numpy_decisions(trigger, clip)
  assert jax_decisions(trigger, clip) == want
  assert all(row[0] for row in want)


def test_decisions_by_hand():
  """The cut at frame 5 of example 0 and frame 8 of example 2 fires a keyframe there and only
  there; a fixed max_period fires every 4 frames; min_period=3 delays an always-firing
  cut criterion to every third frame."""
  clip = cut_clip()
  cut = jax_decisions(KeyframeTrigger(cut_threshold=1.0), clip)
  assert [np.flatnonzero(r).tolist() for r in cut] == [[0, 5], [0], [0, 8]]
  period = jax_decisions(KeyframeTrigger(max_period=4), clip)
  assert all(np.flatnonzero(r).tolist() == [0, 4, 8] for r in period)
  every = jax_decisions(KeyframeTrigger(cut_threshold=0.0, min_period=3), clip)
  assert all(np.flatnonzero(r).tolist() == [0, 3, 6, 9] for r in every)


def test_trigger_ops_and_validation():
  assert trigger_ops(KeyframeTrigger(), (2, 8, 8, 3)) == 0
  assert trigger_ops(KeyframeTrigger(cut_threshold=1.0), (2, 8, 8, 3)) == 3 * 192
  assert trigger_ops(KeyframeTrigger(1.0, 2.0), (8, 8, 3)) == 6 * 192 + 1
  for bad in (dict(max_period=0), dict(min_period=5, max_period=4), dict(cut_threshold=-1.0)):
    with pytest.raises(ValueError):
      KeyframeTrigger(**bad)
  assert hash(KeyframeTrigger(1.0)) == hash(KeyframeTrigger(1.0))
  capped = KeyframeTrigger(min_period=8, max_period=16).capped(4)
  assert (capped.max_period, capped.min_period) == (4, 4)


# One trigger and period for the model tests (one compilation each): on cut_clip() its keyframes
# are [[0, 5, 11], [0, 6], [0, 6, 8]], so frames 0 (all key) and 5, 6, 8, 11 (mixed) occur.
TRIGGER, PERIOD = KeyframeTrigger(cut_threshold=1.0, drift_threshold=0.6, max_period=6), 6


@functools.cache
def _variables(name):
  model = TinyNet(RECIPES[name])
  clip = cut_clip()
  variables = model.init(jax.random.key(1), clip[:, 0])
  if RECIPES[name].is_quantized:
    variables = calibrate_model(
      model, float_model=TinyNet(), variables=variables, clips=[clip], period=4, methods=MINMAX
    )
  return model, variables


def per_example_loop(model, variables, clip, flags):
  """The definition: each example alone, frame by frame, with its own keyframe flags."""
  apply = jax.jit(
    functools.partial(model.apply, mutable=["resq_state", "resq_stats"]), static_argnames="phase"
  )
  outs, stats = [], []
  for b in range(clip.shape[0]):
    state, ys, ss = {}, [], []
    for t in range(clip.shape[1]):
      phase = "key" if flags[b][t] else "residual"
      v = dict(variables, resq_state=state) if phase == "residual" else variables
      y, mut = apply(v, clip[b : b + 1, t], phase=phase)
      state = mut.get("resq_state", {})
      ys.append(y[0])
      ss.append(jax.tree.map(lambda s: s[0], mut["resq_stats"]))
    outs.append(jnp.stack(ys))
    stats.append(jax.tree.map(lambda *s: jnp.stack(s), *ss))
  return jnp.stack(outs), jax.tree.map(lambda *s: jnp.stack(s, 1), *stats)  # stats [T, B]


@pytest.mark.parametrize("name", list(RECIPES))
def test_triggered_run_clip_equals_per_example_loop_and_stream(name):
  """Examples disagree (cuts at different frames): all-key, all-residual and mixed frames."""
  model, variables = _variables(name)
  clip, trigger = cut_clip(), TRIGGER
  result = run_clip(model, variables, clip, period=PERIOD, trigger=trigger)
  flags = numpy_decisions(trigger, clip)
  assert [np.flatnonzero(r).tolist() for r in flags] == [[0, 5, 11], [0, 6], [0, 6, 8]]
  want_keys = np.asarray(flags) if name != "float" else np.ones((3, T), bool)
  np.testing.assert_array_equal(result.keyframes, want_keys)
  ref_out, ref_stats = per_example_loop(model, variables, clip, want_keys.tolist())
  np.testing.assert_allclose(result.outputs, ref_out, atol=1e-5, rtol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, result.stats, ref_stats)
  stream = stream_init(model, variables, clip[:, 0], trigger=trigger)
  for t in range(T):
    y, stats, stream = stream_step(
      model, variables, stream, clip[:, t], period=PERIOD, trigger=trigger
    )
    np.testing.assert_allclose(y, result.outputs[:, t], atol=1e-5, rtol=1e-5)
    jax.tree.map(lambda a, b, t=t: np.testing.assert_array_equal(a, b[t]), stats, result.stats)
    np.testing.assert_array_equal(stream.is_keyframe, want_keys[:, t])


@pytest.mark.parametrize("name", ["resq_closed", "dynamic"])
def test_period_only_trigger_equals_fixed_period(name):
  model, variables = _variables(name)
  clip = cut_clip()
  fixed = run_clip(model, variables, clip, period=4)
  triggered = run_clip(model, variables, clip, trigger=KeyframeTrigger(max_period=4))
  np.testing.assert_allclose(triggered.outputs, fixed.outputs, atol=1e-5, rtol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, triggered.stats, fixed.stats)
  np.testing.assert_array_equal(triggered.keyframes, fixed.keyframes)
  np.testing.assert_array_equal(fixed.keyframes[0], np.arange(T) % 4 == 0)


def test_triggered_keyframes_cost_key_bops():
  """Hand count: per frame, the batch mean of MACs * 64 (keyframe) or MACs * 16 (residual)."""
  model, variables = _variables("resq_closed")
  clip, trigger = cut_clip(), TRIGGER
  result = run_clip(model, variables, clip, period=PERIOD, trigger=trigger)
  costs = layer_costs(model, variables, clip[:, 0])
  macs = sum(c.macs for c in costs.values())
  keys = np.asarray(numpy_decisions(trigger, clip))
  want = macs * np.where(keys, 64, 16).mean(axis=0)
  np.testing.assert_array_equal(bops_report(result.stats, costs)["bops_per_frame"], want)
  assert want[0] == macs * 64 and want[1] == macs * 16
  assert want[5] == want[8] == macs * (64 + 2 * 16) / 3 and want[6] == macs * (2 * 64 + 16) / 3
  stream = stream_init(model, variables, clip[:, 0], trigger=trigger)
  stats = []
  for t in range(T):
    _, s, stream = stream_step(model, variables, stream, clip[:, t], period=PERIOD, trigger=trigger)
    stats.append(s)
  np.testing.assert_array_equal(
    bops_report(stack_stream_stats(stats), costs)["bops_per_frame"], want
  )


def test_trigger_reset_on_nonfinite_is_per_example():
  """A NaN in example 1 at frame 2 forces keyframes in example 1 only: at frame 2 (the frame)
  and 3 (its state, which holds the NaN); from frame 3 on, example 1 follows the trigger as a
  clip starting there, and examples 0 and 2 are untouched."""
  model, variables = _variables("resq_closed")
  clip = cut_clip(cuts=())
  bad = clip.at[1, 2, 0, 0, 0].set(jnp.nan)
  stream = stream_init(model, variables, bad[:, 0], trigger=TRIGGER)
  keys, outs = [], []
  for t in range(T):
    y, _, stream = stream_step(
      model, variables, stream, bad[:, t], period=PERIOD, trigger=TRIGGER, reset_on_nonfinite=True
    )
    keys.append(np.asarray(stream.is_keyframe))
    outs.append(y)
  want = np.asarray(numpy_decisions(TRIGGER, clip))
  want[1, :3] = [True, False, True]
  want[1, 3:] = numpy_decisions(TRIGGER, clip[1:2, 3:])[0]
  np.testing.assert_array_equal(np.stack(keys, 1), want)
  assert all(bool(jnp.all(jnp.isfinite(outs[t][1]))) for t in range(3, T))
  assert all(bool(jnp.all(jnp.isfinite(outs[t][::2]))) for t in range(T))


def test_trigger_argument_errors():
  model, variables = _variables("resq_closed")
  clip = cut_clip()
  with pytest.raises(TypeError, match="KeyframeTrigger"):
    run_clip(model, variables, clip, period=4, trigger={"cut_threshold": 1.0})
  plain = stream_init(model, variables, clip[:, 0])
  with pytest.raises(ValueError, match="stream_init"):
    stream_step(model, variables, plain, clip[:, 0], trigger=KeyframeTrigger())
  triggered = stream_init(model, variables, clip[:, 0], trigger=KeyframeTrigger())
  with pytest.raises(ValueError, match="stream_init"):
    stream_step(model, variables, triggered, clip[:, 0], period=4)


def test_period_and_trigger_have_one_source():
  """Under a trigger its max_period alone caps the distance between keyframes: period may be
  left out or equal it; a different period is refused, and no period without a trigger too."""
  model, variables = _variables("resq_closed")
  clip = cut_clip()
  same = run_clip(model, variables, clip, period=PERIOD, trigger=TRIGGER)
  left_out = run_clip(model, variables, clip, trigger=TRIGGER)
  np.testing.assert_array_equal(same.keyframes, left_out.keyframes)
  np.testing.assert_array_equal(same.outputs, left_out.outputs)
  with pytest.raises(ValueError, match=r"run_clip: period=4 disagrees with trigger.max_period=6"):
    run_clip(model, variables, clip, period=4, trigger=TRIGGER)
  stream = stream_init(model, variables, clip[:, 0], trigger=TRIGGER)
  with pytest.raises(ValueError, match=r"stream_step: period=64 disagrees"):
    stream_step(model, variables, stream, clip[:, 0], period=64, trigger=TRIGGER)
  with pytest.raises(ValueError, match="calibrate_model: period=3 disagrees"):
    calibrate_model(model, variables=variables, clips=[clip], period=3, trigger=TRIGGER)
  with pytest.raises(ValueError, match="run_clip: period is required without a keyframe trigger"):
    run_clip(model, variables, clip)
