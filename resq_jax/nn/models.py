"""Segmentation network: a small HRNet-/DDRNet-like multi-resolution CNN made of ``QConv`` layers.

``SegNet`` maps a frame batch ``[B, H, W, C]`` to per-pixel logits ``[B, H, W, num_classes]``:

* stem: conv3x3/2-BN-ReLU (``stem1``), conv3x3/2-BN-ReLU (``stem2``): resolution 1/4;
* branches: branch 0 is the stem output (1/4, ``width`` channels); branch i >= 1 is made by a
  strided conv3x3-BN-ReLU (``transition{i}``) from branch i-1 (1/2^(i+2), ``width * 2^i``);
* ``num_stages`` stages, each: ``num_blocks`` residual basic blocks per branch
  (conv-BN-ReLU, conv-BN, + identity, ReLU) and a bilateral fusion (HRNet style) where every branch
  receives every other one: from a lower resolution a 1x1 conv-BN then an upsample
  (``jax.image.resize``, bilinear or nearest) to its size; from a higher resolution a chain of
  strided conv3x3-BN (ReLU between them); the sum goes through a ReLU. The last fusion only
  computes branch 0, the only one the head reads;
* head on branch 0: conv3x3-BN-ReLU (``head``), conv1x1 with bias to the classes
  (``classifier``), then a bilinear resize of the logits to the input size.

Every conv is a :class:`~resq_jax.nn.layers.QConv` (BN folded for quantized execution), so every
linear layer executes the recipe; ReLUs, additions and resizes act on full activations (ResQ:
only linear layers see residuals). Resizes and additions are not counted in MACs / BOPs.

First and last layers: ``stem1`` and ``classifier`` use ``head_recipe``, which defaults to
``recipe`` (every conv at the same precision). Keeping them at higher precision, as is common
practice, is one argument: ``head_recipe=fq_recipe(8, 8)`` or ``head_recipe=float_recipe()``.

``train=True`` uses BatchNorm batch statistics (and updates ``batch_stats``: pass
``mutable=['batch_stats']``) in layers with a float recipe only; quantized layers always run
with the running statistics folded in (frozen-BN QAT, see ``QConv``). With ``bn_axis_name``
the batch statistics are averaged over that mapped axis where the model runs under it, and are
the local batch's elsewhere (:func:`bound_axis`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax

from resq_jax.nn.layers import QConv
from resq_jax.quant.recipe import LayerRecipe, RecipeRules, float_recipe

UPSAMPLE_METHODS = ("bilinear", "nearest")


def bound_axis(name: str | None) -> str | None:
  """``name`` if a mapped axis of that name encloses the current trace (``jax.shard_map`` over
  a mesh axis, ``vmap(axis_name=...)``), else None. Decided at trace time, free at run time."""
  if name is None:
    return None
  try:
    jax.lax.axis_size(name)
  except NameError:  # "unbound axis name": the model runs outside any mapped axis of that name
    return None
  return name


def _conv_bn(
  features: int,
  recipe: LayerRecipe,
  name: str,
  kernel: int = 3,
  stride: int = 1,
  bn_axis_name: str | None = None,
  conv_impl: str = "auto",
) -> QConv:
  return QConv(
    features,
    kernel_size=(kernel, kernel),
    strides=(stride, stride),
    use_bn=True,
    use_bias=False,
    recipe=recipe,
    # Synchronised BatchNorm where the model runs under the axis (make_train_step's shard_map),
    # per-batch statistics in a user's own loop: the same model works in both.
    bn_axis_name=bound_axis(bn_axis_name),
    conv_impl=conv_impl,
    name=name,
  )


def _resize(x: jax.Array, hw: Sequence[int], method: str) -> jax.Array:
  return jax.image.resize(x, (x.shape[0], *hw, x.shape[-1]), method=method)


class BasicBlock(nn.Module):
  """ResNet basic block: ``relu(conv-BN(relu(conv-BN(x))) + shortcut(x))``; the shortcut is the
  identity, or a 1x1 conv-BN projection when the channels or the stride change."""

  features: int
  stride: int = 1
  recipe: LayerRecipe = LayerRecipe()
  bn_axis_name: str | None = None
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, phase: str | None = None, train: bool = False) -> jax.Array:
    conv_bn = functools.partial(
      _conv_bn, self.features, self.recipe, bn_axis_name=self.bn_axis_name, conv_impl=self.conv_impl
    )
    y = nn.relu(conv_bn("conv1", stride=self.stride)(x, phase, train))
    y = conv_bn("conv2")(y, phase, train)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = conv_bn("proj", kernel=1, stride=self.stride)(x, phase, train)
    return nn.relu(x + y)


class Fusion(nn.Module):
  """Exchange between branches (highest resolution first): output i is
  ``relu(x_i + sum_{j>i} up(conv1x1-BN(x_j)) + sum_{j<i} down_{j->i}(x_j))``, where
  ``down_{j->i}`` is ``i - j`` strided conv3x3-BN (ReLU between them; the intermediate ones keep
  branch j's width). Only the first ``num_outputs`` outputs are computed (None: all)."""

  widths: tuple[int, ...]
  upsample: str = "bilinear"
  recipe: LayerRecipe = LayerRecipe()
  num_outputs: int | None = None
  bn_axis_name: str | None = None
  conv_impl: str = "auto"

  @nn.compact
  def __call__(
    self, xs: Sequence[jax.Array], phase: str | None = None, train: bool = False
  ) -> list[jax.Array]:
    conv_bn = functools.partial(
      _conv_bn, recipe=self.recipe, bn_axis_name=self.bn_axis_name, conv_impl=self.conv_impl
    )
    outs = []
    for i, target in enumerate(xs[: self.num_outputs]):
      total = target
      for j, source in enumerate(xs):
        if j > i:
          y = conv_bn(self.widths[i], name=f"up_{j}to{i}", kernel=1)(source, phase, train)
          total = total + _resize(y, target.shape[1:3], self.upsample)
        elif j < i:
          y = source
          for k in range(i - j):
            last = k == i - j - 1
            width = self.widths[i] if last else self.widths[j]
            y = conv_bn(width, name=f"down_{j}to{i}_{k}", stride=2)(y, phase, train)
            y = y if last else nn.relu(y)
          total = total + y
      outs.append(nn.relu(total))
    return outs


class SegNet(nn.Module):
  """Multi-resolution segmentation CNN (see the module docstring for the architecture).

  Attributes (all hashable: the module is a static argument of jitted functions):
    num_classes: output channels (logits).
    width: channels of the 1/4 branch; branch i has ``width * 2**i``.
    stem_width: channels of the first (1/2 resolution) conv; default ``width``.
    num_branches: 1 (a plain 1/4-resolution network), 2 (1/4 + 1/8), 3 (+ 1/16), ...
    num_stages: stages of blocks + fusion.
    num_blocks: basic blocks per branch and stage.
    head_width: channels of the head's 3x3 conv; default ``2 * width``.
    skip_width: None (the classifier reads the 1/4-resolution head), or the channels of a
      half-resolution refinement (``head_proj``, ``skip_proj``, ``refine``; see ``_refine``)
      that the classifier then reads.
    upsample: 'bilinear' or 'nearest' for the low-to-high fusion (the final resize of the
      logits to the input size is always bilinear).
    recipe: recipe of every conv except the first and the last.
    head_recipe: recipe of ``stem1`` and ``classifier``; None: ``recipe``.
    recipe_rules: per-layer recipes by module path (:class:`~resq_jax.quant.recipe.RecipeRules`,
      first match wins), before ``head_recipe`` / ``recipe``; e.g.
      ``RecipeRules(((r"stage0_.*", fq_recipe(8, 8)),))``.
    bn_axis_name: mesh axis over which float training averages BatchNorm batch statistics
      (synchronised BatchNorm, see ``QConv``) when the model runs under that axis (e.g. inside
      ``make_train_step``'s ``shard_map`` over ``data``); applied outside any mapped axis of
      that name (a user's own loop, one device) the statistics are the batch's own, with no
      argument to change. None: always the local batch's statistics.
    conv_impl: every conv's implementation ('auto', 'xla', 'im2col'; see ``QConv``).
  """

  num_classes: int
  width: int = 32
  stem_width: int | None = None
  num_branches: int = 2
  num_stages: int = 2
  num_blocks: int = 1
  head_width: int | None = None
  skip_width: int | None = None
  upsample: str = "bilinear"
  recipe: LayerRecipe = LayerRecipe()
  head_recipe: LayerRecipe | None = None
  bn_axis_name: str | None = None
  conv_impl: str = "auto"
  recipe_rules: RecipeRules | None = None

  @property
  def branch_widths(self) -> tuple[int, ...]:
    return tuple(self.width * 2**i for i in range(self.num_branches))

  def float_twin(self) -> SegNet:
    """The same architecture with float recipes (e.g. for ``calibrate_model``)."""
    return self.clone(recipe=float_recipe(), head_recipe=None, recipe_rules=None)

  def _check(self, x: jax.Array) -> None:
    if x.ndim != 4:
      raise ValueError(f"SegNet takes frames [B, H, W, C], got shape {x.shape}")
    for name in ("num_classes", "width", "num_branches", "num_stages"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {name}={getattr(self, name)}")
    if self.num_blocks < 0:
      raise ValueError(f"num_blocks must be >= 0, got num_blocks={self.num_blocks}")
    if self.upsample not in UPSAMPLE_METHODS:
      raise ValueError(f"upsample must be one of {UPSAMPLE_METHODS}, got {self.upsample!r}")

  @nn.compact
  def __call__(self, x: jax.Array, phase: str | None = None, train: bool = False) -> jax.Array:
    self._check(x)
    edge = self.recipe if self.head_recipe is None else self.head_recipe
    widths = self.branch_widths
    stem_width = self.width if self.stem_width is None else self.stem_width
    head_width = 2 * self.width if self.head_width is None else self.head_width
    in_hw = x.shape[1:3]

    conv_bn = functools.partial(_conv_bn, bn_axis_name=self.bn_axis_name, conv_impl=self.conv_impl)
    stem = nn.relu(conv_bn(stem_width, edge, "stem1", stride=2)(x, phase, train))
    y = nn.relu(conv_bn(widths[0], self.recipe, "stem2", stride=2)(stem, phase, train))
    branches = [y]
    for i in range(1, self.num_branches):
      conv = conv_bn(widths[i], self.recipe, f"transition{i}", stride=2)
      branches.append(nn.relu(conv(branches[-1], phase, train)))
    for s in range(self.num_stages):
      for i, width in enumerate(widths):
        for k in range(self.num_blocks):
          block = BasicBlock(
            width,
            recipe=self.recipe,
            bn_axis_name=self.bn_axis_name,
            conv_impl=self.conv_impl,
            name=f"stage{s}_branch{i}_block{k}",
          )
          branches[i] = block(branches[i], phase, train)
      if self.num_branches > 1:
        # The head reads branch 0 only: the last fusion computes nothing else.
        last = s == self.num_stages - 1
        fusion = Fusion(
          widths,
          upsample=self.upsample,
          recipe=self.recipe,
          num_outputs=1 if last else None,
          bn_axis_name=self.bn_axis_name,
          conv_impl=self.conv_impl,
          name=f"fuse{s}",
        )
        branches = fusion(branches, phase, train)
    y = nn.relu(conv_bn(head_width, self.recipe, "head")(branches[0], phase, train))
    if self.skip_width is not None:
      y = self._refine(y, stem, conv_bn, phase, train)
    classifier = QConv(
      self.num_classes, kernel_size=(1, 1), recipe=edge, conv_impl=self.conv_impl, name="classifier"
    )
    logits = classifier(y, phase)
    return _resize(logits, in_hw, "bilinear")

  def _refine(self, y, stem, conv_bn, phase, train):
    """Half-resolution refinement (``skip_width``): the 1/4 head features, projected by a 1x1
    conv-BN (``head_proj``) and upsampled, plus a 1x1 conv-BN of the stem's 1/2 features
    (``skip_proj``), then conv3x3-BN-ReLU (``refine``). Small shapes and thin limbs lose
    their boundaries at 1/4 resolution; this costs ~15% more MACs than the plain head."""
    up = _resize(
      conv_bn(self.skip_width, self.recipe, "head_proj", kernel=1)(y, phase, train),
      stem.shape[1:3],
      self.upsample,
    )
    skip = conv_bn(self.skip_width, self.recipe, "skip_proj", kernel=1)(stem, phase, train)
    z = nn.relu(up + skip)
    return nn.relu(conv_bn(self.skip_width, self.recipe, "refine")(z, phase, train))


_PRESETS = {
  # Tests: 2.5k parameters, 0.1 MMACs per 32x32 frame.
  "tiny": dict(width=4, num_branches=2, num_stages=1, num_blocks=1, head_width=8),
  # CPU demo (64x64 frames): see docs/model.md for MACs and measured throughput.
  "demo": dict(width=24, num_branches=2, num_stages=2, num_blocks=1, head_width=48),
  # Strong float model within the CPU budget: the demo net plus a half-resolution refinement
  # (docs/model.md, docs/results.md).
  "strong": dict(
    width=24,
    stem_width=16,
    num_branches=2,
    num_stages=2,
    num_blocks=1,
    head_width=48,
    skip_width=16,
  ),
  # GPUs: three branches, deeper stages.
  "base": dict(width=48, num_branches=3, num_stages=3, num_blocks=2, head_width=96),
}
SEGNET_PRESETS = tuple(_PRESETS)


def segnet_preset(name: str) -> dict:
  """Keyword arguments of :class:`SegNet` (all but ``num_classes`` and the recipes) for 'tiny'
  (tests), 'demo' (CPU) or 'base' (GPU): ``SegNet(num_classes, **segnet_preset('demo'))``."""
  if name not in _PRESETS:
    raise ValueError(f"unknown SegNet preset {name!r}; choose one of {SEGNET_PRESETS}")
  return dict(_PRESETS[name])


__all__ = [
  "BasicBlock",
  "Fusion",
  "SegNet",
  "SEGNET_PRESETS",
  "bound_axis",
  "segnet_preset",
  "UPSAMPLE_METHODS",
]
