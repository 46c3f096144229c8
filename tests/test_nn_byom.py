"""Bring your own model (issue 12): transposed / dilated convs, per-layer recipe rules, the phase
trap, plain Flax ops in the cost report, hashable models, pretrained weights, streaming
calibration and the stats layout. Oracles: brute-force counts, flax / lax references, identities
(16-bit grids equal float), hand-computed BOPs and the previous in-memory calibration."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_nets import random_walk_clip

from resq_jax.nn import (
  QConv,
  QConvTranspose,
  StaleQuantizerError,
  bops_report,
  calibrate_model,
  float_twin,
  layer_costs,
  load_float_weights,
  model_has_state,
  run_clip,
  stack_stream_stats,
  stream_init,
  stream_step,
  with_recipe_rules,
)
from resq_jax.nn.calibrate import CalibrationMethods, Reservoir, residual_samples, subsample
from resq_jax.quant import (
  RecipeRules,
  calibrate,
  conv_macs,
  conv_transpose_macs,
  float_recipe,
  fq_recipe,
  resq_recipe,
)

DN = ("NHWC", "HWIO", "NHWC")
MINMAX = CalibrationMethods("minmax", "minmax", "minmax", "minmax")


def brute_force_products(fn, x_shape, w_shape):
  """Products of a linear op that meet a real input element: run it on ones."""
  return int(jnp.sum(fn(jnp.ones(x_shape), jnp.ones(w_shape))))


@pytest.mark.parametrize(
  "hw,k,s,pad,groups",
  [
    ((5, 4), 2, 2, "SAME", 1),
    ((5, 4), 3, 2, "SAME", 2),
    ((5, 4), 3, 2, "VALID", 1),
    ((4, 4), 4, 2, "SAME", 1),
    ((3, 5), 3, 1, "SAME", 2),
    ((4, 3), 5, 3, ((1, 2), (0, 3)), 1),
  ],
)
def test_conv_transpose_matches_lax_and_brute_force_macs(hw, k, s, pad, groups):
  c_in, c_out = 4, 6
  layer = QConvTranspose(c_out, (k, k), (s, s), padding=pad, feature_group_count=groups)
  x = jax.random.normal(jax.random.key(0), (2, *hw, c_in))
  variables = layer.init(jax.random.key(1), x)
  w = variables["params"]["kernel"]
  assert w.shape == (k, k, c_in // groups, c_out)
  y = layer.apply(variables, x)
  if groups == 1:
    ref = jax.lax.conv_transpose(x, w, (s, s), pad, dimension_numbers=DN)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
  lin = lambda a, b: jax.lax.conv_general_dilated(
    a,
    b,
    (1, 1),
    [
      (lo, hi)
      for lo, hi in __import__("resq_jax").quant.conv_transpose_padding((k, k), (s, s), pad)
    ],
    lhs_dilation=(s, s),
    dimension_numbers=DN,
    feature_group_count=groups,
  )
  count = brute_force_products(lin, (1, *hw, c_in), (k, k, c_in // groups, c_out))
  cost = layer.apply(variables, x[:1], method=lambda m, x: m.cost(x.shape))
  assert cost.macs == count == conv_transpose_macs(hw, (k, k), c_in, c_out, (s, s), pad, groups)
  if pad == "VALID":  # no cropping: every input location times the whole kernel
    assert cost.macs == hw[0] * hw[1] * k * k * c_in * c_out // groups


def test_conv_transpose_equals_flax_and_has_per_channel_scales():
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 3))
  ref = nn.ConvTranspose(5, (2, 2), (2, 2), padding="SAME")
  rv = ref.init(jax.random.key(1), x)
  layer = QConvTranspose(5, (2, 2), (2, 2), recipe=fq_recipe(16, 16))
  v = layer.init(jax.random.key(2), x)
  v = load_float_weights(layer, v, rv, frame=x)
  v = calibrate_model(layer, variables=v, clips=[x[:, None]], period=1, methods=MINMAX)
  assert v["params"]["key_w_scale"].shape[-1] == 5
  np.testing.assert_allclose(layer.apply(v, x), ref.apply(rv, x), atol=1e-3)


@pytest.mark.parametrize(
  "kd,idil,pad",
  [
    ((2, 2), (1, 1), "SAME"),
    ((3, 1), (1, 1), "VALID"),
    ((1, 1), (2, 2), "SAME"),
    ((2, 1), (2, 3), "VALID"),
  ],
)
def test_dilated_conv_matches_lax_and_macs(kd, idil, pad):
  x = jax.random.normal(jax.random.key(0), (1, 9, 8, 2))
  layer = QConv(3, (3, 3), padding=pad, kernel_dilation=kd, input_dilation=idil)
  v = layer.init(jax.random.key(1), x)
  y = layer.apply(v, x)
  from resq_jax.quant import conv_padding

  pads = conv_padding((9, 8), (3, 3), (1, 1), pad, idil, kd)
  lin = lambda a, b: jax.lax.conv_general_dilated(
    a, b, (1, 1), pads, lhs_dilation=idil, rhs_dilation=kd, dimension_numbers=DN
  )
  np.testing.assert_allclose(
    y, lin(x, v["params"]["kernel"]) + v["params"]["bias"][None, None, None], atol=1e-5
  )
  cost = layer.apply(v, x, method=lambda m, x: m.cost(x.shape))
  if idil == (1, 1):  # kernel dilation: the undilated count at the same output size
    assert cost.macs == y.shape[1] * y.shape[2] * 9 * 2 * 3
  else:  # input dilation: only products with real inputs (padding zeros are not counted either)
    assert cost.macs == brute_force_products(lin, x.shape, (3, 3, 2, 3))
  assert cost.macs == conv_macs((9, 8), (3, 3), 2, 3, (1, 1), pad, 1, idil, kd)


class RuleNet(nn.Module):
  """stem conv, a transposed conv, a dilated conv, classifier: every layer one recipe."""

  recipe: object = float_recipe()
  recipe_rules: object = None

  @nn.compact
  def __call__(self, x, phase=None):
    x = nn.relu(QConv(8, strides=(2, 2), use_bn=True, recipe=self.recipe, name="stem")(x, phase))
    x = nn.relu(QConvTranspose(8, (2, 2), (2, 2), recipe=self.recipe, name="up")(x, phase))
    x = nn.relu(QConv(8, kernel_dilation=(2, 2), recipe=self.recipe, name="body")(x, phase))
    return QConv(3, (1, 1), recipe=self.recipe, name="classifier")(x, phase)


RULES = RecipeRules(((r"stem|classifier", fq_recipe(8, 8)), (r".*", resq_recipe((8, 8), (4, 4)))))


@pytest.fixture(scope="module")
def clip():
  return random_walk_clip(jax.random.key(0), (2, 6, 16, 16, 3), step=0.1)


def test_recipe_rules_mixed_precision_in_execution_calibration_and_costs(clip):
  model = RuleNet(recipe_rules=RULES)
  wrapped = with_recipe_rules(RuleNet(), RULES)  # same thing, for any model
  v = model.init(jax.random.key(1), clip[:, 0])
  assert jax.tree.map(jnp.shape, v) == jax.tree.map(
    jnp.shape, wrapped.init(jax.random.key(1), clip[:, 0])
  )
  assert "res_w_scale" not in v["params"]["stem"] and "res_w_scale" in v["params"]["body"]
  assert model_has_state(model, v, clip[:, 0])
  v = calibrate_model(model, variables=v, clips=[clip], period=3, methods=MINMAX)
  result = run_clip(model, v, clip, period=3)
  costs = layer_costs(model, v, clip[:, 0])
  assert costs["stem"].state_elements == 0 < costs["body"].state_elements
  report = bops_report(result.stats, costs)
  edge = costs["stem"].macs + costs["classifier"].macs
  inner = costs["up"].macs + costs["body"].macs
  hand = [64 * (edge + inner) if t % 3 == 0 else 64 * edge + 16 * inner for t in range(6)]
  np.testing.assert_array_equal(report["bops_per_frame"], hand)
  wrapped_out = run_clip(wrapped, v, clip, period=3).outputs
  np.testing.assert_array_equal(wrapped_out, result.outputs)
  # The outermost rules win: a float twin of a ruled model is float everywhere.
  float_out = run_clip(float_twin(wrapped), v, clip, period=3)
  assert set(np.unique(np.asarray(float_out.stats["body"]["w_bits"]))) == {32}


def test_16_bit_rules_with_transposed_conv_equal_float(clip):
  rules16 = RecipeRules(((r"stem", fq_recipe(16, 16)), (r".*", resq_recipe((16, 16), (16, 16)))))
  model = RuleNet(recipe_rules=rules16)
  v = calibrate_model(
    model,
    variables=model.init(jax.random.key(1), clip[:, 0]),
    clips=[clip],
    period=3,
    methods=MINMAX,
  )
  out = run_clip(model, v, clip, period=3).outputs
  ref = run_clip(RuleNet(), v, clip, period=3).outputs
  np.testing.assert_allclose(out, ref, atol=2e-3 * float(jnp.max(jnp.abs(ref))))


def test_recipe_rules_validate():
  with pytest.raises(ValueError, match="regular expression"):
    RecipeRules((("(", fq_recipe()),))
  with pytest.raises(ValueError, match="pair"):
    RecipeRules((("a", "fq"),))
  assert hash(RULES) == hash(RecipeRules(list(RULES.rules)))


def test_phase_is_required_for_stateful_recipes_only(clip):
  frame = clip[:, 0]
  model = RuleNet(resq_recipe())
  v = model.init(jax.random.key(1), frame)  # init without phase is fine
  with pytest.raises(ValueError, match="phase='key' or phase='residual'"):
    model.apply(v, frame)
  for recipe in (float_recipe(), fq_recipe(8, 8)):
    m = RuleNet(recipe)
    np.testing.assert_array_equal(
      m.apply(m.init(jax.random.key(1), frame), frame),
      m.apply(m.init(jax.random.key(1), frame), frame, phase="key"),
    )


class MixedNet(nn.Module):
  @nn.compact
  def __call__(self, x, phase=None):
    x = nn.relu(QConv(8, strides=(2, 2), recipe=fq_recipe(8, 8), name="q")(x, phase))
    x = nn.relu(nn.Conv(6, (3, 3), name="plain_conv")(x))
    x = nn.ConvTranspose(4, (2, 2), (2, 2), name="plain_up")(x)
    return nn.Dense(3, name="plain_dense")(x)


def test_plain_flax_ops_are_counted_as_float(clip):
  model = MixedNet()
  v = calibrate_model(
    model, variables=model.init(jax.random.key(1), clip[:, 0]), clips=[clip], period=1
  )
  with pytest.warns(UserWarning, match="3 plain Flax linear op"):
    costs = layer_costs(model, v, clip[:, 0])
  assert costs["plain_conv"].float_op and costs["plain_conv"].macs == 8 * 8 * 9 * 8 * 6
  assert costs["plain_up"].macs == 8 * 8 * 4 * 6 * 4
  assert costs["plain_dense"].macs == 16 * 16 * 4 * 3
  report = bops_report(run_clip(model, v, clip, period=1).stats, costs)
  plain = sum(c.macs for c in costs.values() if c.float_op)
  np.testing.assert_array_equal(report["bops_per_frame"], 64 * costs["q"].macs + 1024 * plain)
  assert report["float_ops"] == {p: c.macs for p, c in costs.items() if c.float_op}


class ListNet(nn.Module):
  widths: list

  @nn.compact
  def __call__(self, x, phase=None):
    return QConv(self.widths[0])(x, phase)


def test_unhashable_model_gets_a_clear_error(clip):
  model = ListNet([4])
  v = model.init(jax.random.key(0), clip[:, 0])
  with pytest.raises(TypeError, match=r"not hashable \(attributes widths=list\).*tuples"):
    run_clip(model, v, clip, period=2)


class FloatNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, (3, 3), (2, 2), use_bias=False, name="stem_conv")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=True, name="stem_bn")(x))
    x = nn.relu(nn.ConvTranspose(8, (2, 2), (2, 2), name="up_conv")(x))
    x = nn.relu(nn.Conv(8, (3, 3), kernel_dilation=(2, 2), name="body_conv")(x))
    return nn.Conv(3, (1, 1), name="classifier_conv")(x)


MAPPING = (
  (r"params/(.*)_conv/(.*)", r"params/\1/\2"),
  (r"params/(.*)_bn/scale", r"params/\1/bn_scale"),
  (r"params/(.*)_bn/bias", r"params/\1/bn_bias"),
  (r"batch_stats/(.*)_bn/(.*)", r"batch_stats/\1/\2"),
)


def _pretrained(frame):
  fv = FloatNet().init(jax.random.key(5), frame)
  # "Pretrained": large BatchNorm gains and non-trivial statistics, far from init's scales.
  fv["params"]["stem_bn"]["scale"] = 30.0 * jnp.ones(8)
  fv["batch_stats"]["stem_bn"]["mean"] = 0.1 * jnp.arange(8.0)
  fv["batch_stats"]["stem_bn"]["var"] = 0.5 + 0.1 * jnp.arange(8.0)
  fv["params"]["body_conv"]["kernel"] = 20.0 * fv["params"]["body_conv"]["kernel"]
  return fv


def test_load_float_weights_refreshes_and_invalidates(clip):
  frame = clip[:, 0]
  fv = _pretrained(frame)
  ref = jax.vmap(lambda x: FloatNet().apply(fv, x), in_axes=1, out_axes=1)(clip)
  fp = RuleNet()
  v = load_float_weights(fp, fp.init(jax.random.key(1), frame), fv, frame=frame, mapping=MAPPING)
  np.testing.assert_allclose(run_clip(fp, v, clip, period=1).outputs, ref, rtol=1e-5, atol=1e-4)
  model = RuleNet(recipe_rules=RULES)
  init = model.init(jax.random.key(1), frame)
  # The trap: copying weights by hand leaves init's scales; run_clip refuses them.
  by_hand = jax.tree.map(lambda a: a, init)
  by_hand["params"]["body"]["kernel"] = v["params"]["body"]["kernel"]
  with pytest.raises(StaleQuantizerError, match="body/key_w_scale: does not fit"):
    run_clip(model, by_hand, clip, period=3)
  loaded = load_float_weights(model, init, fv, frame=frame, mapping=MAPPING)
  with pytest.raises(StaleQuantizerError, match="not finite.*calibrate_model"):
    run_clip(model, loaded, clip, period=3)
  calibrated = calibrate_model(model, variables=loaded, clips=[clip], period=3)
  out = run_clip(model, calibrated, clip, period=3).outputs
  assert float(jnp.max(jnp.abs(out - ref))) < 0.1 * float(jnp.max(jnp.abs(ref)))
  with pytest.raises(ValueError, match="stem/bn_scale: not loaded"):
    load_float_weights(model, init, fv, frame=frame, mapping=MAPPING[:1])


def _reference_calibration(model, v, clips, period, methods):
  """The previous in-memory implementation: concatenate every batch, subsample, calibrate."""
  from resq_jax.nn import observe

  obs = observe(RuleNet(), v, clips)
  out = {}
  for path, recipe in (("stem", fq_recipe(8, 8)), ("body", resq_recipe((8, 8), (4, 4)))):
    x = obs.layers[path]["x"]
    out[path] = {"key_a_scale": calibrate(subsample(x), recipe.key.act, methods.key_act)[0]}
    if recipe.has_state:
      r = residual_samples(x, period, recipe.ref_mode)
      out[path]["res_a_scale"] = calibrate(subsample(r), recipe.residual.act, methods.residual_act)[
        0
      ]
  return out


def test_streaming_calibration_equals_in_memory_on_small_sets(clip):
  model = RuleNet(recipe_rules=RULES)
  v = model.init(jax.random.key(1), clip[:, 0])
  clips = [clip[:1], clip[1:]]
  methods = CalibrationMethods()  # mse: needs the samples, not only min / max
  got = calibrate_model(model, variables=v, clips=iter(clips), period=3, methods=methods)["params"]
  ref = _reference_calibration(model, v, clips, 3, methods)
  for path, entry in ref.items():
    for name, value in entry.items():
      np.testing.assert_allclose(got[path][name], value, rtol=1e-6, err_msg=f"{path}/{name}")


def test_reservoir_memory_is_bounded_and_min_max_exact():
  res = Reservoir(capacity=100)
  rng = np.random.default_rng(1)
  batches = [rng.normal(size=64) + i for i in range(50)]
  for b in batches:
    res.add(b)
    assert res.rows.shape[0] <= 100
  everything = np.concatenate(batches)
  assert res.rows.shape == (100,) and res.seen == everything.size
  assert res.lo == everything.min() and res.hi == everything.max()
  assert np.all(np.isin(res.rows, everything))
  # Uniform over all batches: the sample's mean batch index is near the middle (24.5).
  assert 17 < float(np.mean(res.rows)) < 32
  small = Reservoir(capacity=1000)
  small.add(batches[0])
  small.add(batches[1])
  np.testing.assert_array_equal(small.rows, np.concatenate(batches[:2]))


def test_stream_stats_feed_bops_report_through_stack(clip):
  model = RuleNet(recipe_rules=RULES)
  v = calibrate_model(
    model,
    variables=model.init(jax.random.key(1), clip[:, 0]),
    clips=[clip],
    period=3,
    methods=MINMAX,
  )
  costs = layer_costs(model, v, clip[:, 0])
  stream, per_frame = stream_init(model, v, clip[:, 0]), []
  for t in range(clip.shape[1]):
    _, stats, stream = stream_step(model, v, stream, clip[:, t], period=3)
    per_frame.append(stats)
  with pytest.raises(ValueError, match="stack_stream_stats"):
    bops_report(per_frame[0], costs)
  stacked = bops_report(stack_stream_stats(per_frame), costs)
  ref = bops_report(run_clip(model, v, clip, period=3).stats, costs)
  np.testing.assert_array_equal(stacked["bops_per_frame"], ref["bops_per_frame"])
