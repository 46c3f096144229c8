"""Layer recipes: frozen, validated descriptions of how one linear layer is executed.

A recipe is data, not a subclass (docs/design.md section 1): the same layer runs in float, Frame
Quantization (FQ), static ResQ or dynamic ResQ depending on the recipe it is given. Recipes are
hashable so that they can be static arguments of jitted functions and Flax module attributes.
"""

from __future__ import annotations

import dataclasses
import re

from resq_jax.quant.dynamic import FixedStepPolicy, GatePolicy, HoldPolicy, LadderPolicy
from resq_jax.quant.resq import REF_MODES, check_ref_mode
from resq_jax.quant.spec import QuantSpec, activation_spec, residual_spec, weight_spec

MODES = ("float", "fq", "resq", "dynamic")


@dataclasses.dataclass(frozen=True)
class QuantPair:
  """The weight and input-activation grids of one branch (key or residual)."""

  weight: QuantSpec
  act: QuantSpec

  @property
  def bits(self) -> tuple[int, int]:
    return self.weight.bits, self.act.bits


def key_pair(w_bits: int = 8, a_bits: int = 8) -> QuantPair:
  """Per-output-channel symmetric weights, asymmetric per-tensor activations."""
  return QuantPair(weight=weight_spec(w_bits), act=activation_spec(a_bits))


def residual_pair(
  w_bits: int = 4, a_bits: int = 4, act_channel_axis: int | None = None
) -> QuantPair:
  """Per-output-channel symmetric weights, signed symmetric residuals: per tensor, or per
  channel of ``act_channel_axis`` (-1: one residual scale per input channel, for layers whose
  channels change at very different rates)."""
  act = dataclasses.replace(residual_spec(a_bits), channel_axis=act_channel_axis)
  return QuantPair(weight=weight_spec(w_bits), act=act)


@dataclasses.dataclass(frozen=True)
class LayerRecipe:
  """How a quantized linear layer executes.

  Attributes:
    mode: 'float' (no quantization), 'fq' (Frame Quantization with the ``key`` grids on every
      frame), 'resq' (static ResQ: ``key`` grids on keyframes, ``residual`` grids on residuals)
      or 'dynamic' (dynamic ResQ: per-location residual bits chosen by ``policy``).
    key: grids of keyframes (and of every frame under 'fq').
    residual: grids of residual frames. Under 'dynamic' only ``residual.weight`` is used; the
      activation bits come from the policy.
    ref_mode: 'closed', 'key' or 'prev' (docs/design.md section 3).
    policy: a pure ``(r, unit) -> BitAllocation`` (``LadderPolicy``, ``FixedStepPolicy``,
      ``GatePolicy``, ``HoldPolicy`` or your own hashable callable); required for 'dynamic'.
      ``unit`` is the layer's residual step.
    stop_ref_gradient: truncate back-propagation through time at the carried reference.
  """

  mode: str = "float"
  key: QuantPair = dataclasses.field(default_factory=key_pair)
  residual: QuantPair = dataclasses.field(default_factory=residual_pair)
  ref_mode: str = "closed"
  policy: object = None
  stop_ref_gradient: bool = False

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got mode={self.mode!r}")
    check_ref_mode(self.ref_mode)
    if self.mode == "dynamic" and self.policy is None:
      raise ValueError(
        "mode='dynamic' needs a policy (LadderPolicy, FixedStepPolicy, GatePolicy or HoldPolicy)"
      )
    if self.policy is not None and not callable(self.policy):
      raise ValueError(f"policy must be callable, got policy={self.policy!r}")
    for name in ("key", "residual"):
      if not isinstance(getattr(self, name), QuantPair):
        raise ValueError(f"{name} must be a QuantPair, got {name}={getattr(self, name)!r}")

  @property
  def is_quantized(self) -> bool:
    return self.mode != "float"

  @property
  def has_state(self) -> bool:
    """Whether the layer carries a ResQ state ``(ref, yref)`` across frames."""
    return self.mode in ("resq", "dynamic")

  def replace(self, **changes) -> LayerRecipe:
    return dataclasses.replace(self, **changes)


def float_recipe() -> LayerRecipe:
  return LayerRecipe(mode="float")


def fq_recipe(w_bits: int = 8, a_bits: int = 8) -> LayerRecipe:
  return LayerRecipe(mode="fq", key=key_pair(w_bits, a_bits))


def resq_recipe(
  key_bits: tuple[int, int] = (8, 8),
  residual_bits: tuple[int, int] = (4, 4),
  ref_mode: str = "closed",
  stop_ref_gradient: bool = False,
  residual_channel_axis: int | None = None,
) -> LayerRecipe:
  return LayerRecipe(
    mode="resq",
    key=key_pair(*key_bits),
    residual=residual_pair(*residual_bits, act_channel_axis=residual_channel_axis),
    ref_mode=ref_mode,
    stop_ref_gradient=stop_ref_gradient,
  )


