"""``resq_jax.quantize(model, rules)`` on unmodified flax.linen models, and one ResQ state per call.

Oracles: the hand-written QConv SegNet (bit for bit, forward and gradients, every recipe), the
float model itself (float recipe, bit for bit), QConv / QConvTranspose / QDense with the same
geometry and weights (outputs and costs), the two-module version of a layer called twice
(states, outputs, stats and MACs), and an independent min-max over both calls' inputs
(calibration of a shared layer)."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_nets import random_walk_clip

import resq_jax as rq
from resq_jax.nn import (
  QConv,
  QConvTranspose,
  QDense,
  SegNet,
  bops_report,
  calibrate_model,
  fold_bn,
  layer_costs,
  quantize,
  run_clip,
  segnet_preset,
  stack_stream_stats,
  stream_init,
  stream_step,
  with_recipe_rules,
)
from resq_jax.nn.calibrate import CalibrationMethods, observe
from resq_jax.nn.layers import float_twin
from resq_jax.nn.quantized import is_quantizer_param
from resq_jax.quant import (
  FixedStepPolicy,
  RecipeRules,
  calibrate,
  dynamic_recipe,
  float_recipe,
  fq_recipe,
  resq_recipe,
)

MINMAX = CalibrationMethods("minmax", "minmax", "minmax", "minmax")
RESQ = resq_recipe((8, 8), (4, 4))


def everywhere(recipe):
  return RecipeRules(((r".*", recipe),))


def flat(tree):
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")


def unflat(d):
  return flax.traverse_util.unflatten_dict(d, sep="/")


def assert_trees_equal(a, b):
  fa, fb = flat(a), flat(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


# --- A plain-linen SegNet: models.SegNet with nn.Conv (+ nn.BatchNorm) instead of QConv ----------


def _resize(x, hw, method):
  return jax.image.resize(x, (x.shape[0], *hw, x.shape[-1]), method=method)


def conv_bn(x, features, name, unfolded, kernel=3, stride=1):
  """Inside a compact method: ``nn.Conv`` whose bias holds the BatchNorm, or (``unfolded``)
  ``nn.Conv`` without bias + ``nn.BatchNorm`` named ``<name>_bn``, as float models are written."""
  if not unfolded:
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding="SAME", name=name)(x)
  x = nn.Conv(features, (kernel, kernel), (stride, stride), use_bias=False, name=name)(x)
  return nn.BatchNorm(use_running_average=True, epsilon=1e-5, name=f"{name}_bn")(x)


class PlainBlock(nn.Module):
  unfolded: bool = False

  @nn.compact
  def __call__(self, x):
    y = nn.relu(conv_bn(x, x.shape[-1], "conv1", self.unfolded))
    return nn.relu(x + conv_bn(y, x.shape[-1], "conv2", self.unfolded))


class PlainFusion(nn.Module):
  unfolded: bool = False

  @nn.compact
  def __call__(self, b0, b1):
    up = conv_bn(b1, b0.shape[-1], "up_1to0", self.unfolded, kernel=1)
    return nn.relu(b0 + _resize(up, b0.shape[1:3], "bilinear"))


class PlainSegNet(nn.Module):
  """``SegNet(3, **segnet_preset('tiny'))`` written with plain ``nn.Conv`` layers (and
  ``nn.BatchNorm`` if ``unfolded``), same module paths."""

  unfolded: bool = False

  @nn.compact
  def __call__(self, x):
    u = self.unfolded
    in_hw = x.shape[1:3]
    x = nn.relu(conv_bn(x, 4, "stem1", u, stride=2))
    b0 = nn.relu(conv_bn(x, 4, "stem2", u, stride=2))
    b1 = nn.relu(conv_bn(b0, 8, "transition1", u, stride=2))
    b0 = PlainBlock(u, name="stage0_branch0_block0")(b0)
    b1 = PlainBlock(u, name="stage0_branch1_block0")(b1)
    y = PlainFusion(u, name="fuse0")(b0, b1)
    y = nn.relu(conv_bn(y, 8, "head", u))
    logits = nn.Conv(3, (1, 1), name="classifier")(y)
    return _resize(logits, in_hw, "bilinear")


def segnet_pair(recipe, key=0):
  """QConv SegNet variables with identity BatchNorm scaling (gamma = 1, mean = 0, var + eps = 1
  exactly, random beta) and the plain net's variables holding the same numbers: kernel as is,
  bias = beta, every quantizer parameter copied."""
  seg = SegNet(3, recipe=recipe, **segnet_preset("tiny"))
  frame = jnp.zeros((1, 16, 16, 3))
  v = seg.init(jax.random.key(key), frame, phase="key")
  params, stats = flat(v["params"]), flat(v["batch_stats"])
  rng = np.random.default_rng(key)
  eps = np.float32(1e-5)
  var = np.float32(1.0) - eps
  assert var + eps == np.float32(1.0)
  plain = {}
  for k, val in params.items():
    path, name = k.rsplit("/", 1)
    if name == "bn_scale":
      params[k] = jnp.ones_like(val)
    elif name == "bn_bias":
      params[k] = jnp.asarray(rng.normal(0, 0.1, val.shape), jnp.float32)
      plain[f"{path}/bias"] = params[k]
    else:
      plain[k] = val
  for k, val in stats.items():
    stats[k] = jnp.zeros_like(val) if k.endswith("mean") else jnp.full_like(val, var)
  qconv_vars = {"params": unflat(params), "batch_stats": unflat(stats)}
  # The folded weights are the kernels and beta exactly (inv = 1 * rsqrt(1) = 1).
  for k in params:
    if k.endswith("/bn_scale"):
      path = k.rsplit("/", 1)[0]
      w, b = fold_bn(
        params[f"{path}/kernel"],
        params[k],
        params[f"{path}/bn_bias"],
        stats[f"{path}/mean"],
        stats[f"{path}/var"],
        1e-5,
      )
      np.testing.assert_array_equal(w, params[f"{path}/kernel"])
      np.testing.assert_array_equal(b, params[f"{path}/bn_bias"])
  return seg, qconv_vars, quantize(PlainSegNet(), everywhere(recipe)), {"params": unflat(plain)}


RECIPES = {
  "fq": fq_recipe(8, 8),
  "resq_closed": resq_recipe((8, 8), (4, 4), ref_mode="closed"),
  "resq_key": resq_recipe((8, 8), (4, 4), ref_mode="key"),
  "resq_prev": resq_recipe((8, 8), (4, 4), ref_mode="prev"),
  "dynamic": dynamic_recipe(FixedStepPolicy(bits=(0, 2, 4, 8), step=1.0)),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_intercepted_segnet_equals_qconv_segnet_bit_for_bit(name):
  """The plain-linen SegNet under ``quantize`` equals the hand-written QConv SegNet bit for
  bit: outputs, per-layer stats, ResQ state, costs, and the gradients of a loss through
  ``run_clip`` with respect to the input clip, every kernel and every bias.

  QConv SegNet folds BatchNorm into its weights (``W * gamma / sqrt(var + eps)``), so the
  comparison is made where the fold is exact in float32: gamma = 1, mean = 0 and var + eps = 1
  exactly (checked), beta random; the plain net's convs carry beta as their bias. The fold
  still leaves multiplications by exactly 1 in QConv's graph, and XLA may then order the sums
  behind a quantizer scale's gradient (a reduction over every element the quantizer sees)
  differently: those gradients agree to float round-off (relative 1e-6 measured), not bit for
  bit. Unfolded BatchNorm with arbitrary statistics is compared in
  ``test_unfolded_batchnorm_gives_the_folded_numbers``."""
  seg, sv, plain, pv = segnet_pair(RECIPES[name])
  # One keyframe group of 3 frames: the residual scan is a rolled loop (QConv's and the
  # intercepted convs' 'auto' implementation then picks the im2col kernel gradient on CPU).
  clip = random_walk_clip(jax.random.key(3), (1, 3, 16, 16, 3))

  def loss(model, variables, clip):
    r = run_clip(model, variables, clip, period=3, check=False)
    return jnp.sum(jnp.square(r.outputs)), r

  grad = lambda model: jax.jit(jax.grad(loss, argnums=(1, 2), has_aux=True), static_argnums=0)
  (g_seg, gx_seg), r_seg = grad(seg)(seg, sv, clip)
  (g_plain, gx_plain), r_plain = grad(plain)(plain, pv, clip)
  np.testing.assert_array_equal(r_seg.outputs, r_plain.outputs)
  assert_trees_equal(r_seg.stats, r_plain.stats)
  assert_trees_equal(r_seg.state, r_plain.state)
  np.testing.assert_array_equal(gx_seg, gx_plain)
  gs, gp = flat(g_seg["params"]), flat(g_plain["params"])
  renamed = {k.replace("/bn_bias", "/bias"): v for k, v in gs.items() if "/bn_scale" not in k}
  assert sorted(renamed) == sorted(gp)
  for k in gp:
    if is_quantizer_param(k):
      np.testing.assert_allclose(renamed[k], gp[k], rtol=1e-5, err_msg=k)
    else:
      np.testing.assert_array_equal(renamed[k], gp[k], err_msg=k)
  frame = clip[:, 0]
  assert layer_costs(seg, sv, frame) == layer_costs(plain, pv, frame)


def test_unfolded_batchnorm_gives_the_folded_numbers():
  """nn.Conv + nn.BatchNorm under ``quantize`` (BatchNorm left as a float affine map after the
  conv) against QConv SegNet folding arbitrary BatchNorm statistics: per-channel weight scales
  move with the per-channel factor (``q(W * c; s * |c|) = c * q(W; s)``), and the ResQ
  recursion is linear, so the outputs agree up to float round-off; the BOPs are equal."""
  recipe = RECIPES["resq_closed"]
  seg = SegNet(3, recipe=recipe, **segnet_preset("tiny"))
  clip = random_walk_clip(jax.random.key(3), (1, 4, 16, 16, 3))
  v = seg.init(jax.random.key(0), clip[:, 0], phase="key")
  params, stats = flat(v["params"]), flat(v["batch_stats"])
  rng = np.random.default_rng(1)
  for k, val in params.items():
    if k.endswith(("bn_scale", "bn_bias")):
      params[k] = jnp.asarray(rng.uniform(0.5, 1.5, val.shape) * rng.choice([-1, 1], val.shape))
  for k, val in stats.items():
    params_like = (
      rng.uniform(0.5, 2.0, val.shape) if k.endswith("var") else rng.normal(size=val.shape)
    )
    stats[k] = jnp.asarray(params_like, jnp.float32)
  sv = {"params": unflat(params), "batch_stats": unflat(stats)}
  sv = calibrate_model(seg, variables=sv, clips=[clip], period=2, methods=MINMAX)
  params = flat(sv["params"])
  plain = quantize(PlainSegNet(unfolded=True), everywhere(recipe))
  pp, pstats = {}, {}
  for k, val in params.items():
    path, name = k.rsplit("/", 1)
    has_bn = f"{path}/bn_scale" in params
    if name in ("bn_scale", "bn_bias"):
      pp[f"{path}_bn/{name[3:]}"] = val
    elif has_bn and name in ("key_w_scale", "res_w_scale"):
      inv = params[f"{path}/bn_scale"] / jnp.sqrt(stats[f"{path}/var"] + 1e-5)
      pp[k] = val / jnp.abs(inv)
    else:
      pp[k] = val
  for k, val in stats.items():
    path, name = k.rsplit("/", 1)
    pstats[f"{path}_bn/{name}"] = val
  pv = {"params": unflat(pp), "batch_stats": unflat(pstats)}
  r_seg = run_clip(seg, sv, clip, period=2)
  r_plain = run_clip(plain, pv, clip, period=2)
  scale = float(jnp.max(jnp.abs(r_seg.outputs)))
  np.testing.assert_allclose(r_plain.outputs, r_seg.outputs, atol=2e-3 * scale)
  frame = clip[:, 0]
  c_seg, c_plain = layer_costs(seg, sv, frame), layer_costs(plain, pv, frame)
  assert c_seg == c_plain
  np.testing.assert_array_equal(
    bops_report(r_seg.stats, c_seg)["bops_per_frame"],
    bops_report(r_plain.stats, c_plain)["bops_per_frame"],
  )


# --- The float recipe is the float model --------------------------------------------------------


class AllOps(nn.Module):
  """Every op quantize covers: strided, dilated, grouped, depthwise and circular-padded convs,
  BatchNorm, a transposed conv and a dense head."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2), name="strided")(x))
    x = nn.BatchNorm(use_running_average=True, name="bn")(x)
    x = nn.Conv(8, (3, 3), kernel_dilation=(2, 2), name="dilated")(x)
    x = nn.relu(nn.Conv(8, (3, 3), feature_group_count=2, name="grouped")(x))
    x = nn.Conv(8, (5, 5), feature_group_count=8, use_bias=False, name="depthwise")(x)
    x = nn.Conv(8, (3, 3), padding="CIRCULAR", name="circular")(x)
    x = nn.ConvTranspose(6, (2, 2), (2, 2), name="up")(nn.relu(x))
    return nn.Dense(3, name="head")(x)


