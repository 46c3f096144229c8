"""Quantized layers and the clip runner against reference loops and identities."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from tiny_nets import TinyNet, random_walk_clip

from resq_jax.nn.calibrate import CalibrationMethods, calibrate_model
from resq_jax.nn.costs import bops_report, layer_costs
from resq_jax.nn.runner import run_clip, stream_init, stream_step
from resq_jax.quant.dynamic import FixedStepPolicy, LadderPolicy
from resq_jax.quant.recipe import dynamic_recipe, float_recipe, fq_recipe, resq_recipe

PERIOD, T = 3, 7  # T is not a multiple of the period: the tail group is exercised too
RECIPES = {
  "float": float_recipe(),
  "fq": fq_recipe(4, 4),
  "resq_closed": resq_recipe((8, 8), (4, 4), "closed"),
  "resq_key": resq_recipe((8, 8), (4, 4), "key"),
  "resq_prev": resq_recipe((8, 8), (4, 4), "prev"),
  "dynamic_fixed": dynamic_recipe(FixedStepPolicy(bits=(0, 2, 4, 8), step=1.0)),
  "dynamic_ladder": dynamic_recipe(LadderPolicy(bits=(0, 4, 8), thresholds=(1.0, 8.0, 64.0))),
}


MINMAX = CalibrationMethods("minmax", "minmax", "minmax", "minmax")


@pytest.fixture(scope="module")
def clip():
  return random_walk_clip(jax.random.key(0), (2, T, 8, 8, 3))


@functools.cache
def _variables(name):
  model = TinyNet(RECIPES[name])
  clip = random_walk_clip(jax.random.key(0), (2, T, 8, 8, 3))
  variables = model.init(jax.random.key(1), clip[:, 0])
  if RECIPES[name].is_quantized:
    variables = calibrate_model(
      model, float_model=TinyNet(), variables=variables, clips=[clip], period=PERIOD, methods=MINMAX
    )
  return model, variables


def reference_loop(model, variables, clip, period):
  """The definition: frame by frame, keyframe at t % period == 0, state carried in Python."""
  state, outs, stats = {}, [], []
  apply = jax.jit(
    functools.partial(model.apply, mutable=["resq_state", "resq_stats"]), static_argnames="phase"
  )
  for t in range(clip.shape[1]):
    phase = "key" if t % period == 0 else "residual"
    v = dict(variables, resq_state=state) if phase == "residual" else variables
    y, mut = apply(v, clip[:, t], phase=phase)
    state = mut.get("resq_state", {})
    outs.append(y)
    stats.append(mut["resq_stats"])
  return jnp.stack(outs, 1), jax.tree.map(lambda *s: jnp.stack(s), *stats)


@pytest.mark.parametrize("name", list(RECIPES))
def test_run_clip_equals_reference_loop_and_stream(clip, name):
  model, variables = _variables(name)
  result = run_clip(model, variables, clip, period=PERIOD)
  ref_out, ref_stats = reference_loop(model, variables, clip, PERIOD)
  # Folding groups into the batch changes XLA's conv batch size only: float32 round-off.
  np.testing.assert_allclose(result.outputs, ref_out, atol=1e-5, rtol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, result.stats, ref_stats)
  stream = stream_init(model, variables, clip[:, 0])
  for t in range(T):
    y, stats, stream = stream_step(model, variables, stream, clip[:, t], period=PERIOD)
    np.testing.assert_allclose(y, result.outputs[:, t], atol=1e-5, rtol=1e-5)
    jax.tree.map(lambda a, b, t=t: np.testing.assert_array_equal(a, b[t]), stats, result.stats)
  assert int(stream.t) == T


def test_period_one_equals_frame_quantization(clip):
  """K = 1: a ResQ network is exactly its FQ twin (same key grids, same parameters)."""
  model, variables = _variables("resq_closed")
  fq_model = TinyNet(fq_recipe(8, 8))
  out_resq = run_clip(model, variables, clip, period=1).outputs
  out_fq = run_clip(fq_model, variables, clip, period=1).outputs
  np.testing.assert_array_equal(out_resq, out_fq)


@pytest.mark.parametrize("ref_mode", ["closed", "key", "prev"])
def test_16_bit_resq_network_equals_float(clip, ref_mode):
  """16-bit key and residual grids, min-max calibrated: every frame matches the float network
  (atol 5e-3 on outputs of order 1)."""
  model = TinyNet(resq_recipe((16, 16), (16, 16), ref_mode))
  variables = model.init(jax.random.key(1), clip[:, 0])
  variables = calibrate_model(
    model, float_model=TinyNet(), variables=variables, clips=[clip], period=PERIOD, methods=MINMAX
  )
  out = run_clip(model, variables, clip, period=PERIOD).outputs
  ref = run_clip(TinyNet(), variables, clip, period=PERIOD).outputs
  assert float(jnp.max(jnp.abs(ref))) > 0.5
  np.testing.assert_allclose(out, ref, atol=5e-3)


def test_second_clip_does_not_retrace(clip):
  model, variables = _variables("dynamic_fixed")
  run_clip(model, variables, clip, period=PERIOD)
  size = run_clip._cache_size()
  run_clip(model, variables, clip + 1.0, period=PERIOD)
  assert run_clip._cache_size() == size


def test_static_bops_are_exact(clip):
  """Keyframes cost MACs * 8 * 8, static residual frames MACs * 4 * 4, for every layer."""
  model, variables = _variables("resq_closed")
  costs = layer_costs(model, variables, clip[:, 0])
  report = bops_report(run_clip(model, variables, clip, period=PERIOD).stats, costs)
  macs = sum(c.macs for c in costs.values())
  expected = [macs * (64 if t % PERIOD == 0 else 16) for t in range(T)]
  np.testing.assert_array_equal(report["bops_per_frame"], expected)
  assert report["ratio_w8a8_peak"] == 1.0


def test_layer_macs_match_shapes(clip):
  model, variables = _variables("float")
  costs = layer_costs(model, variables, clip[:, 0])
  # 8x8x3 -> conv3x3 8ch; stride-2 conv 8->8 (4x4 out); depthwise 3x3 on 4x4x8; dense 8->3.
  assert [c.macs for c in costs.values()] == [
    8 * 8 * 9 * 3 * 8,
    4 * 4 * 9 * 8 * 8,
    4 * 4 * 9 * 8,
    4 * 4 * 8 * 3,
  ]


def test_dynamic_static_clip_costs_only_keyframes():
  """A clip that does not change, open loop ('prev': the reference is the float input): every
  layer's residual is exactly zero, so residual frames skip every location (0 BOPs). (In
  'closed' mode the first residual would still refine the keyframe's quantization error.)"""
  _, variables = _variables("dynamic_fixed")
  model = TinyNet(dynamic_recipe(FixedStepPolicy(bits=(0, 2, 4, 8)), ref_mode="prev"))
  still = jnp.broadcast_to(random_walk_clip(jax.random.key(3), (2, 1, 8, 8, 3)), (2, T, 8, 8, 3))
  result = run_clip(model, variables, still, period=PERIOD)
  report = bops_report(result.stats, layer_costs(model, variables, still[:, 0]))
  is_key = np.arange(T) % PERIOD == 0
  assert np.all(report["bops_per_frame"][~is_key] == 0)
  assert np.all(report["bops_per_frame"][is_key] == report["macs_per_frame"] * 64)