def dynamic_recipe(
  policy=None,
  key_bits: tuple[int, int] = (8, 8),
  residual_bits: tuple[int, int] = (4, 4),
  ref_mode: str = "closed",
  stop_ref_gradient: bool = False,
) -> LayerRecipe:
  """Dynamic ResQ. ``residual_bits = (w, a)``: residual weights get w bits; the a-bit residual
  activation grid is calibrated / learned as in static ResQ and its step is the policy's
  ``unit``, so that ``FixedStepPolicy(step=1.0)`` keeps the resolution of static W{w}A{a} ResQ
  while it skips near-zero locations and adds bits where a residual would clip. The default
  policy is exactly that."""
  policy = FixedStepPolicy() if policy is None else policy
  return LayerRecipe(
    mode="dynamic",
    key=key_pair(*key_bits),
    residual=residual_pair(*residual_bits),
    ref_mode=ref_mode,
    policy=policy,
    stop_ref_gradient=stop_ref_gradient,
  )


# Peer baselines as recipes over the same layers (docs/baselines.md, resq_jax.quant.dynamic).
def hold_recipe(key_bits: tuple[int, int] = (8, 8)) -> LayerRecipe:
  """Keyframe hold: keyframes at ``key_bits``; every residual skipped under the closed loop, so
  each layer returns its keyframe output until the next keyframe (0 BOPs in between)."""
  return dynamic_recipe(HoldPolicy(), key_bits, key_bits, "closed")


def skip_conv_recipe(threshold: float = 1.0, key_bits: tuple[int, int] = (8, 8)) -> LayerRecipe:
  """Skip-Conv-style gating (Habibian et al. 2021): ``z_t = z_{t-1} + W * (g_t . (x_t -
  x_{t-1}))``. Open loop (ref_mode 'prev'); the gate opens where ``max_c |x_t - x_{t-1}| >=
  threshold`` residual steps and the change is then quantized at key precision (residual grid
  ``key_bits``, e.g. W8A8)."""
  gate = GatePolicy((0, key_bits[1]), threshold, 1.0)
  return dynamic_recipe(gate, key_bits, key_bits, "prev")


def delta_cnn_recipe(threshold: float = 1.0, key_bits: tuple[int, int] = (8, 8)) -> LayerRecipe:
  """DeltaCNN-style thresholded updates (Parger et al. 2022): closed loop, so a skipped change
  accumulates in ``x_t - ref`` until it reaches ``threshold`` residual steps; updates use 16-bit
  activations at 1/258 of the 8-bit residual step (the same range: ``2^15 - 1 = 127 * 258 + 1``)
  and 8-bit weights."""
  return dynamic_recipe(GatePolicy((0, 16), threshold, 1 / 258), key_bits, (8, 8), "closed")


@dataclasses.dataclass(frozen=True)
class RecipeRules:
  """Per-layer recipes: ``((pattern, recipe), ...)`` matched against a layer's module path
  (names joined by '/', as in ``params`` and ``resq_stats``, e.g. ``'stage0_block1/conv2'``)
  with ``re.fullmatch``; the first rule that matches wins (as qwix's rules). A layer that no
  rule matches keeps its own ``recipe`` attribute.

  ``RecipeRules(((r"stem.*|classifier", fq_recipe(8, 8)), (r".*", resq_recipe())))`` keeps the
  first and last layers at W8A8 FQ and runs every other layer under static ResQ. Tuples only:
  rules are hashable, so that a model holding them stays a valid static argument of jit.
  """

  rules: tuple = ()

  def __post_init__(self):
    rules = tuple(tuple(r) for r in self.rules)
    for rule in rules:
      if len(rule) != 2 or not isinstance(rule[0], str) or not isinstance(rule[1], LayerRecipe):
        raise ValueError(f"each rule must be a (regex str, LayerRecipe) pair, got {rule!r}")
      try:
        re.compile(rule[0])
      except re.error as e:
        raise ValueError(f"rule pattern {rule[0]!r} is not a regular expression: {e}") from None
    object.__setattr__(self, "rules", rules)

  def match(self, path: str) -> LayerRecipe | None:
    """The recipe of the first rule whose pattern matches all of ``path``, else None."""
    for pattern, recipe in self.rules:
      if re.fullmatch(pattern, path):
        return recipe
    return None

  def resolve(self, path: str, default: LayerRecipe) -> LayerRecipe:
    found = self.match(path)
    return default if found is None else found


__all__ = [
  "MODES",
  "REF_MODES",
  "QuantPair",
  "LayerRecipe",
  "key_pair",
  "residual_pair",
  "RecipeRules",
  "float_recipe",
  "fq_recipe",
  "resq_recipe",
  "dynamic_recipe",
  "hold_recipe",
  "skip_conv_recipe",
  "delta_cnn_recipe",
  "LadderPolicy",
  "FixedStepPolicy",
  "GatePolicy",
  "HoldPolicy",
]