def test_float_recipe_equals_float_model_exactly():
  model = AllOps()
  clip = random_walk_clip(jax.random.key(0), (2, 3, 16, 16, 3))
  v = model.init(jax.random.key(1), clip[:, 0])
  fq = quantize(model, everywhere(float_recipe()))
  np.testing.assert_array_equal(fq.apply(v, clip[:, 0], phase="key"), model.apply(v, clip[:, 0]))
  np.testing.assert_array_equal(
    jax.jit(lambda v, x: fq.apply(v, x, phase="key"))(v, clip[:, 0]),
    jax.jit(model.apply)(v, clip[:, 0]),
  )
  # No rule at all: every op stays float, counted at 32x32 bits.
  result = run_clip(quantize(model, ()), v, clip, period=2)
  merged = clip.reshape(6, 16, 16, 3)
  np.testing.assert_array_equal(
    result.outputs.reshape(6, *result.outputs.shape[2:]), jax.jit(model.apply)(v, merged)
  )
  costs = layer_costs(quantize(model, ()), v, clip[:, 0])
  report = bops_report(result.stats, costs)
  np.testing.assert_array_equal(report["bops_per_frame"], 32 * 32 * report["macs_per_frame"])


# --- Intercepted ops equal QConv / QConvTranspose / QDense with the same geometry ---------------


