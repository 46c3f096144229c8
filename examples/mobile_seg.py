"""Bring your own model: a MobileNet-style segmentation network on resq_jax's building blocks.

The "original" network (``FloatMobileSeg``) is plain Flax: ``nn.Conv`` + ``nn.BatchNorm`` with
hard-swish, inverted residual blocks with depthwise 3x3 / 5x5 convs and squeeze-excite 1x1 convs,
a 2x2 stride-2 transposed conv and a bilinear upsampling of the logits. Its (here: randomly
drawn, as if pretrained) float weights run as they are: ``resq_jax.quantize(FloatMobileSeg(),
rules)`` intercepts its ``nn.Conv`` / ``nn.ConvTranspose`` calls (no copy of the network, no name
mapping, BatchNorm left unfolded after its conv), and the clip runs under

* FP (float recipe; equal to the original network, bit for bit),
* FQ W8A8 (every layer),
* static ResQ W8A8 keyframes / W4A4 residuals, stem and classifier kept at W8A8 FQ by a rule,
* dynamic ResQ with the same rule,

each calibrated on the clip, with a cost report (MACs, BOPs per layer and per frame).

    python examples/mobile_seg.py
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from resq_jax.nn import (
  bops_report,
  calibrate_model,
  format_bops_report,
  init_quantizers,
  layer_costs,
  quantize,
  run_clip,
)
from resq_jax.quant import (
  FixedStepPolicy,
  RecipeRules,
  dynamic_recipe,
  float_recipe,
  fq_recipe,
  resq_recipe,
)

NUM_CLASSES = 4
# (name, expansion channels, output channels, depthwise kernel, stride, squeeze-excite)
BLOCKS = (
  ("block1", 32, 16, 3, 1, True),
  ("block2", 48, 24, 5, 2, True),
  ("block3", 72, 24, 3, 1, False),
)
HEAD_WIDTH = 32


def hard_sigmoid(x):
  return jax.nn.relu6(x + 3.0) / 6.0


# ---------------------------------------------------------------------------------------------
# The original float network (plain Flax): the source of the pretrained weights.


class FloatMobileSeg(nn.Module):
  num_classes: int = NUM_CLASSES

  def _conv_bn(self, x, features, name, kernel=1, stride=1, groups=1, act=nn.hard_swish):
    x = nn.Conv(
      features,
      (kernel, kernel),
      (stride, stride),
      padding="SAME",
      use_bias=False,
      feature_group_count=groups,
      name=f"{name}_conv",
    )(x)
    x = nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return act(x) if act is not None else x

  @nn.compact
  def __call__(self, x):
    in_hw = x.shape[1:3]
    x = self._conv_bn(x, 16, "stem", kernel=3, stride=2)  # 1/2
    for name, expand, out, k, stride, se in BLOCKS:
      y = self._conv_bn(x, expand, f"{name}_expand")
      y = self._conv_bn(y, expand, f"{name}_dw", kernel=k, stride=stride, groups=expand)
      if se:
        s = jnp.mean(y, axis=(1, 2), keepdims=True)
        s = nn.relu(nn.Conv(expand // 4, (1, 1), name=f"{name}_se1_conv")(s))
        y = y * hard_sigmoid(nn.Conv(expand, (1, 1), name=f"{name}_se2_conv")(s))
      y = self._conv_bn(y, out, f"{name}_project", act=None)
      x = x + y if stride == 1 and x.shape[-1] == out else y
    x = nn.ConvTranspose(HEAD_WIDTH, (2, 2), (2, 2), padding="SAME", name="up_conv")(x)  # 1/2
    x = self._conv_bn(nn.hard_swish(x), HEAD_WIDTH, "head", kernel=3)
    logits = nn.Conv(self.num_classes, (1, 1), name="classifier_conv")(x)
    return jax.image.resize(logits, (x.shape[0], *in_hw, self.num_classes), "bilinear")


# Mixed precision: the first and the last layer stay at W8A8 frame quantization (rules match the
# float model's own module paths, first match wins).
EDGES = r"stem_conv|classifier_conv"


def rules(recipe) -> RecipeRules:
  return RecipeRules(((EDGES, fq_recipe(8, 8)), (r".*", recipe)))


def pretrained_float_variables(key, frame):
  """Stand-in for a float checkpoint: random weights and BatchNorm statistics."""
  variables = FloatMobileSeg().init(key, frame)
  leaves, treedef = jax.tree.flatten(variables["batch_stats"])
  keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
  stats = jax.tree.unflatten(
    treedef,
    [
      0.5 + jax.random.uniform(k, v.shape)
      if v.ndim and i % 2
      else 0.1 * jax.random.normal(k, v.shape)
      for i, (k, v) in enumerate(zip(keys, leaves))
    ],
  )
  return {"params": variables["params"], "batch_stats": stats}


def moving_clip(key, batch=1, frames=8, size=64):
  """A smooth random texture panning by one pixel per frame: ``[B, T, H, W, 3]``."""
  field = jax.image.resize(
    jax.random.normal(key, (batch, size // 4, size // 4, 3)), (batch, size, size, 3), "bilinear"
  )
  return jnp.stack([jnp.roll(field, t, axis=2) for t in range(frames)], axis=1)


def quantized_variables(model, float_vars, clip, period):
  """The float variables as they are, plus quantizer parameters calibrated on ``clip``."""
  variables = init_quantizers(model, float_vars, clip[:, 0])
  return calibrate_model(model, variables=variables, clips=[clip], period=period)


def main(size: int = 64, frames: int = 8, period: int = 4, verbose: bool = True) -> dict:
  key = jax.random.key(0)
  clip = moving_clip(key, frames=frames, size=size)
  float_vars = pretrained_float_variables(key, clip[:, 0])
  reference = jax.vmap(lambda x: FloatMobileSeg().apply(float_vars, x), in_axes=1, out_axes=1)(
    clip
  )  # [B, T, H, W, C]
  net = FloatMobileSeg()
  settings = {
    "FP": (quantize(net, ((r".*", float_recipe()),)), 1),
    "FQ W8A8": (quantize(net, ((r".*", fq_recipe(8, 8)),)), 1),
    "ResQ W8A8/W4A4 (edges FQ8)": (quantize(net, rules(resq_recipe((8, 8), (4, 4)))), period),
    "DynResQ (edges FQ8)": (
      quantize(net, rules(dynamic_recipe(FixedStepPolicy(bits=(0, 2, 4, 8), step=1.0)))),
      period,
    ),
  }
  results = {}
  ref_labels = np.asarray(jnp.argmax(reference, -1))
  for name, (model, p) in settings.items():
    variables = quantized_variables(model, float_vars, clip, period)
    result = run_clip(model, variables, clip, period=p)
    costs = layer_costs(model, variables, clip[:, 0])
    report = bops_report(result.stats, costs)
    err = float(jnp.max(jnp.abs(result.outputs - reference)))
    agree = float(np.mean(np.asarray(jnp.argmax(result.outputs, -1)) == ref_labels))
    results[name] = dict(report=report, costs=costs, max_abs_err=err, mask_agreement=agree)
    if verbose:
      print(f"\n== {name}: max |logit - float| = {err:.3g}, mask agreement {100 * agree:.1f}%")
      print(format_bops_report(report, costs))
      print("BOPs per frame:", " ".join(f"{b:.4g}" for b in report["bops_per_frame"]))
  return results


if __name__ == "__main__":
  main()
