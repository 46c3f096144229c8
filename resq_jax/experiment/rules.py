"""The rule of every config key: :data:`RULES`.

Every key of the schema (``resq_jax.experiment.schema.default_config``, re-exported by
``configs/default.py``) has a :class:`~resq_jax.experiment.checks.Rule` in :data:`RULES` (its type
and range, and its relations to other keys, ``resq_jax.experiment.rules``);
``tests/test_config_validation.py`` keeps the two key sets equal. :data:`SECTIONS` are the
top-level sections of the dotted keys. The two checks that read :data:`RULES` themselves live
here: ``_sweeps_ok`` (each setting of ``eval.sweeps`` names quant keys only) and the relation
``_sweep_settings`` (each setting of the selected sweep passes the quant rules). ``_ALIASES``
maps names users reach for to the keys' last parts (for ``config_lib.suggest``).
``config_lib`` applies the rules and re-exports :data:`RULES`.

Relations between keys: each is the ``relation`` of one key's
:class:`~resq_jax.experiment.checks.Rule` in :data:`RULES`, called with that key's
 valid value and a :class:`~resq_jax.experiment.checks._Context` of the others, and returns a
message ending in ``(allowed: ...)`` or None. A relation is reported on one key only, and only
when the keys it reads are valid themselves (the context hides invalid ones).

Also :func:`task_for`, the task a ``(task, data.dataset)`` pair sets up (the dataset decides
the segmentation task's class count), which ``train.class_weights`` is checked against and
``config_lib.parse`` builds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import ml_collections

from resq_jax.data.loader import DATASETS, REAL_DATASETS
from resq_jax.data.spec import MAX_SIZE, MIN_SIZE, REGIMES
from resq_jax.experiment.checks import (
  CALIBRATION_METHODS,
  FRAME_PRECISION,
  POLICIES,
  QUANT_MODES,
  SETTING_FAMILY_KEY,
  SETTING_KEYS,
  STAGES,
  Rule,
  _bits,
  _bool,
  _choice,
  _Context,
  _family_ok,
  _frame_bits_ok,
  _int,
  _is_finite,
  _is_seq,
  _pairs,
  _policy_bits_ok,
  _qat_runs_ok,
  _real,
  _thresholds_ok,
)
from resq_jax.nn.models import SEGNET_PRESETS as PRESETS
from resq_jax.quant.resq import REF_MODES
from resq_jax.quant.spec import MAX_BITS
from resq_jax.tasks import TASK_NAMES, Task, get_task


def task_for(name: str, dataset: str) -> Task:
  """The task ``name`` set up for ``dataset``: the segmentation task gets the dataset's class
  count (Cityscapes: 19 trainIds); SynthRes keeps the task's defaults."""
  task = get_task(name)
  info = REAL_DATASETS.get(dataset)
  if info is not None and info.num_classes is not None:
    task = dataclasses.replace(task, num_classes=info.num_classes)
  return task


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