CONVS = [
  dict(features=6, kernel_size=(3, 3), strides=(2, 2)),
  dict(features=6, kernel_size=(3, 3), kernel_dilation=(2, 2)),
  dict(features=6, kernel_size=(3, 3), feature_group_count=2, strides=(1, 2)),
  dict(features=4, kernel_size=(5, 5), feature_group_count=4, padding="VALID"),
  dict(features=6, kernel_size=(4, 4), strides=(2, 2), padding=((1, 2), (0, 1))),
]


class One(nn.Module):
  op: nn.Module

  @nn.compact
  def __call__(self, x):
    return self.op(x)


class OneQ(nn.Module):
  op: nn.Module

  @nn.compact
  def __call__(self, x, phase=None):
    return self.op(x, phase)


def _compare_to_qlayer(plain_op, q_op, clip, recipe, exact):
  plain = quantize(One(plain_op), everywhere(recipe))
  qnet = with_recipe_rules(OneQ(q_op), everywhere(recipe))
  qv = qnet.init(jax.random.key(0), clip[:, 0], phase="key")
  r_q = run_clip(qnet, qv, clip, period=2, check=False)
  r_p = run_clip(plain, qv, clip, period=2, check=False)
  if exact:
    np.testing.assert_array_equal(r_p.outputs, r_q.outputs)
  else:
    np.testing.assert_allclose(r_p.outputs, r_q.outputs, rtol=1e-5, atol=1e-5)
  assert_trees_equal(r_p.stats, r_q.stats)
  assert layer_costs(plain, qv, clip[:, 0]) == layer_costs(qnet, qv, clip[:, 0])