def test_bn_folding_matches_conv_then_batch_norm(clip):
  model, variables = _variables("float")
  p, s = variables["params"]["QConv_0"], variables["batch_stats"]["QConv_0"]
  s = {"mean": s["mean"] + 0.3, "var": s["var"] * 2.0}  # non-trivial running statistics
  variables = dict(variables, batch_stats=dict(variables["batch_stats"], QConv_0=s))
  x = clip[:, 0]
  y_conv = jax.lax.conv_general_dilated(
    x, p["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  expected = (y_conv - s["mean"].reshape(1, 1, 1, -1)) / jnp.sqrt(s["var"] + 1e-5).reshape(
    1, 1, 1, -1
  ) * p["bn_scale"].reshape(1, 1, 1, -1) + p["bn_bias"].reshape(1, 1, 1, -1)
  from resq_jax.nn.layers import QConv

  conv = QConv(8, use_bn=True)
  got = conv.apply({"params": p, "batch_stats": s}, x)
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_bn_training_updates_running_statistics(clip):
  from resq_jax.nn.layers import QConv

  conv = QConv(4, use_bn=True, bn_momentum=0.9)
  x = clip[:, 0]
  variables = conv.init(jax.random.key(0), x)
  y, mut = conv.apply(variables, x, train=True, mutable=["batch_stats"])
  y_conv = jax.lax.conv_general_dilated(
    x, variables["params"]["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  mu, var = y_conv.mean(axis=(0, 1, 2)), y_conv.var(axis=(0, 1, 2))
  np.testing.assert_allclose(mut["batch_stats"]["mean"], 0.1 * mu, atol=1e-5)
  np.testing.assert_allclose(mut["batch_stats"]["var"], 0.9 + 0.1 * var, atol=1e-5)
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)  # normalised


def test_qat_gradients_of_16_bit_resq_match_float(clip):
  """Through the scan (BPTT) and straight-through quantizers, a 16-bit ResQ network has the
  float network's kernel gradients (0.2% relative L2 error)."""
  model = TinyNet(resq_recipe((16, 16), (16, 16), "closed"))
  variables = model.init(jax.random.key(1), clip[:, 0])
  variables = calibrate_model(
    model, float_model=TinyNet(), variables=variables, clips=[clip], period=PERIOD, methods=MINMAX
  )
  # Min-max puts the extreme values exactly on the grids' edges, where float round-off decides
  # whether the straight-through gradient passes; widen every grid by 1%.
  widen = lambda path, v: v * 1.01 if path[-1].key.endswith(("_w_scale", "_a_scale")) else v
  variables = dict(variables, params=jax.tree_util.tree_map_with_path(widen, variables["params"]))

  def loss(params, m):
    out = run_clip(m, dict(variables, params=params), clip, period=PERIOD).outputs
    return jnp.mean(jnp.square(out - 0.5))

  g_q = jax.grad(loss)(variables["params"], model)
  g_f = jax.grad(loss)(variables["params"], TinyNet())
  for layer in ("QConv_0", "QConv_1", "QConv_2", "QDense_0"):
    diff = jnp.linalg.norm(g_q[layer]["kernel"] - g_f[layer]["kernel"])
    assert float(diff / jnp.linalg.norm(g_f[layer]["kernel"])) < 2e-3, layer
  assert float(jnp.max(jnp.abs(g_q["QConv_1"]["res_a_scale"]))) > 0  # scales are trained too


@pytest.mark.parametrize("name", ["fq", "resq_closed"])
def test_scale_gradients_do_not_depend_on_how_frames_are_folded(name):
  """LSQ's N counts features per example: the gradient of a loss over an 8-frame clip with
  K = 4 (two keyframe groups folded into the batch; FQ folds all 8 frames) equals the sum of
  the gradients of its two 4-frame halves run separately."""
  model, variables = _variables(name)
  # Halve the calibrated activation ranges so that some inputs clip and the zero points get
  # gradients too.
  shrink = lambda path, v: v * 0.5 if path[-1].key.endswith("_a_scale") else v
  variables = dict(variables, params=jax.tree_util.tree_map_with_path(shrink, variables["params"]))
  clip8 = random_walk_clip(jax.random.key(7), (2, 8, 8, 8, 3))

  def grads(frames):
    def loss(params):
      out = run_clip(model, dict(variables, params=params), frames, period=4).outputs
      return jnp.sum(jnp.sin(out))

    return jax.grad(loss)(variables["params"])

  whole, first, second = grads(clip8), grads(clip8[:, :4]), grads(clip8[:, 4:])
  names = ("key_a_scale", "key_a_zero_point") + (("res_a_scale",) if name != "fq" else ())
  for layer in ("QConv_0", "QConv_1", "QConv_2", "QDense_0"):
    for param in names:
      got, want = whole[layer][param], first[layer][param] + second[layer][param]
      assert float(jnp.abs(want)) > 0, (layer, param)
      np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-7, err_msg=f"{layer}/{param}")


def test_sharded_run_equals_single_device(clip):
  """Batch sharded over 8 virtual devices (shard_map) equals the single-device run."""
  model, variables = _variables("dynamic_fixed")
  big = random_walk_clip(jax.random.key(5), (8, T, 8, 8, 3))
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  f = jax.shard_map(
    lambda v, c: run_clip(model, v, c, period=PERIOD)[:2],
    mesh=mesh,
    in_specs=(P(), P("data")),
    out_specs=(P("data"), P(None, "data")),
  )
  sharded = jax.device_put(big, jax.sharding.NamedSharding(mesh, P("data")))
  out, stats = jax.jit(f)(variables, sharded)
  assert len(out.sharding.device_set) == 8
  single = run_clip(model, variables, big, period=PERIOD)
  np.testing.assert_allclose(out, single.outputs, atol=1e-5, rtol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, stats, single.stats)


def test_invalid_arguments_raise(clip):
  model, variables = _variables("resq_closed")
  with pytest.raises(ValueError, match="period"):
    run_clip(model, variables, clip, period=0)
  with pytest.raises(ValueError, match="phase"):
    model.apply(variables, clip[:, 0], phase="delta", mutable=["resq_state"])
  with pytest.raises(ValueError, match="keyframe"):
    model.apply(variables, clip[:, 0], phase="residual", mutable=["resq_state"])


def test_empty_and_integer_inputs_raise_clear_errors(clip):
  for name in ("resq_closed", "dynamic_fixed", "fq"):
    model, variables = _variables(name)
    with pytest.raises(ValueError, match="T=0"):
      run_clip(model, variables, clip[:, :0], period=PERIOD)
    with pytest.raises(ValueError, match="B=0"):
      run_clip(model, variables, clip[:0], period=PERIOD)
    with pytest.raises(TypeError, match="floating point"):
      run_clip(model, variables, clip.astype(jnp.uint8), period=PERIOD)
    with pytest.raises(ValueError, match="B=0"):
      stream_init(model, variables, clip[:0, 0])
    stream = stream_init(model, variables, clip[:, 0])
    with pytest.raises(ValueError, match="B=0"):
      stream_step(model, variables, stream, clip[:0, 0], period=PERIOD)
    with pytest.raises(TypeError, match="floating point"):
      stream_step(model, variables, stream, clip[:, 0].astype(jnp.int32), period=PERIOD)
    with pytest.raises(ValueError, match="period"):
      stream_step(model, variables, stream, clip[:, 0], period=True)


def test_nan_poisons_its_static_group_and_reset_on_nonfinite_recovers(clip):
  """Documented behaviour (resq_jax.nn.runner): a NaN at residual frame 1 poisons frames 1-2 of
  its group under closed-loop static ResQ and the keyframe at t = 3 clears it. With
  reset_on_nonfinite the stream forces a keyframe at t = 2 (the state is not finite), whose
  output equals the model run on that frame as a keyframe."""
  model, variables = _variables("resq_closed")
  bad = clip.at[:, 1, 0, 0, 0].set(jnp.nan)
  out = run_clip(model, variables, bad, period=PERIOD).outputs
  finite = [bool(jnp.all(jnp.isfinite(out[:, t]))) for t in range(T)]
  assert finite == [True, False, False, True, True, True, True]
  stream = stream_init(model, variables, clip[:, 0])
  outs = []
  for t in range(T):
    y, _, stream = stream_step(
      model, variables, stream, bad[:, t], period=PERIOD, reset_on_nonfinite=True
    )
    outs.append(y)
  assert bool(jnp.all(jnp.isfinite(outs[2])))
  key2, _ = model.apply(variables, bad[:, 2], phase="key", mutable=["resq_state"])
  np.testing.assert_allclose(outs[2], key2, atol=1e-6)
  # The period restarts at the forced keyframe: frames 3, 4 are residual frames, 5 a keyframe.
  ref = reference_loop(model, variables, bad[:, 2:], PERIOD)[0]
  np.testing.assert_allclose(jnp.stack(outs[2:], 1), ref, atol=1e-5, rtol=1e-5)
  # Without the option nothing changes relative to run_clip (the NaN stays in its group).
  stream = stream_init(model, variables, clip[:, 0])
  for t in range(3):
    y, _, stream = stream_step(model, variables, stream, bad[:, t], period=PERIOD)
  assert not bool(jnp.all(jnp.isfinite(y)))


def test_dynamic_resq_gives_nan_locations_zero_bits(clip):
  """Documented behaviour: the policy compares magnitudes with thresholds, so a NaN location
  of a residual frame gets 0 bits (skipped)."""
  model, variables = _variables("dynamic_fixed")
  bad = clip.at[0, 1, 2, 3, :].set(jnp.nan)
  stats = run_clip(model, variables, bad, period=PERIOD).stats
  first = stats["QConv_0"]["bit_map"]  # [T, B, H, W]
  assert int(first[1, 0, 2, 3]) == 0
  assert int(jnp.max(first[1])) > 0  # other locations still get bits


def test_calibration_on_a_constant_clip_warns():
  model, variables = _variables("resq_closed")
  still = jnp.zeros((1, 4, 8, 8, 3), jnp.float32)
  with pytest.warns(UserWarning, match="zero range"):
    calibrate_model(
      model, float_model=TinyNet(), variables=variables, clips=[still], period=2, methods=MINMAX
    )


def test_conv_impl_auto_resolves_by_loop_and_backend():
  from resq_jax.nn.layers import resolve_conv_impl, rolled_loop

  assert resolve_conv_impl("auto") == "xla"
  with rolled_loop():
    assert resolve_conv_impl("auto") == ("im2col" if jax.default_backend() == "cpu" else "xla")
    assert resolve_conv_impl("xla") == "xla"
  assert resolve_conv_impl("im2col") == "im2col"
  with pytest.raises(ValueError, match="conv_impl"):
    resolve_conv_impl("cudnn")


@pytest.mark.parametrize("remat", [False, True])
def test_rolled_im2col_and_remat_match_the_unrolled_xla_gradients(clip, remat):
  """The rolled residual scan (im2col conv VJP on CPU via conv_impl='auto'), with or without
  rematerialisation, gives the outputs and parameter gradients of the fully unrolled XLA run."""
  model, variables = _variables("resq_closed")

  def loss(params, unroll, remat):
    out = run_clip(
      model, dict(variables, params=params), clip, period=PERIOD, unroll=unroll, remat=remat
    ).outputs
    return jnp.mean(jnp.square(out - 0.3))

  ref = jax.grad(loss)(variables["params"], True, False)
  got = jax.grad(loss)(variables["params"], 1, remat)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(ref)):
    scale = float(jnp.max(jnp.abs(b))) + 1e-12
    np.testing.assert_allclose(
      a, b, rtol=1e-4, atol=1e-4 * scale, err_msg=jax.tree_util.keystr(path)
    )


def test_dynamic_policy_comparisons_are_reported_beside_bops(clip):
  """Per residual frame the policy takes a max over C_in channels and walks its candidates at
  every input location: hand counts for TinyNet's four layers (8x8x3, 8x8x8, 4x4x8, 4x4x8)."""
  model, variables = _variables("dynamic_fixed")  # bits (0, 2, 4, 8): 4 candidates
  costs = layer_costs(model, variables, clip[:, 0])
  per_layer = [64 * 2 + 64 * 3, 64 * 7 + 64 * 3, 16 * 7 + 16 * 3, 16 * 7 + 16 * 3]
  assert [c.policy_comparisons for c in costs.values()] == per_layer
  report = bops_report(run_clip(model, variables, clip, period=PERIOD).stats, costs)
  assert report["policy_comparisons_per_residual_frame"] == sum(per_layer)
  static = layer_costs(*_variables("resq_closed"), clip[:, 0])
  assert all(c.policy_comparisons == 0 for c in static.values())
