"""The typed, frozen experiment: what ``parse.parse`` makes of a validated ConfigDict.

Everything below the entry points (``experiment.train``, ``experiment.evaluate``, ``inputs``,
``models``, ``runs``) takes an :class:`Experiment` or one of its parts, never the ConfigDict: a
setting is read once, in ``parse.parse``, and reaches the code that uses it as a typed field
(``Experiment.quant.recipe`` -> ``models.make_model`` -> ``SegNet`` -> each ``QConv``). Every
part is a frozen, hashable, keyword-only dataclass (a call with fields out of order cannot
silently swap them); which config key fills which field is declared in
``resq_jax.experiment.schema.KEYS``.

Derived rules live here, once:

- the keyframe period: recipes without temporal state (float, fq) have no keyframes, so their
  period is 1 whatever the config says (:func:`keyframe_period`);
- calibration sees at least one residual frame per keyframe group (:func:`calibration_period`),
  so that residual ranges are set even where the run itself has K = 1;
- the family of a recipe in reports (``fp | fq | resq | dynamic``, :func:`family_of`; a sweep
  setting may name its own display family, e.g. 'hold', 'skipconv', 'deltacnn', 'videoiq') and
  where a setting's weights come from (``source``: ``fp | ptq | qat``). ``mode`` is only ever the
  recipe's mode (float / fq / resq / dynamic);
- VideoIQ-style per-frame precision (config ``quant.mode='frame_precision'``) is not a layer
  recipe but a choice among FQ recipes per frame: a :class:`FramePrecisionPlan` beside the
  recipe (``Setting.frame_precision``, ``QuantPlan.frame_precision``), whose ``recipe`` is then
  the top candidate.
"""

from __future__ import annotations

import dataclasses

from resq_jax.nn.calibrate import CalibrationMethods
from resq_jax.nn.frame_precision import FramePrecisionPolicy
from resq_jax.quant.keyframes import KeyframeTrigger
from resq_jax.quant.recipe import LayerRecipe
from resq_jax.tasks.base import Task

SOURCES = ("fp", "ptq", "qat")  # where a setting's weights come from
FAMILIES = ("fp", "fq", "resq", "dynamic", "frame_precision")


def keyframe_period(recipe: LayerRecipe, period: int) -> int:
  """The period K that ``recipe`` runs with: ``period`` for stateful recipes, else 1."""
  return int(period) if recipe.has_state else 1


def _check_top(recipe: LayerRecipe, plan: FramePrecisionPlan | None) -> None:
  if plan is not None and recipe != plan.top:
    raise ValueError("with frame_precision, recipe must be its top candidate (plan.top)")


def calibration_period(period: int) -> int:
  """The period calibration observes clips with: at least 2 (one residual frame per group)."""
  return max(2, int(period))


def family_of(recipe: LayerRecipe) -> str:
  """``fp | fq | resq | dynamic``: the report family of a recipe."""
  return "fp" if recipe.mode == "float" else recipe.mode