@pytest.mark.parametrize("kw", CONVS)
def test_intercepted_conv_equals_qconv(kw):
  clip = random_walk_clip(jax.random.key(1), (2, 4, 9, 10, 4))
  recipe = resq_recipe((8, 8), (4, 4), ref_mode="prev")
  _compare_to_qlayer(nn.Conv(**kw), QConv(**kw, conv_impl="xla"), clip, recipe, exact=True)


@pytest.mark.parametrize("pad", ["SAME", "VALID"])
def test_intercepted_conv_transpose_and_dense_equal_q_layers(pad):
  clip = random_walk_clip(jax.random.key(2), (2, 4, 5, 6, 4))
  recipe = dynamic_recipe(FixedStepPolicy(bits=(0, 2, 4, 8), step=1.0))
  kw = dict(features=5, kernel_size=(3, 3), strides=(2, 2), padding=pad)
  _compare_to_qlayer(nn.ConvTranspose(**kw), QConvTranspose(**kw), clip, recipe, exact=False)
  _compare_to_qlayer(nn.Dense(5), QDense(5), clip, recipe, exact=False)


# --- One ResQ state per call --------------------------------------------------------------------


class SharedQ(nn.Module):
  """One 3x3 QConv module called twice per frame (weight sharing)."""

  recipe: object = RESQ

  @nn.compact
  def __call__(self, x, phase=None):
    conv = QConv(4, recipe=self.recipe, name="conv")
    return conv(nn.relu(conv(x, phase)), phase)


