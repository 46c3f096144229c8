"""The config boundary: validate an experiment ConfigDict once and parse it into a typed
:class:`resq_jax.experiment.Experiment`.

The entry points (``train.py``, ``eval.py``, ``demo.py`` through ``pipeline``) call
:func:`parse` before any data is built or anything compiles; everything below them takes the
``Experiment`` (or one of its parts) and never reads a ConfigDict (docs/design.md section 1).

Every key of the schema (``resq_jax.config_defaults.default_config``, re-exported by
``configs/default.py``) has a :class:`Rule` in :data:`RULES` (its type and range, and
its relations to other keys); ``tests/test_config_validation.py`` keeps the two key sets equal.
:func:`validate` is pure Python and raises one :class:`ConfigError` listing every problem, one
line each: ``key: got VALUE (allowed: RANGE)``, or ``unknown config key 'optim.learning_rate'
(did you mean 'optim.lr'?)``. The entry points print those lines and exit with status 2, without
a traceback (``errors.run_cli``; :func:`parse_flags` does the same for bad ``--config.*``
flags, which absl parses before ``main`` runs).
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import numbers
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

import jax
import ml_collections
from absl import flags
from ml_collections.config_flags.config_flags import is_config_flag

from resq_jax import errors
from resq_jax.config_defaults import default_config
from resq_jax.data.loader import DATASETS, REAL_DATASETS
from resq_jax.data.spec import MAX_SIZE, MIN_SIZE, REGIMES
from resq_jax.experiment import (
  DataSpec,
  EvalSpec,
  Experiment,
  FramePrecisionPlan,
  ModelSpec,
  OptimSpec,
  QuantPlan,
  Setting,
  TrainSpec,
)
from resq_jax.nn.calibrate import CalibrationMethods
from resq_jax.nn.models import SEGNET_PRESETS as PRESETS
from resq_jax.quant import calibration
from resq_jax.quant.dynamic import FixedStepPolicy, GatePolicy, HoldPolicy, LadderPolicy
from resq_jax.quant.recipe import (
  MODES,
  REF_MODES,
  LayerRecipe,
  dynamic_recipe,
  float_recipe,
  fq_recipe,
  resq_recipe,
)
from resq_jax.quant.spec import MAX_BITS
from resq_jax.tasks import TASK_NAMES, Task, get_task

STAGES = ("fp", "ptq", "qat")
# quant.mode: a layer recipe's mode, or per-frame precision among FQ recipes (VideoIQ-style).
FRAME_PRECISION = "frame_precision"
QUANT_MODES = (*MODES, FRAME_PRECISION)
POLICIES = ("fixed_step", "ladder", "gate", "hold")
CALIBRATION_METHODS = calibration.CALIBRATION_METHODS
# The keys of an eval.sweeps setting that are not quant keys: display name and family.
SETTING_NAME_KEY = "name"
SETTING_FAMILY_KEY = "family"
SETTING_KEYS = (SETTING_NAME_KEY, SETTING_FAMILY_KEY)
FAMILY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,23}")

__all__ = [
  "RULES",
  "ConfigError",
  "Rule",
  "check_device_count",
  "default_config",
  "frame_precision_from",
  "parse",
  "parse_flags",
  "problems",
  "recipe_from",
  "validate",
]


class ConfigError(errors.InvalidConfigError):  # a ValueError; exit code errors.EXIT_CONFIG (2)
  """An invalid config. ``problems`` holds one line per problem, ``key: message (allowed: ...)``;
  ``str(error)`` is those lines joined by newlines."""

  def __init__(self, problems: Sequence[str]):
    self.problems = tuple(problems)
    super().__init__("\n".join(self.problems))


# --- Rules ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Rule:
  """How one config key is checked.

  ok: whether the value on its own is valid (type and range). allowed: what is (a string, or a
  callable for names only known at run time). relation: for a valid value, a message (ending in
  ``(allowed: ...)``) when it clashes with other keys, else None; other keys are read through
  :class:`_Context`, which hides invalid ones so that one mistake is reported once.
  """

  ok: Callable[[Any], bool]
  allowed: str | Callable[[], str]
  relation: Callable[[Any, _Context], str | None] | None = None

  def describe(self) -> str:
    return self.allowed() if callable(self.allowed) else self.allowed


@dataclasses.dataclass(frozen=True)
class _Context:
  values: dict
  valid: frozenset
  num_devices: int | None  # None: not known yet (multi-host, before jax.distributed.initialize)
  needs_init_from: bool

  def get(self, key: str):
    """The value of ``key`` if it passed its own check, else None."""
    return self.values[key] if key in self.valid else None


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_finite(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _is_seq(v) -> bool:
  return isinstance(v, (tuple, list))


def _int(low: int, high: int | None = None, note: str = "", relation=None) -> Rule:
  allowed = (f"int >= {low}" if high is None else f"int in [{low}, {high}]") + note
  return Rule(lambda v: _is_int(v) and v >= low and (high is None or v <= high), allowed, relation)


def _real(low: float, *, strict: bool) -> Rule:
  return Rule(
    lambda v: _is_finite(v) and (v > low if strict else v >= low),
    f"finite number {'>' if strict else '>='} {low:g}",
  )


def _choice(options: Sequence[str] | Callable[[], Sequence[str]]) -> Rule:
  names = options if callable(options) else (lambda: options)
  return Rule(lambda v: isinstance(v, str) and v in names(), lambda: " | ".join(names()))


def _bool() -> Rule:
  return Rule(lambda v: isinstance(v, bool), "True | False")


def _bits(weight_low: int, act_low: int, relation=None) -> Rule:
  def ok(v):
    return (
      _is_seq(v)
      and len(v) == 2
      and all(map(_is_int, v))
      and weight_low <= v[0] <= MAX_BITS
      and act_low <= v[1] <= MAX_BITS
    )

  return Rule(
    ok,
    f"(weight, activation) ints, weight in [{weight_low}, {MAX_BITS}] (1-bit "
    f"signed weights {{-s, 0}} zero every positive weight), activation in "
    f"[{act_low}, {MAX_BITS}]",
    relation,
  )


def _policy_bits_ok(v) -> bool:
  return (
    _is_seq(v)
    and len(v) > 0
    and all(_is_int(b) and (b == 0 or 2 <= b <= MAX_BITS) for b in v)
    and list(v) == sorted(set(v))
  )


def _thresholds_ok(v) -> bool:
  return (
    _is_seq(v)
    and len(v) > 0
    and all(_is_finite(t) and t > 0 for t in v)
    and all(a < b for a, b in itertools.pairwise(v))
  )


def _class_weights(v, ctx: _Context):
  """One weight per class of the segmentation task (the dataset decides the class count)."""
  task, dataset = ctx.get("task"), ctx.get("data.dataset")
  if len(v) == 0 or task is None or dataset is None:
    return None
  if task != "segmentation":
    return f"{len(v)} weights, but task {task!r} has no classes (allowed: ())"
  n = task_for(task, dataset).num_classes
  if len(v) != n:
    return f"{len(v)} weights for {n} classes of {dataset} (allowed: {n} weights or ())"
  return None


def _frame_bits_ok(v) -> bool:
  """At least two (weight, activation) pairs; neither bit-width decreases, no pair repeats."""
  if not (_is_seq(v) and len(v) >= 2):
    return False
  pairs = [tuple(p) if _is_seq(p) else None for p in v]
  if not all(p is not None and len(p) == 2 and all(map(_is_int, p)) for p in pairs):
    return False
  if not all(2 <= w <= MAX_BITS and 1 <= a <= MAX_BITS for w, a in pairs):
    return False
  return all(b[0] >= a[0] and b[1] >= a[1] and a != b for a, b in itertools.pairwise(pairs))


def _family_ok(v) -> bool:
  return isinstance(v, str) and FAMILY_PATTERN.fullmatch(v) is not None


def _qat_runs_ok(v) -> bool:
  return isinstance(v, str) and (v == "" or all(d and d == d.strip() for d in v.split(",")))


def _sweeps_ok(v) -> bool:
  """A mapping of names to non-empty sequences of settings, each a mapping of quant keys."""
  if not isinstance(v, (Mapping, ml_collections.ConfigDict)) or len(v) == 0:
    return False
  for name in v:
    settings = v[name]
    if not (isinstance(name, str) and name and _is_seq(settings) and len(settings) > 0):
      return False
    for setting in settings:
      if not isinstance(setting, (Mapping, ml_collections.ConfigDict)):
        return False
      if any(k not in SETTING_KEYS and f"quant.{k}" not in RULES for k in setting):
        return False
      if SETTING_FAMILY_KEY in setting and not _family_ok(setting[SETTING_FAMILY_KEY]):
        return False
  return True


# --- Relations between keys (each reported on one key, only when the others are valid) ----------
def _needs_init_from(v, ctx: _Context):
  stage = ctx.get("stage")
  if v == "" and (stage in ("ptq", "qat") or ctx.needs_init_from):
    who = f"stage {stage!r}" if stage in ("ptq", "qat") else "the evaluation sweep"
    return f"empty, but {who} needs init_from (allowed: the workdir of an FP run)"
  return None


def _divisible_by_devices(v, ctx: _Context):
  if ctx.num_devices is not None and v % ctx.num_devices:
    return (
      f"{v} is not divisible by the device count {ctx.num_devices} (allowed: a multiple "
      f"of {ctx.num_devices})"
    )
  return None


def _real_dataset(ctx: _Context) -> bool:
  """A real dataset: the SynthRes clip counts (data.num_*) are unused, so unchecked."""
  return ctx.get("data.dataset") in REAL_DATASETS


def _dataset_fits(v, ctx: _Context):
  """A real dataset must be read by the configured task, have eval.split and hold clips of
  data.num_frames."""
  if v not in REAL_DATASETS:
    return None
  info = REAL_DATASETS[v]
  readable = " | ".join(["synth_res", *(n for n, d in REAL_DATASETS.items() if d.task)])
  if info.task is None:
    return (
      f"no task reads {v} yet (it needs a video object segmentation task scored by J&F) "
      f"(allowed: {readable})"
    )
  task, split, frames = ctx.get("task"), ctx.get("eval.split"), ctx.get("data.num_frames")
  if task is not None and task != info.task:
    return f"{v} is read by task {info.task!r}, not {task!r} (allowed: task={info.task!r})"
  if split is not None and split not in info.splits:
    return (
      f"{v} has no {split!r} split for eval.split (allowed: eval.split in "
      f"{' | '.join(s for s in info.splits if s != 'train')})"
    )
  if frames is not None and info.max_frames is not None and frames > info.max_frames:
    return (
      f"{v} clips hold at most {info.max_frames} frames, data.num_frames={frames} (allowed: "
      f"data.num_frames <= {info.max_frames})"
    )
  return None


def _train_batches(v, ctx: _Context):
  batch = ctx.get("data.batch_size")
  if _real_dataset(ctx):
    return None
  if batch is not None and v < batch:  # calibration reads one epoch without partial batches
    return (
      f"{v} clips are fewer than one batch of data.batch_size={batch}: calibration would "
      f"get no batch (allowed: int >= {batch})"
    )
  return None


def _calibration_batches(v, ctx: _Context):
  num_train, batch = ctx.get("data.num_train"), ctx.get("data.batch_size")
  if _real_dataset(ctx):
    return None
  if num_train is None or batch is None or num_train < batch:
    return None  # reported on data.num_train
  if v * batch > num_train:
    return (
      f"{v} batches of data.batch_size={batch} need {v * batch} clips, data.num_train="
      f"{num_train} holds {num_train // batch} (allowed: int in [1, {num_train // batch}])"
    )
  return None


def _validation_clips(v, ctx: _Context):
  batch = ctx.get("eval.batch_size")
  if batch is None or _real_dataset(ctx):
    return None
  allowed = f"(allowed: a positive multiple of eval.batch_size={batch})"
  if v < batch:
    return f"{v} clips are fewer than one eval batch: evaluation would see nothing {allowed}"
  if v % batch:
    return f"{v} clips: the last {v % batch} would never be evaluated {allowed}"
  return None


def _eval_batches(v, ctx: _Context):
  split = ctx.get("eval.split") or "validation"
  clips, batch = ctx.get(f"data.num_{split}"), ctx.get("eval.batch_size")
  if _real_dataset(ctx):
    return None
  if clips is None or batch is None or clips < batch:
    return None
  if v > clips // batch:
    return (
      f"{v} batches, but data.num_{split}={clips} holds {clips // batch} of "
      f"eval.batch_size={batch} (allowed: int in [0, {clips // batch}], 0 = all)"
    )
  return None


def _eval_split(v, ctx: _Context):
  if v != "test" or _real_dataset(ctx):
    return None
  clips = ctx.get("data.num_test")
  problem = None if clips is None else _validation_clips(clips, ctx)
  return None if problem is None else f"data.num_test: {problem}"


def _warmup(v, ctx: _Context):
  steps = ctx.get("train.num_steps")
  if steps is not None and v >= steps:
    return f"{v} is not below train.num_steps={steps} (allowed: int in [0, {steps - 1}])"
  return None


def _residual_vs_key(v, ctx: _Context):
  # A residual frame dearer than a keyframe (w * a bits per MAC) would be better run as one;
  # finer residual weights than key weights are allowed (e.g. W6A6 keys, W8A4 residuals).
  mode, key = ctx.get("quant.mode"), ctx.get("quant.key_bits")
  if mode in ("resq", "dynamic") and key is not None and v[0] * v[1] > key[0] * key[1]:
    return (
      f"{tuple(v)} costs {v[0] * v[1]} bits per MAC, more than quant.key_bits={tuple(key)} "
      f"({key[0] * key[1]}) in mode {mode!r} (allowed: residual w * a <= key w * a)"
    )
  return None


def _gate_bits(v, ctx: _Context):
  if ctx.get("quant.policy") == "gate" and (len(v) != 2 or v[0] != 0):
    return (
      f"{tuple(v)} under the gate policy (allowed: (0, b) with b in [2, {MAX_BITS}]: skip or "
      f"b bits)"
    )
  return None


def _frame_thresholds(v, ctx: _Context):
  bits = ctx.get("quant.frame_bits")
  if ctx.get("quant.mode") == FRAME_PRECISION and bits is not None and len(v) != len(bits) - 1:
    return (
      f"{len(v)} thresholds for {len(bits)} quant.frame_bits {_pairs(bits)} (allowed: "
      f"{len(bits) - 1}, one fewer than the candidates, under mode {FRAME_PRECISION!r})"
    )
  return None


def _one_recipe_stage(v, ctx: _Context):
  if v in ("ptq", "qat") and ctx.get("quant.mode") == FRAME_PRECISION:
    return (
      f"stage {v!r} calibrates or trains one recipe, but quant.mode={FRAME_PRECISION!r} picks "
      f"one of several per frame (allowed: stage 'fp' with {FRAME_PRECISION} settings in "
      f"eval.sweeps, or another quant.mode)"
    )
  return None


def _ladder_thresholds(v, ctx: _Context):
  bits = ctx.get("quant.policy_bits")
  if ctx.get("quant.policy") == "ladder" and bits is not None and len(v) != len(bits):
    return (
      f"{len(v)} thresholds for {len(bits)} quant.policy_bits {tuple(bits)} (allowed: one "
      f"per candidate under the ladder policy)"
    )
  return None


def _period_vs_clip(v, ctx: _Context):
  # A period longer than the clip runs exactly as K = T (one keyframe per clip): refuse it
  # rather than report a K that never happened.
  mode, frames = ctx.get("quant.mode"), ctx.get("data.num_frames")
  if mode in ("resq", "dynamic") and frames is not None and v > frames:
    return (
      f"{v} exceeds data.num_frames={frames} in mode {mode!r} (allowed: int in [1, {frames}]: "
      f"a longer period runs as K = {frames}, one keyframe per clip)"
    )
  return None


def _sweep_known(v, ctx: _Context):
  sweeps = ctx.get("eval.sweeps")
  if sweeps is not None and v not in sweeps:
    return f"got {v!r} (allowed: {' | '.join(sweeps.keys())}, the names of eval.sweeps)"
  return None


def _sweep_settings(v, ctx: _Context):
  """Each setting of the selected sweep, merged onto the config's quant section, must pass the
  quant rules (so a bad sweep fails here, not after the float model has been loaded)."""
  name = ctx.get("eval.sweep")
  if name is None or name not in v:
    return None
  found = []
  quant_keys = [k for k in RULES if k.startswith("quant.")]
  for i, setting in enumerate(v[name]):
    overridden = {f"quant.{k}" for k in setting.keys() if k not in SETTING_KEYS}
    values = dict(ctx.values)
    values.update({f"quant.{k}": setting[k] for k in setting.keys() if k not in SETTING_KEYS})
    valid = set(ctx.valid) - overridden
    for key in sorted(overridden):
      try:
        ok = bool(RULES[key].ok(values[key]))
      except (TypeError, ValueError, OverflowError):
        ok = False
      if ok:
        valid.add(key)
      else:
        found.append(
          f"setting {i} of {name!r}: {key}: got {values[key]!r} (allowed: {RULES[key].describe()})"
        )
    sub = dataclasses.replace(ctx, values=values, valid=frozenset(valid))
    for key in quant_keys:  # relations, unless the config itself already fails them
      if key in valid and RULES[key].relation is not None:
        message = RULES[key].relation(values[key], sub)
        if message and (
          key in overridden
          or key not in ctx.valid
          or message != RULES[key].relation(ctx.values[key], ctx)
        ):
          found.append(f"setting {i} of {name!r}: {key}: {message}")
  return "; ".join(found) or None


_ANY_STR = Rule(lambda v: isinstance(v, str), "a string")
_DIR = Rule(lambda v: isinstance(v, str) and v.strip() == v and v != "", "a non-empty path")
_METHOD = _choice(CALIBRATION_METHODS)

RULES: dict[str, Rule] = {
  "seed": _int(0, 2**32 - 2, " (grain shuffles with 32-bit seeds; calibration uses seed + 1)"),
  "stage": Rule(_choice(STAGES).ok, " | ".join(STAGES), _one_recipe_stage),
  "init_from": Rule(_ANY_STR.ok, "the workdir of an FP run ('' for stage fp)", _needs_init_from),
  "distributed": _bool(),
  "task": _choice(TASK_NAMES),
  "data.dataset": Rule(
    _choice(DATASETS).ok,
    " | ".join(DATASETS) + " (a real one built by python -m resq_jax.data.build)",
    _dataset_fits,
  ),
  "data.data_dir": _DIR,
  "data.regime": _choice(REGIMES),
  "data.height": _int(MIN_SIZE, MAX_SIZE),
  "data.width": _int(MIN_SIZE, MAX_SIZE),
  "data.num_frames": _int(2, note=" (a keyframe and at least one residual frame)"),
  "data.num_train": _int(1, relation=_train_batches),
  "data.num_validation": _int(1, relation=_validation_clips),
  "data.num_test": _int(0, note=" (read when eval.split='test')"),
  "data.batch_size": _int(1, relation=_divisible_by_devices),
  "data.worker_count": _int(0, note=" (0: read in the main process)"),
  "model.preset": _choice(PRESETS),
  "quant.mode": _choice(QUANT_MODES),
  "quant.key_bits": _bits(2, 1),
  "quant.residual_bits": _bits(2, 2, relation=_residual_vs_key),
  "quant.period": _int(1, relation=_period_vs_clip),
  "quant.ref_mode": _choice(REF_MODES),
  "quant.policy": _choice(POLICIES),
  "quant.policy_bits": Rule(
    _policy_bits_ok,
    f"non-empty strictly ascending ints, each 0 (skip) or in [2, {MAX_BITS}]; (0, b) for the "
    "gate policy",
    _gate_bits,
  ),
  "quant.policy_step": _real(0, strict=True),
  "quant.thresholds": Rule(
    _thresholds_ok,
    "positive, strictly ascending finite numbers (one "
    "per quant.policy_bits candidate for the ladder policy)",
    _ladder_thresholds,
  ),
  "quant.gate_threshold": _real(0, strict=True),
  "quant.frame_bits": Rule(
    _frame_bits_ok,
    f"at least 2 (weight, activation) int pairs, weight in [2, {MAX_BITS}], activation in "
    f"[1, {MAX_BITS}], ascending (neither bit-width decreases, no pair repeated)",
  ),
  "quant.frame_thresholds": Rule(
    _thresholds_ok,
    "positive, strictly ascending finite numbers (one fewer than quant.frame_bits for mode "
    "frame_precision)",
    _frame_thresholds,
  ),
  "quant.stop_ref_gradient": _bool(),
  "calibration.num_batches": _int(1, relation=_calibration_batches),
  "calibration.weight": _METHOD,
  "calibration.key_act": _METHOD,
  "calibration.residual_act": _METHOD,
  "calibration.residual_weight": _METHOD,
  "optim.lr": _real(0, strict=True),
  "optim.quant_lr": _real(0, strict=True),
  "optim.weight_decay": _real(0, strict=False),
  "optim.warmup_steps": _int(0, relation=_warmup),
  "optim.grad_clip": _real(0, strict=True),
  # PTQ trains no step, but train_lib.make_optimizer builds the warmup + cosine schedule for
  # every stage, and optax needs 2 steps for it.
  "train.num_steps": _int(2, note=" (every stage: PTQ ignores it, the LR schedule needs 2)"),
  "train.log_every": _int(1),
  "train.checkpoint_every": _int(1),
  "train.keep_checkpoints": _int(1),
  "train.unroll": _bool(),
  "train.remat": _bool(),
  "train.distill_weight": Rule(
    _real(0, strict=False).ok, "finite number >= 0 (0: no distillation; read by QAT only)"
  ),
  "train.distill_temperature": _real(0, strict=True),
  "train.class_weights": Rule(
    lambda v: _is_seq(v) and all(_is_finite(w) and w > 0 for w in v),
    "() or one positive finite number per class of the segmentation task",
    _class_weights,
  ),
  "eval.batch_size": _int(1, relation=_divisible_by_devices),
  "eval.split": Rule(lambda v: v in ("validation", "test"), "validation | test", _eval_split),
  "eval.num_batches": _int(0, note=" (0: the whole split)", relation=_eval_batches),
  "eval.sweeps": Rule(
    _sweeps_ok,
    "name -> non-empty tuple of settings, each a dict of quant keys (and an optional display "
    "'name' and 'family', the family an identifier [a-z][a-z0-9_]{0,23}); see configs/sweeps.py",
    _sweep_settings,
  ),
  "eval.sweep": Rule(
    lambda v: isinstance(v, str) and v != "", "a name of eval.sweeps", _sweep_known
  ),
  "eval.qat_runs": Rule(_qat_runs_ok, "'' or comma-separated workdirs, no spaces around them"),
  "eval.plots": _bool(),
}
SECTIONS = tuple(dict.fromkeys(k.partition(".")[0] for k in RULES if "." in k))
# Names users reach for (optax, PyTorch, the paper) -> the key's last part here.
_ALIASES = {
  "learning_rate": "lr",
  "quant_learning_rate": "quant_lr",
  "lr_quant": "quant_lr",
  "wd": "weight_decay",
  "clip": "grad_clip",
  "warmup": "warmup_steps",
  "steps": "num_steps",
  "k": "period",
  "keyframe_period": "period",
  "workers": "worker_count",
  "num_workers": "worker_count",
  "frames": "num_frames",
}


# --- Validation ----------------------------------------------------------------------------------
def _flatten(config, prefix: str = "") -> Iterator[tuple[str, Any]]:
  """``(dotted key, value)`` of every leaf; known leaves are never descended into."""
  for key in config:
    name, value = f"{prefix}{key}", config[key]
    if name not in RULES and isinstance(value, (ml_collections.ConfigDict, dict)):
      yield from _flatten(value, name + ".")
    else:
      yield name, value


def suggest(name: str) -> str | None:
  """The config key that an unknown ``name`` most likely meant, or None."""
  section, _, leaf = name.rpartition(".")
  leaf = _ALIASES.get(leaf.lower(), leaf)
  same_leaf = [k for k in RULES if k.rpartition(".")[2] == leaf]
  if same_leaf:
    return next((k for k in same_leaf if k.startswith(section + ".")), same_leaf[0])
  close = difflib.get_close_matches(name, list(RULES) + list(SECTIONS), n=1, cutoff=0.6)
  return close[0] if close else None


def _unknown(name: str) -> str:
  guess = suggest(name)
  hint = f"did you mean {guess!r}?" if guess else "see configs/default.py for every key"
  return f"unknown config key {name!r} ({hint})"


def _show(value) -> str:
  """A one-line repr (a ConfigDict's own repr is multi-line YAML)."""
  return repr(value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value)


def problems(config, *, num_devices: int | None = None, needs_init_from: bool = False) -> list[str]:
  """Every problem of ``config``, one ``key: message (allowed: ...)`` line each."""
  found, values, broken = [], {}, set()
  for name, value in _flatten(config):
    if name in RULES:
      values[name] = value
    elif name in SECTIONS:  # a section replaced by a plain value
      broken.add(name)
      keys = ", ".join(k.partition(".")[2] for k in RULES if k.startswith(name + "."))
      found.append(f"{name}: got {value!r} (allowed: a section with keys {keys})")
    else:
      found.append(_unknown(name))
  valid = set()
  for key, rule in RULES.items():
    if key not in values:
      if key.partition(".")[0] not in broken:
        found.append(f"{key}: missing (allowed: {rule.describe()})")
      continue
    try:
      ok = bool(rule.ok(values[key]))
    except (TypeError, ValueError, OverflowError):  # e.g. strings compared with ints
      ok = False
    if ok:
      valid.add(key)
    else:
      found.append(f"{key}: got {_show(values[key])} (allowed: {rule.describe()})")
  if num_devices is None and not (
    values.get("distributed") is True and not jax.distributed.is_initialized()
  ):
    num_devices = jax.device_count()  # else unknown until jax.distributed.initialize()
  ctx = _Context(values, frozenset(valid), num_devices, needs_init_from)
  for key, rule in RULES.items():
    if key in valid and rule.relation is not None:
      message = rule.relation(values[key], ctx)
      if message:
        found.append(f"{key}: {message}")
  return found


def validate(
  config: ml_collections.ConfigDict,
  *,
  num_devices: int | None = None,
  needs_init_from: bool = False,
) -> None:
  """Raise one :class:`ConfigError` listing every problem of ``config``; None if it is valid.

  Pure Python over the ConfigDict (nothing is built or compiled). Batch sizes must divide over
  ``num_devices``, by default ``jax.device_count()``; except that for ``distributed=True`` before
  ``jax.distributed.initialize()`` that check is skipped (the global count is not known yet, and
  asking for it would start the backend, after which initialize fails): validate again after
  initialising. ``needs_init_from``: the caller (the evaluation sweep) needs an FP run even at
  stage 'fp'.
  """
  found = problems(config, num_devices=num_devices, needs_init_from=needs_init_from)
  if found:
    raise ConfigError(found)


# --- Entry points: one line per problem, exit status 2, no traceback -----------------------------
def _exit(lines: Sequence[str], kind: str) -> NoReturn:
  for line in lines:
    print(f"{kind}: {line}", file=sys.stderr, flush=True)
  sys.exit(errors.EXIT_CONFIG)


def check_overrides(argv: Sequence[str], flag_names: Sequence[str] = ("config",)) -> None:
  """ConfigError naming every ``--<flag>.<key>=...`` in ``argv`` whose key is not a config key
  (ml_collections would raise a bare ``AttributeError: 'learning_rate'`` while parsing)."""
  found = []
  for arg in argv[1:]:
    if arg == "--":
      break
    if not arg.startswith("-"):
      continue
    flag, _, path = arg.lstrip("-").partition("=")[0].partition(".")
    if flag not in flag_names and flag.startswith("no") and flag[2:] in flag_names:
      flag = flag[2:]  # --noconfig.train.unroll
    if flag in flag_names and path and path not in RULES and path not in SECTIONS:
      found.append(_unknown(path))
  if found:
    raise ConfigError(found)


_BAD_VALUE = re.compile(
  r"flag --(?P<flag>[^.=\s]+)\.(?P<key>[^=\s]+)=(?P<value>.*?): "
  r"(?P<why>.*)"
)


def parse_flags(argv: Sequence[str], flag_values: flags.FlagValues | None = None) -> list[str]:
  """An absl ``flags_parser`` for the entry points:
  ``app.run(main, flags_parser=config_lib.parse_flags)``.

  Parses like absl's default, but an unknown ``--config.<key>`` (a typo), a value that does not
  parse (``--config.optim.lr=abc``), a missing required flag or an unreadable config file prints
  one line (``config error: ...`` / ``flag error: ...``) and exits 2 instead of a traceback or
  absl's usage text. Returns the remaining arguments, as absl's parser does.
  """
  fv = flags.FLAGS if flag_values is None else flag_values
  names = [name for name in fv if is_config_flag(fv[name])]
  try:
    check_overrides(argv, names)
    remaining = fv(list(argv))
  except ConfigError as e:
    _exit(e.problems, "config error")
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    _exit(*_flag_error(" ".join(str(e).split()), names))
  for name in names:  # ml_collections defers a config file's load error to the first access
    try:
      getattr(fv[name].value, "keys", None)
    except OSError as e:
      why = str(e).strip().splitlines()[-1].strip()
      _exit([f"cannot load the config file of --{name}: {why}"], "flag error")
  return remaining


def _flag_error(message: str, names: Sequence[str]) -> tuple[list[str], str]:
  """(lines, kind) for a flag parsing error; a bad ``--config.<key>`` value names its rule."""
  match = _BAD_VALUE.fullmatch(message)
  if match and match["flag"] in names and match["key"] in RULES:
    allowed = RULES[match["key"]].describe()
    return [
      (f"{match['key']}: cannot parse {match['value']!r}: {match['why']} (allowed: {allowed})")
    ], "config error"
  return [message], "flag error"


# --- Parsing: the typed Experiment ------------------------------------------------------------
def _pairs(v) -> tuple:
  return tuple(tuple(p) for p in v)


def policy_from(q) -> FixedStepPolicy | LadderPolicy | GatePolicy | HoldPolicy:
  """The dynamic ResQ policy of a ``quant`` section (a ConfigDict or a plain mapping)."""
  if q["policy"] == "ladder":
    return LadderPolicy(bits=tuple(q["policy_bits"]), thresholds=tuple(q["thresholds"]))
  if q["policy"] == "gate":
    return GatePolicy(
      bits=tuple(q["policy_bits"]),
      threshold=float(q["gate_threshold"]),
      step=float(q["policy_step"]),
    )
  if q["policy"] == "hold":
    return HoldPolicy()
  return FixedStepPolicy(bits=tuple(q["policy_bits"]), step=float(q["policy_step"]))


def frame_precision_from(q) -> FramePrecisionPlan | None:
  """The per-frame precision plan of a ``quant`` section in mode 'frame_precision' (FQ
  candidates from ``frame_bits``, ``frame_thresholds``), else None."""
  if q["mode"] != FRAME_PRECISION:
    return None
  candidates = tuple(fq_recipe(w, a) for w, a in _pairs(q["frame_bits"]))
  return FramePrecisionPlan(candidates, tuple(float(t) for t in q["frame_thresholds"]))


def recipe_from(q) -> LayerRecipe:
  """The LayerRecipe of a ``quant`` section (a ConfigDict or a plain mapping); in mode
  'frame_precision' the top candidate (:func:`frame_precision_from` gives them all)."""
  key_bits, res_bits = tuple(q["key_bits"]), tuple(q["residual_bits"])
  if q["mode"] == FRAME_PRECISION:
    return frame_precision_from(q).top
  if q["mode"] == "float":
    return float_recipe()
  if q["mode"] == "fq":
    return fq_recipe(*key_bits)
  if q["mode"] == "resq":
    return resq_recipe(key_bits, res_bits, q["ref_mode"], q["stop_ref_gradient"])
  return dynamic_recipe(policy_from(q), key_bits, res_bits, q["ref_mode"], q["stop_ref_gradient"])


def _setting(quant: dict, overrides, source: str | None = None, run_dir: str = "") -> Setting:
  values = {**quant, **{k: overrides[k] for k in overrides if k not in SETTING_KEYS}}
  recipe = recipe_from(values)
  get = overrides.get if hasattr(overrides, "get") else lambda key: None
  setting = Setting(
    "",
    recipe,
    values["period"],
    source or ("fp" if recipe.mode == "float" else "ptq"),
    run_dir,
    family_label=get(SETTING_FAMILY_KEY) or "",
    frame_precision=frame_precision_from(values),
  )
  return dataclasses.replace(setting, name=get(SETTING_NAME_KEY) or default_setting_name(setting))


def default_setting_name(setting: Setting) -> str:
  """'FP32', 'FQ W4A4', 'ResQ K=4 closed W8A8/W4A4', 'DynResQ K=4 step=1', 'Hold K=4 W8A8',
  'Gate K=4 prev W8A8 thr=1', 'FramePrec W4A4/W6A6/W8A8 thr=0.05/0.15' (+ ' QAT')."""
  r, plan = setting.recipe, setting.frame_precision
  if plan is not None:
    bits = "/".join("W{}A{}".format(*c.key.bits) for c in plan.candidates)
    name = f"FramePrec {bits} thr={'/'.join(f'{t:g}' for t in plan.thresholds)}"
  elif isinstance(r.policy, HoldPolicy) and r.mode == "dynamic":
    name = f"Hold K={setting.period} W{r.key.bits[0]}A{r.key.bits[1]}"
  elif isinstance(r.policy, GatePolicy) and r.mode == "dynamic":
    p = r.policy
    step = "" if p.step == 1.0 else f" step={p.step:.3g}"
    name = (
      f"Gate K={setting.period} {r.ref_mode} W{r.residual.weight.bits}A{p.bits[-1]} "
      f"thr={p.threshold:g}{step}"
    )
  elif r.mode == "float":
    name = "FP32"
  elif r.mode == "fq":
    name = "FQ W{}A{}".format(*r.key.bits)
  else:
    bits = "W{}A{}/W{}A{}".format(*r.key.bits, *r.residual.bits)
    if r.mode == "resq":
      name = f"ResQ K={setting.period} {r.ref_mode} {bits}"
    else:
      step = getattr(r.policy, "step", None)
      policy = f"step={step:g}" if step is not None else type(r.policy).__name__
      name = f"DynResQ K={setting.period} {policy}"
  return name + (" QAT" if setting.source == "qat" else "")


def qat_setting(run_config: Mapping, run_dir: str, name: str) -> Setting:
  """The evaluated setting of a finished QAT run, from its saved ``config.json`` (a dict)."""
  # Keys added to the schema after the run take their defaults.
  quant = {**_section(default_config(), "quant"), **dict(run_config["quant"])}
  return _setting(quant, {SETTING_NAME_KEY: name}, "qat", run_dir)


def task_for(name: str, dataset: str) -> Task:
  """The task ``name`` set up for ``dataset``: the segmentation task gets the dataset's class
  count (Cityscapes: 19 trainIds); SynthRes keeps the task's defaults."""
  task = get_task(name)
  info = REAL_DATASETS.get(dataset)
  if info is not None and info.num_classes is not None:
    task = dataclasses.replace(task, num_classes=info.num_classes)
  return task


def _weighted(task: Task, class_weights) -> Task:
  """``task`` with the loss weights of ``train.class_weights`` (unchanged when empty)."""
  if len(class_weights) == 0:
    return task
  return dataclasses.replace(task, class_weights=tuple(float(w) for w in class_weights))


def _section(config, name: str) -> dict:
  return {k: config[name][k] for k in config[name]}


def parse(
  config: ml_collections.ConfigDict,
  *,
  num_devices: int | None = None,
  needs_init_from: bool = False,
) -> Experiment:
  """Validate ``config`` (:func:`validate`, same arguments) and build its :class:`Experiment`.

  The one place where config keys are read: ``quant`` becomes a :class:`QuantPlan` (recipe,
  normalised period, calibration), ``eval.sweeps[eval.sweep]`` a tuple of
  :class:`Setting`, ``task`` a :class:`resq_jax.tasks.Task` (:func:`task_for` the dataset).
  """
  validate(config, num_devices=num_devices, needs_init_from=needs_init_from)
  quant, cal = _section(config, "quant"), config.calibration
  eval_ = config.eval
  return Experiment(
    seed=int(config.seed),
    stage=config.stage,
    init_from=config.init_from,
    distributed=bool(config.distributed),
    task=_weighted(task_for(config.task, config.data.dataset), config.train.class_weights),
    data=DataSpec(**_section(config, "data")),
    model=ModelSpec(**_section(config, "model")),
    quant=QuantPlan(
      recipe=recipe_from(quant),
      period=int(quant["period"]),
      frame_precision=frame_precision_from(quant),
      calibration=CalibrationMethods(
        weight=cal.weight,
        key_act=cal.key_act,
        residual_act=cal.residual_act,
        residual_weight=cal.residual_weight,
      ),
      calibration_batches=int(cal.num_batches),
    ),
    optim=OptimSpec(**_section(config, "optim")),
    train=TrainSpec(
      **{**_section(config, "train"), "class_weights": tuple(config.train.class_weights)}
    ),
    eval=EvalSpec(
      batch_size=eval_.batch_size,
      num_batches=eval_.num_batches,
      split=eval_.split,
      sweep_name=eval_.sweep,
      sweep=tuple(_setting(quant, s) for s in eval_.sweeps[eval_.sweep]),
      qat_runs=tuple(d for d in eval_.qat_runs.split(",") if d),
      plots=bool(eval_.plots),
    ),
    config_json=config.to_json_best_effort(indent=2),
  )


def check_device_count(experiment: Experiment, num_devices: int) -> None:
  """ConfigError unless the batch sizes divide over ``num_devices`` (after
  ``jax.distributed.initialize``, when the global count is known)."""
  found = [
    f"{key}: {v} is not divisible by the device count {num_devices} (allowed: a multiple "
    f"of {num_devices})"
    for key, v in (
      ("data.batch_size", experiment.data.batch_size),
      ("eval.batch_size", experiment.eval.batch_size),
    )
    if v % num_devices
  ]
  if found:
    raise ConfigError(found)