@dataclasses.dataclass(frozen=True)
class FramePrecisionPlan:
  """VideoIQ-style per-frame precision (``resq_jax.nn.frame_precision``): ``candidates`` are
  stateless recipes of ascending precision (FQ recipes from ``quant.frame_bits``), each run with
  its own calibrated variables; ``thresholds`` (``quant.frame_thresholds``, one fewer) pick a
  frame's candidate from ``mean |x_t - x_{t-1}|``."""

  candidates: tuple[LayerRecipe, ...]
  thresholds: tuple[float, ...]

  def __post_init__(self):
    object.__setattr__(self, "candidates", tuple(self.candidates))
    object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
    if len(self.candidates) < 2 or len(self.thresholds) != len(self.candidates) - 1:
      raise ValueError(
        f"frame precision needs at least 2 candidates and one threshold fewer, got "
        f"{len(self.candidates)} candidates and thresholds={self.thresholds}"
      )
    for recipe in self.candidates:
      if not isinstance(recipe, LayerRecipe) or recipe.has_state:
        raise ValueError(f"frame precision candidates are stateless recipes, got {recipe!r}")
    FramePrecisionPolicy(self.thresholds)  # validates the thresholds

  @property
  def policy(self) -> FramePrecisionPolicy:
    return FramePrecisionPolicy(self.thresholds)

  @property
  def top(self) -> LayerRecipe:
    """The most precise candidate (the ``recipe`` of a frame-precision setting)."""
    return self.candidates[-1]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSpec:
  """Which dataset build to read and how to batch it (``data`` section).

  ``dataset``: ``synth_res`` (built on first use from ``regime`` ... ``num_test``) or a real
  dataset built beforehand by ``python -m resq_jax.data.build`` into ``data_dir`` at
  ``height`` x ``width`` with ``num_frames``-frame clips (``regime`` and the clip counts are
  then unused; ``resq_jax.experiment.inputs``)."""

  data_dir: str
  regime: str
  height: int
  width: int
  num_frames: int
  num_train: int
  num_validation: int
  num_test: int
  batch_size: int
  worker_count: int
  dataset: str = "synth_res"

  @property
  def is_real(self) -> bool:
    """A real dataset (read from a build of ``resq_jax.data.build``), not SynthRes."""
    return self.dataset != "synth_res"

  def dataset_kwargs(self) -> dict:
    """Keyword arguments of ``build_synthres`` / ``make_loader`` that identify the SynthRes
    dataset."""
    return {
      "regime": self.regime,
      "height": self.height,
      "width": self.width,
      "num_frames": self.num_frames,
      "num_train": self.num_train,
      "num_validation": self.num_validation,
      "num_test": self.num_test,
    }

  @property
  def frame_shape(self) -> tuple[int, int, int, int]:
    """One frame batch for a device-free init: ``[1, H, W, 3]``."""
    return (1, self.height, self.width, 3)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSpec:
  """The network: a ``resq_jax.nn.models.segnet_preset`` name and every ``QConv``'s
  ``conv_impl`` (``resq_jax.nn.layers.CONV_IMPLS``)."""

  preset: str
  conv_impl: str = "auto"


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantPlan:
  """How the model is quantized: the layer recipe, its keyframe period (normalised by
  :func:`keyframe_period` at construction) and how quantizer ranges are calibrated.
  ``frame_precision``: set for ``quant.mode='frame_precision'`` (``recipe`` is then its top
  candidate)."""

  recipe: LayerRecipe
  period: int
  calibration: CalibrationMethods
  calibration_batches: int
  frame_precision: FramePrecisionPlan | None = None

  def __post_init__(self):
    object.__setattr__(self, "period", keyframe_period(self.recipe, self.period))
    _check_top(self.recipe, self.frame_precision)

  @property
  def calibration_period(self) -> int:
    return calibration_period(self.period)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimSpec:
  lr: float
  quant_lr: float
  weight_decay: float
  warmup_steps: int
  grad_clip: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSpec:
  num_steps: int
  log_every: int
  checkpoint_every: int
  keep_checkpoints: int
  unroll: bool
  remat: bool = False
  # QAT only: weight of a distillation loss from the float teacher's outputs (0: none) and its
  # softmax temperature.
  distill_weight: float = 0.0
  distill_temperature: float = 1.0
  # Segmentation: the loss weight of each class (empty: uniform); the task carries them too.
  class_weights: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Setting:
  """One evaluated configuration: a recipe, its keyframe period (normalised at construction)
  and where its weights come from (``source``: 'fp' the float checkpoint; 'ptq' float weights
  + calibration; 'qat' the QAT run in ``run_dir``).

  ``family_label``: the display family the sweep gave (e.g. 'hold', 'skipconv'), '' for the
  recipe's own. ``frame_precision``: per-frame precision among its candidates (then ``recipe``
  is the top candidate; evaluate with ``resq_jax.nn.frame_precision``). ``trigger``: adaptive
  keyframes (a :class:`~resq_jax.quant.keyframes.KeyframeTrigger` whose ``max_period`` is
  ``period``; the family gains ``_adaptive``)."""

  name: str
  recipe: LayerRecipe
  period: int = 1
  source: str = "ptq"
  run_dir: str = ""
  family_label: str = ""
  frame_precision: FramePrecisionPlan | None = None
  trigger: KeyframeTrigger | None = None

  def __post_init__(self):
    if self.source not in SOURCES:
      raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
    object.__setattr__(self, "period", keyframe_period(self.recipe, self.period))
    _check_top(self.recipe, self.frame_precision)
    if self.trigger is not None:
      if not isinstance(self.trigger, KeyframeTrigger):
        raise TypeError(f"trigger must be a KeyframeTrigger or None, got {self.trigger!r}")
      if self.trigger.max_period != self.period or self.frame_precision is not None:
        raise ValueError(
          f"trigger: max_period {self.trigger.max_period} must equal the period {self.period} "
          "of a ResQ / dynamic setting without frame precision"
        )

  @property
  def family(self) -> str:
    """The sweep's display family if it gave one, else ``frame_precision`` or the recipe's;
    ``_adaptive`` appended under a keyframe trigger."""
    if self.family_label:
      base = self.family_label
    elif self.frame_precision is not None:
      base = "frame_precision"
    else:
      base = family_of(self.recipe)
    return base + ("_adaptive" if self.trigger is not None else "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalSpec:
  """The evaluation: batching, the sweep (settings of ``eval.sweeps[eval.sweep]``), the QAT
  runs evaluated after it and whether plots are drawn."""

  batch_size: int
  num_batches: int  # 0: the whole split
  split: str  # 'validation' | 'test'
  sweep_name: str
  sweep: tuple[Setting, ...]
  qat_runs: tuple[str, ...]
  plots: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class Experiment:
  """A whole experiment. ``config_json`` is the ConfigDict it was parsed from, as JSON: what a
  run saves as ``config.json`` and compares on resume."""

  seed: int
  stage: str  # fp | ptq | qat
  init_from: str
  distributed: bool
  task: Task
  data: DataSpec
  model: ModelSpec
  quant: QuantPlan
  optim: OptimSpec
  train: TrainSpec
  eval: EvalSpec
  config_json: str = dataclasses.field(default="{}", repr=False, compare=False)

  @property
  def num_train_steps(self) -> int:
    """Steps this stage trains: 0 for PTQ (calibration only)."""
    return 0 if self.stage == "ptq" else self.train.num_steps

  def replace(self, **changes) -> Experiment:
    return dataclasses.replace(self, **changes)
