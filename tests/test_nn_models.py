"""SegNet against a float64 NumPy reference of its documented architecture and ResQ identities."""

import functools
import zlib

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.nn.calibrate import CalibrationMethods, calibrate_model
from resq_jax.nn.costs import layer_costs, network_macs
from resq_jax.nn.layers import QConv
from resq_jax.nn.models import SEGNET_PRESETS, SegNet, segnet_preset
from resq_jax.nn.runner import run_clip
from resq_jax.nn.tracing import visit_layers
from resq_jax.quant.recipe import float_recipe, fq_recipe, resq_recipe

NUM_CLASSES, HW, PERIOD, T = 7, 32, 4, 4  # one keyframe, three residual frames
MINMAX = CalibrationMethods("minmax", "minmax", "minmax", "minmax")
TINY = segnet_preset("tiny")


def tiny(recipe=float_recipe(), **kw):
  return SegNet(NUM_CLASSES, **TINY, recipe=recipe, **kw)


def make_variables(model, x):
  """Variables of ``model`` drawn with NumPy, a fixed stream per parameter path (so a quantized
  model gets the same weights as its float twin), with non-trivial BatchNorm parameters and
  running statistics. (Jitting ``model.init`` compiles one threefry per parameter: ~30 s on a
  busy 2-core CPU.) Quantizer parameters are ones: calibrate them."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if name.endswith("['kernel']"):
      value = rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
    elif name.endswith(("['bn_scale']", "['var']")):
      value = rng.uniform(0.5, 1.5, size=leaf.shape)
    elif name.endswith(("['bn_bias']", "['mean']", "['bias']")):
      value = 0.2 * rng.normal(size=leaf.shape)
    else:
      value = np.ones(leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.partial(jax.jit, static_argnums=0, static_argnames="train")
def apply(model, variables, x, train=False):
  if train:
    return model.apply(variables, x, train=True, mutable=["batch_stats"])
  return model.apply(variables, x)


def random_walk_clip(seed, shape, step=0.1):
  """A smooth clip ``[B, T, H, W, C]`` (NumPy twin of tiny_nets.random_walk_clip)."""
  rng = np.random.default_rng(seed)
  base = rng.normal(size=(shape[0], 1, *shape[2:]))
  return jnp.asarray(base + np.cumsum(step * rng.normal(size=shape), axis=1), jnp.float32)


@pytest.fixture(scope="module")
def clip():
  return random_walk_clip(0, (2, T, HW, HW, 3))


@functools.cache
def _float_variables():
  return make_variables(tiny(), jnp.zeros((1, HW, HW, 3)))


@functools.cache
def _resq16():
  """A 16-bit ResQ tiny SegNet (key and residual grids) with the float model's weights,
  min-max calibrated on the test clip."""
  model = tiny(resq_recipe((16, 16), (16, 16), "closed"))
  clip = random_walk_clip(0, (2, T, HW, HW, 3))
  variables = calibrate_model(
    model,
    float_model=model.float_twin(),
    variables=make_variables(model, clip[:, 0]),
    clips=[clip],
    period=PERIOD,
    methods=MINMAX,
  )
  return model, variables


# ---- float64 NumPy reference of the tiny preset (2 branches, 1 stage, 1 block) ----


def np_conv(x, w, stride=1):
  """'SAME' conv like lax.conv_general_dilated (padding low = total // 2)."""
  kh, kw = w.shape[:2]
  n, h, wd, _ = x.shape
  oh, ow = -(-h // stride), -(-wd // stride)
  ph, pw = max((oh - 1) * stride + kh - h, 0), max((ow - 1) * stride + kw - wd, 0)
  xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
  out = np.zeros((n, oh, ow, w.shape[-1]))
  for i in range(kh):
    for j in range(kw):
      out += xp[:, i : i + stride * oh : stride, j : j + stride * ow : stride] @ w[i, j]
  return out


def np_resize(x, hw, method="bilinear"):
  """Half-pixel-centre resize, one axis at a time: bilinear with edge clamping, or nearest
  (source pixel ``floor((o + 0.5) * n_in / n_out)``)."""
  for axis, n_out in ((1, hw[0]), (2, hw[1])):
    n_in, rows = x.shape[axis], np.arange(n_out)
    m = np.zeros((n_out, n_in))
    if method == "nearest":
      m[rows, np.minimum(np.floor((rows + 0.5) * n_in / n_out).astype(int), n_in - 1)] = 1
    else:
      src = np.clip((rows + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
      lo = np.floor(src).astype(int)
      hi, frac = np.minimum(lo + 1, n_in - 1), src - lo
      np.add.at(m, (rows, lo), 1 - frac)
      np.add.at(m, (rows, hi), frac)
    x = np.moveaxis(np.tensordot(m, np.moveaxis(x, axis, 0), axes=1), 0, axis)
  return x


def np_segnet_tiny(variables, x, upsample="bilinear", refine=False):
  p = flax.traverse_util.flatten_dict(variables["params"], sep="/")
  s = flax.traverse_util.flatten_dict(variables["batch_stats"], sep="/")
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  relu = lambda v: np.maximum(v, 0)

  def cbn(name, v, stride=1):
    y = np_conv(v, p[f"{name}/kernel"], stride)
    inv = p[f"{name}/bn_scale"] / np.sqrt(np.asarray(s[f"{name}/var"], np.float64) + 1e-5)
    return (y - np.asarray(s[f"{name}/mean"], np.float64)) * inv + p[f"{name}/bn_bias"]

  def block(name, v):
    return relu(v + cbn(f"{name}/conv2", relu(cbn(f"{name}/conv1", v))))

  x = np.asarray(x, np.float64)
  stem = relu(cbn("stem1", x, 2))
  hi = relu(cbn("stem2", stem, 2))
  lo = relu(cbn("transition1", hi, 2))
  hi, lo = block("stage0_branch0_block0", hi), block("stage0_branch1_block0", lo)
  hi = relu(hi + np_resize(cbn("fuse0/up_1to0", lo), hi.shape[1:3], upsample))  # last fusion
  y = relu(cbn("head", hi))
  if refine:  # skip_width: half-resolution refinement of the head's features
    z = np_resize(cbn("head_proj", y), stem.shape[1:3], upsample) + cbn("skip_proj", stem)
    y = relu(cbn("refine", relu(z)))
  y = np_conv(y, p["classifier/kernel"]) + p["classifier/bias"]
  return np_resize(y, x.shape[1:3])


def test_half_resolution_refinement_equals_numpy_reference():
  """skip_width: head features projected, upsampled to the stem's 1/2 resolution, added to the
  projected stem features, refined by a conv3x3-BN-ReLU; the classifier reads that."""
  model = tiny(skip_width=4)
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, HW, HW, 3)), jnp.float32)
  variables = make_variables(model, x)
  out = apply(model, variables, x)
  ref = np_segnet_tiny(variables, x, refine=True)
  assert np.std(ref) > 0.3
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("upsample,hw", [("bilinear", (HW, HW)), ("nearest", (30, 26))])
def test_float_forward_equals_numpy_reference(upsample, hw):
  """Odd sizes too: 30x26 -> 15x13 -> 8x7 (1/4) -> 4x4 (1/8), logits back at 30x26."""
  variables = _float_variables()
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, *hw, 3)), jnp.float32)
  out = apply(tiny(upsample=upsample), variables, x)
  assert out.shape == (2, *hw, NUM_CLASSES)
  ref = np_segnet_tiny(variables, x, upsample)
  assert np.std(ref) > 0.3
  np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_16_bit_resq_through_run_clip_equals_float(clip):
  """16-bit key and residual grids, min-max calibrated, every frame: within 3e-4 of the logit
  range (measured: 9e-5)."""
  model, variables = _resq16()
  out = run_clip(model, variables, clip, period=PERIOD).outputs
  ref = run_clip(model.float_twin(), variables, clip, period=PERIOD).outputs
  assert out.shape == (2, T, HW, HW, NUM_CLASSES)
  scale = float(jnp.max(jnp.abs(ref)))
  assert scale > 1.0
  np.testing.assert_allclose(out, ref, atol=3e-4 * scale)
  # The float clip run is the per-frame float model.
  np.testing.assert_allclose(ref[:, 1], apply(tiny(), variables, clip[:, 1]), atol=1e-5, rtol=1e-5)