class TwoQ(nn.Module):
  recipe: object = RESQ

  @nn.compact
  def __call__(self, x, phase=None):
    y = QConv(4, recipe=self.recipe, name="conv")(x, phase)
    return QConv(4, recipe=self.recipe, name="conv_b")(nn.relu(y), phase)


class SharedPlain(nn.Module):
  @nn.compact
  def __call__(self, x):
    conv = nn.Conv(4, (3, 3), name="conv")
    return conv(nn.relu(conv(x)))


class TwoPlain(nn.Module):
  @nn.compact
  def __call__(self, x):
    y = nn.Conv(4, (3, 3), name="conv")(x)
    return nn.Conv(4, (3, 3), name="conv_b")(nn.relu(y))


def _two_module_variables(shared_vars):
  """The two-module version's variables: both modules hold the shared layer's weights and
  quantizer parameters."""
  params = dict(shared_vars["params"])
  params["conv_b"] = params["conv"]
  return dict(shared_vars, params=params)


def _as_two_modules(tree):
  """``{conv: {..., call1: {...}}}`` -> ``{conv: {...}, conv_b: {...}}``."""
  tree = dict(flax.core.unfreeze(tree))
  conv = dict(tree.pop("conv"))
  return dict(tree, conv_b=conv.pop("call1"), conv=conv)


@pytest.mark.parametrize("kind", ["qconv", "intercepted"])
def test_layer_called_twice_has_two_states_equal_to_two_modules(kind):
  clip = random_walk_clip(jax.random.key(4), (2, 6, 8, 8, 4))
  if kind == "qconv":
    shared, two = SharedQ(), TwoQ()
    v = shared.init(jax.random.key(0), clip[:, 0], phase="key")
  else:
    shared, two = quantize(SharedPlain(), everywhere(RESQ)), quantize(TwoPlain(), everywhere(RESQ))
    v = shared.init(jax.random.key(0), clip[:, 0], phase="key")
  v = {k: v[k] for k in ("params",)}
  v2 = _two_module_variables(v)
  r1 = run_clip(shared, v, clip, period=3, check=False)
  r2 = run_clip(two, v2, clip, period=3, check=False)
  np.testing.assert_array_equal(r1.outputs, r2.outputs)
  assert_trees_equal(_as_two_modules(r1.state), r2.state)
  assert_trees_equal(_as_two_modules(r1.stats), r2.stats)
  c1, c2 = layer_costs(shared, v, clip[:, 0]), layer_costs(two, v2, clip[:, 0])
  assert c1["conv"] == c2["conv"] and c1["conv/call1"] == c2["conv_b"] and len(c1) == 2
  hand = 8 * 8 * 9 * 4 * 4  # per call: locations * taps * C_in * C_out
  assert sum(c.macs for c in c1.values()) == 2 * hand
  np.testing.assert_array_equal(
    bops_report(r1.stats, c1)["bops_per_frame"], bops_report(r2.stats, c2)["bops_per_frame"]
  )
  # Streaming carries both states too: each step equals run_clip's frame.
  stream = stream_init(shared, v, clip[:, 0])
  outs, stats = [], []
  for t in range(clip.shape[1]):
    y, s, stream = stream_step(shared, v, stream, clip[:, t], period=3, check=False)
    outs.append(y)
    stats.append(s)
  np.testing.assert_allclose(jnp.stack(outs, 1), r1.outputs, rtol=1e-5, atol=1e-5)
  assert_trees_equal(stack_stream_stats(stats), r1.stats)