def test_period_one_resq_equals_fq_exactly(clip):
  model, variables = _resq16()
  out_resq = run_clip(model, variables, clip, period=1).outputs
  out_fq = run_clip(tiny(fq_recipe(16, 16)), variables, clip, period=1).outputs
  np.testing.assert_array_equal(out_resq, out_fq)


def test_layer_macs_equal_hand_computed_sum(clip):
  """Tiny preset on 32x32: 1/2 res 16x16, 1/4 res 8x8 (4 ch), 1/8 res 4x4 (8 ch)."""
  variables = _float_variables()
  costs = {k: c.macs for k, c in layer_costs(tiny(), variables, clip[:, 0]).items()}
  hand = {
    "stem1": 16 * 16 * 9 * 3 * 4,
    "stem2": 8 * 8 * 9 * 4 * 4,
    "transition1": 4 * 4 * 9 * 4 * 8,
    "stage0_branch0_block0/conv1": 8 * 8 * 9 * 4 * 4,
    "stage0_branch0_block0/conv2": 8 * 8 * 9 * 4 * 4,
    "stage0_branch1_block0/conv1": 4 * 4 * 9 * 8 * 8,
    "stage0_branch1_block0/conv2": 4 * 4 * 9 * 8 * 8,
    "fuse0/up_1to0": 4 * 4 * 1 * 8 * 4,  # the 1x1 conv runs before the upsample
    "head": 8 * 8 * 9 * 4 * 8,
    "classifier": 8 * 8 * 1 * 8 * NUM_CLASSES,
  }
  assert costs == hand
  assert network_macs(layer_costs(tiny(), variables, clip[:, 0])) == 100864


THREE_BRANCHES = dict(width=2, num_branches=3, num_stages=2, num_blocks=2, upsample="nearest")


@pytest.mark.parametrize(
  "kwargs,hw", [(segnet_preset(n), (64, 64)) for n in SEGNET_PRESETS] + [(THREE_BRANCHES, (36, 28))]
)
def test_layer_macs_equal_conv_shapes(kwargs, hw):
  """Independent of layer_costs: MACs from each conv's kernel and captured output shape."""
  frame = jnp.zeros((1, *hw, 3))
  model = SegNet(NUM_CLASSES, **kwargs)
  variables = jax.eval_shape(model.init, jax.random.key(0), frame)
  out, inter = jax.eval_shape(
    lambda v, x: model.apply(
      v, x, capture_intermediates=lambda m, _: isinstance(m, QConv), mutable=["intermediates"]
    ),
    variables,
    frame,
  )
  kernels = {
    k[:-1]: v.shape
    for k, v in flax.traverse_util.flatten_dict(variables["params"]).items()
    if k[-1] == "kernel"
  }
  outputs = {
    k[:-1]: v[0].shape for k, v in flax.traverse_util.flatten_dict(inter["intermediates"]).items()
  }
  assert kernels.keys() == outputs.keys()
  expected = sum(np.prod(outputs[k][1:3]) * np.prod(kernels[k]) for k in kernels)
  costs = layer_costs(model, variables, frame)
  assert len(costs) == len(kernels)
  assert network_macs(costs) == expected
  assert out.shape == (1, *hw, NUM_CLASSES)