def test_shared_layer_calibrates_on_both_calls():
  """One set of quantizers per layer, calibrated on what both calls see: min-max over the
  union of their float inputs (and of their residuals, each against its own reference)."""
  clip = random_walk_clip(jax.random.key(5), (2, 6, 8, 8, 4))
  model = quantize(SharedPlain(), everywhere(RESQ))
  float_vars = SharedPlain().init(jax.random.key(0), clip[:, 0])
  v = rq.init_quantizers(model, float_vars, clip[:, 0])
  assert np.isnan(np.asarray(v["params"]["conv"]["key_a_scale"]))
  v = calibrate_model(model, variables=v, clips=[clip], period=3, methods=MINMAX)
  layers = observe(float_twin(model), float_vars, [clip]).layers
  xs = [layers["conv"]["x"], layers["conv/call1"]["x"]]
  key_s, _ = calibrate(np.concatenate([x.reshape(-1) for x in xs]), RESQ.key.act, "minmax")
  np.testing.assert_allclose(v["params"]["conv"]["key_a_scale"], key_s, rtol=1e-6)
  res = [x[:, [1, 2, 4, 5]] - x[:, [0, 1, 3, 4]] for x in xs]  # 'closed': previous frame
  res_s, _ = calibrate(np.concatenate([r.reshape(-1) for r in res]), RESQ.residual.act, "minmax")
  np.testing.assert_allclose(v["params"]["conv"]["res_a_scale"], res_s, rtol=1e-6)
  # The float params are unchanged, same paths.
  np.testing.assert_array_equal(
    v["params"]["conv"]["kernel"], float_vars["params"]["conv"]["kernel"]
  )
  run_clip(model, v, clip, period=3)  # calibrated: accepted by check_quantizers


# --- Refusals -----------------------------------------------------------------------------------


class WithAttention(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Dense(8)(x)
    return nn.MultiHeadDotProductAttention(num_heads=2, name="attn")(x)


class WithScan(nn.Module):
  @nn.compact
  def __call__(self, x):
    def body(cell, carry, _):
      return nn.Dense(x.shape[-1])(carry), None

    scan = nn.scan(body, variable_broadcast="params", split_rngs={"params": False}, length=2)
    return scan(self, x, None)[0]


class WithRemat(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.remat(nn.Dense)(4, name="dense")(x)


@pytest.mark.parametrize(
  "model,match",
  [
    (WithAttention(), r"'attn' \(MultiHeadDotProductAttention\) multiplies two activations"),
    (WithScan(), r"lifted transform \(nn.scan, nn.remat"),
    (WithRemat(), r"lifted transform \(nn.scan, nn.remat"),
  ],
)
def test_attention_and_lifted_transforms_are_refused(model, match):
  x = jnp.ones((2, 5, 8))
  with pytest.raises(ValueError, match=match):
    quantize(model, everywhere(fq_recipe(8, 8))).init(jax.random.key(0), x, phase="key")


def test_quantize_argument_errors():
  with pytest.raises(TypeError, match="model must be a flax.linen Module"):
    quantize(lambda x: x, ())
  with pytest.raises(TypeError, match="rules must be a RecipeRules"):
    quantize(SharedPlain(), {"conv": RESQ})
  with pytest.raises(ValueError, match="conv_impl must be one of"):
    quantize(SharedPlain(), (), conv_impl="fast")
  model = quantize(SharedPlain(), everywhere(RESQ))
  with pytest.raises(ValueError, match="carries state across frames"):
    model.apply(model.init(jax.random.key(0), jnp.ones((1, 4, 4, 4))), jnp.ones((1, 4, 4, 4)))
  assert hash(model) == hash(quantize(SharedPlain(), everywhere(RESQ)))