def test_train_mode_uses_and_updates_batch_statistics(clip):
  variables = _float_variables()
  x = clip[:, 0]
  out, mutated = apply(tiny(), variables, x, train=True)
  new, old = mutated["batch_stats"], variables["batch_stats"]
  # First layer: running stats move 10% towards the batch statistics of its conv output.
  y = np_conv(np.asarray(x, np.float64), np.asarray(variables["params"]["stem1"]["kernel"]), 2)
  np.testing.assert_allclose(
    new["stem1"]["mean"], 0.9 * old["stem1"]["mean"] + 0.1 * y.mean(axis=(0, 1, 2)), atol=1e-5
  )
  np.testing.assert_allclose(
    new["stem1"]["var"],
    0.9 * old["stem1"]["var"] + 0.1 * y.var(axis=(0, 1, 2)),
    atol=1e-5,
    rtol=1e-5,
  )
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new, old)
  assert all(jax.tree.leaves(changed)) and len(jax.tree.leaves(changed)) == 18  # 9 BN layers
  assert not np.allclose(out, apply(tiny(), variables, x), atol=1e-2)  # batch, not running, stats
  # Quantized recipes keep frozen (folded) BatchNorm: train=True changes nothing.
  qmodel = tiny(fq_recipe(16, 16))
  qvars = _resq16()[1]  # the FQ model uses its key quantizers
  _, mut_q = apply(qmodel, qvars, x, train=True)
  jax.tree.map(np.testing.assert_array_equal, mut_q["batch_stats"], old)


def test_first_conv_gradient_equals_float64_finite_difference(clip):
  variables = _float_variables()
  x, target = clip[:, 0], jnp.tanh(clip[:, 1, :, :, :1])

  def loss(params):
    out = tiny().apply(dict(variables, params=params), x)
    return jnp.mean(jnp.square(out - target))

  grad = jax.jit(jax.grad(loss))(variables["params"])["stem1"]["kernel"]
  idx = np.unravel_index(np.argmax(np.abs(grad)), grad.shape)
  target64 = np.asarray(target, np.float64)

  def np_loss(delta):
    kernel = np.asarray(variables["params"]["stem1"]["kernel"], np.float64).copy()
    kernel[idx] += delta
    params = dict(variables["params"], stem1=dict(variables["params"]["stem1"], kernel=kernel))
    return np.mean(np.square(np_segnet_tiny(dict(variables, params=params), x) - target64))

  eps = 1e-4
  fd = (np_loss(eps) - np_loss(-eps)) / (2 * eps)
  assert abs(fd) > 1e-3
  np.testing.assert_allclose(grad[idx], fd, rtol=1e-3)


def test_head_recipe_sets_first_and_last_layer_only(clip):
  head = fq_recipe(8, 8)
  model = tiny(resq_recipe((8, 8), (4, 4)), head_recipe=head)
  variables = jax.eval_shape(model.init, jax.random.key(0), clip[:, 0])
  recipes = visit_layers(model, variables, clip[:, 0], lambda layer, _: layer.recipe)
  assert {k for k, r in recipes.items() if r == head} == {"stem1", "classifier"}
  assert all(r == model.recipe for k, r in recipes.items() if k not in ("stem1", "classifier"))
  default = tiny(model.recipe)
  variables = jax.eval_shape(default.init, jax.random.key(0), clip[:, 0])
  default = visit_layers(default, variables, clip[:, 0], lambda layer, _: layer.recipe)
  assert set(default.values()) == {model.recipe}


def test_model_is_hashable_and_a_static_argument(clip):
  a, b = tiny(resq_recipe()), tiny(resq_recipe())
  assert hash(a) == hash(b) and a == b and a != tiny(fq_recipe())
  variables = _float_variables()
  apply(tiny(), variables, clip[:, 0])
  size = apply._cache_size()
  out = apply(tiny(), variables, clip[:, 0])  # a new, equal module: no retrace
  assert apply._cache_size() == size
  np.testing.assert_allclose(out, np_segnet_tiny(variables, clip[:, 0]), atol=1e-4, rtol=1e-4)


def test_presets_and_invalid_arguments(clip):
  assert SEGNET_PRESETS == ("tiny", "demo", "strong", "base")
  preset = segnet_preset("demo")
  preset["width"] = -1  # a copy: the registry is unchanged
  assert segnet_preset("demo")["width"] > 0
  with pytest.raises(ValueError, match="preset"):
    segnet_preset("huge")
  with pytest.raises(ValueError, match="upsample"):
    jax.eval_shape(tiny(upsample="cubic").init, jax.random.key(0), clip[:, 0])
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    jax.eval_shape(tiny().init, jax.random.key(0), clip)
