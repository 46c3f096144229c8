"""Relations between config keys, and the task a config sets up.

A relation is the ``relation`` of one key's :class:`~resq_jax.experiment.checks.Rule` in the
declaration table (:data:`resq_jax.experiment.schema.KEYS`): called with that key's valid value
and a :class:`~resq_jax.experiment.checks.Context` of the others, it returns a message ending in
``(allowed: ...)`` or None. A relation is reported on one key only, and only when the keys it
reads are valid themselves (the context hides invalid ones). :func:`sweeps_ok` and
:func:`sweep_settings_pass` check ``eval.sweeps`` against the quant rules.

Also :func:`task_for`, the task a ``(task, data.dataset)`` pair sets up (the dataset decides
the segmentation task's class count), which ``train.class_weights`` is checked against and
``parse.parse`` builds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import ml_collections

from resq_jax.data.loader import REAL_DATASETS
from resq_jax.experiment.checks import (
  FRAME_PRECISION,
  SETTING_FAMILY_KEY,
  SETTING_KEYS,
  Context,
  family_ok,
  is_seq,
  pairs,
)
from resq_jax.quant.spec import MAX_BITS
from resq_jax.tasks import Task, get_task


def task_for(name: str, dataset: str) -> Task:
  """The task ``name`` set up for ``dataset``: the segmentation task gets the dataset's class
  count (Cityscapes: 19 trainIds); SynthRes keeps the task's defaults."""
  task = get_task(name)
  info = REAL_DATASETS.get(dataset)
  if info is not None and info.num_classes is not None:
    task = dataclasses.replace(task, num_classes=info.num_classes)
  return task


def class_weights_fit(v, ctx: Context):
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


def init_from_needed(v, ctx: Context):
  """Empty ``init_from`` where the caller restores the FP run (``needs_init_from``): an
  evaluation sweep, or a PTQ / QAT stage about to train. Parsing alone never needs it."""
  stage = ctx.get("stage")
  if v == "" and ctx.needs_init_from:
    who = f"stage {stage!r}" if stage in ("ptq", "qat") else "the evaluation sweep"
    return f"empty, but {who} needs init_from (allowed: the workdir of an FP run)"
  return None


def divisible_by_devices(v, ctx: Context):
  if ctx.num_devices is not None and v % ctx.num_devices:
    return (
      f"{v} is not divisible by the device count {ctx.num_devices} (allowed: a multiple "
      f"of {ctx.num_devices})"
    )
  return None


def _real_dataset(ctx: Context) -> bool:
  """A real dataset: the SynthRes clip counts (data.num_*) are unused, so unchecked."""
  return ctx.get("data.dataset") in REAL_DATASETS


def dataset_fits(v, ctx: Context):
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


def train_clips_fit(v, ctx: Context):
  batch = ctx.get("data.batch_size")
  if _real_dataset(ctx):
    return None
  if batch is not None and v < batch:  # calibration reads one epoch without partial batches
    return (
      f"{v} clips are fewer than one batch of data.batch_size={batch}: calibration would "
      f"get no batch (allowed: int >= {batch})"
    )
  return None


def calibration_batches_fit(v, ctx: Context):
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


def validation_clips_fit(v, ctx: Context):
  batch = ctx.get("eval.batch_size")
  if batch is None or _real_dataset(ctx):
    return None
  allowed = f"(allowed: a positive multiple of eval.batch_size={batch})"
  if v < batch:
    return f"{v} clips are fewer than one eval batch: evaluation would see nothing {allowed}"
  if v % batch:
    return f"{v} clips: the last {v % batch} would never be evaluated {allowed}"
  return None


def eval_batches_fit(v, ctx: Context):
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


def eval_split_fits(v, ctx: Context):
  if v != "test" or _real_dataset(ctx):
    return None
  clips = ctx.get("data.num_test")
  problem = None if clips is None else validation_clips_fit(clips, ctx)
  return None if problem is None else f"data.num_test: {problem}"


def warmup_below_steps(v, ctx: Context):
  steps = ctx.get("train.num_steps")
  if steps is not None and v >= steps:
    return f"{v} is not below train.num_steps={steps} (allowed: int in [0, {steps - 1}])"
  return None


def residual_vs_key(v, ctx: Context):
  # A residual frame dearer than a keyframe (w * a bits per MAC) would be better run as one;
  # finer residual weights than key weights are allowed (e.g. W6A6 keys, W8A4 residuals).
  mode, key = ctx.get("quant.mode"), ctx.get("quant.key_bits")
  if mode in ("resq", "dynamic") and key is not None and v[0] * v[1] > key[0] * key[1]:
    return (
      f"{tuple(v)} costs {v[0] * v[1]} bits per MAC, more than quant.key_bits={tuple(key)} "
      f"({key[0] * key[1]}) in mode {mode!r} (allowed: residual w * a <= key w * a)"
    )
  return None


def gate_bits(v, ctx: Context):
  if ctx.get("quant.policy") == "gate" and (len(v) != 2 or v[0] != 0):
    return (
      f"{tuple(v)} under the gate policy (allowed: (0, b) with b in [2, {MAX_BITS}]: skip or "
      f"b bits)"
    )
  return None


def frame_thresholds_count(v, ctx: Context):
  bits = ctx.get("quant.frame_bits")
  if ctx.get("quant.mode") == FRAME_PRECISION and bits is not None and len(v) != len(bits) - 1:
    return (
      f"{len(v)} thresholds for {len(bits)} quant.frame_bits {pairs(bits)} (allowed: "
      f"{len(bits) - 1}, one fewer than the candidates, under mode {FRAME_PRECISION!r})"
    )
  return None


def one_recipe_stage(v, ctx: Context):
  if v in ("ptq", "qat") and ctx.get("quant.mode") == FRAME_PRECISION:
    return (
      f"stage {v!r} calibrates or trains one recipe, but quant.mode={FRAME_PRECISION!r} picks "
      f"one of several per frame (allowed: stage 'fp' with {FRAME_PRECISION} settings in "
      f"eval.sweeps, or another quant.mode)"
    )
  return None


def ladder_thresholds_count(v, ctx: Context):
  bits = ctx.get("quant.policy_bits")
  if ctx.get("quant.policy") == "ladder" and bits is not None and len(v) != len(bits):
    return (
      f"{len(v)} thresholds for {len(bits)} quant.policy_bits {tuple(bits)} (allowed: one "
      f"per candidate under the ladder policy)"
    )
  return None


def period_vs_clip(v, ctx: Context):
  # A period longer than the clip runs exactly as K = T (one keyframe per clip): refuse it
  # rather than report a K that never happened.
  mode, frames = ctx.get("quant.mode"), ctx.get("data.num_frames")
  if mode in ("resq", "dynamic") and frames is not None and v > frames:
    return (
      f"{v} exceeds data.num_frames={frames} in mode {mode!r} (allowed: int in [1, {frames}]: "
      f"a longer period runs as K = {frames}, one keyframe per clip)"
    )
  return None


def sweep_known(v, ctx: Context):
  sweeps = ctx.get("eval.sweeps")
  if sweeps is not None and v not in sweeps:
    return f"got {v!r} (allowed: {' | '.join(sweeps.keys())}, the names of eval.sweeps)"
  return None


def sweeps_ok(v, rules: Mapping) -> bool:
  """A mapping of names to non-empty sequences of settings, each a mapping of quant keys (of
  ``rules``)."""
  if not isinstance(v, (Mapping, ml_collections.ConfigDict)) or len(v) == 0:
    return False
  for name in v:
    settings = v[name]
    if not (isinstance(name, str) and name and is_seq(settings) and len(settings) > 0):
      return False
    for setting in settings:
      if not isinstance(setting, (Mapping, ml_collections.ConfigDict)):
        return False
      if any(k not in SETTING_KEYS and f"quant.{k}" not in rules for k in setting):
        return False
      if SETTING_FAMILY_KEY in setting and not family_ok(setting[SETTING_FAMILY_KEY]):
        return False
  return True


def sweep_settings_pass(v, ctx: Context):
  """Each setting of the selected sweep, merged onto the config's quant section, must pass the
  quant rules (so a bad sweep fails here, not after the float model has been loaded)."""
  name = ctx.get("eval.sweep")
  if name is None or name not in v:
    return None
  found = []
  rules = ctx.rules
  quant_keys = [k for k in rules if k.startswith("quant.")]
  for i, setting in enumerate(v[name]):
    overridden = {f"quant.{k}" for k in setting.keys() if k not in SETTING_KEYS}
    values = dict(ctx.values)
    values.update({f"quant.{k}": setting[k] for k in setting.keys() if k not in SETTING_KEYS})
    valid = set(ctx.valid) - overridden
    for key in sorted(overridden):
      if rules[key].accepts(values[key]):
        valid.add(key)
      else:
        found.append(
          f"setting {i} of {name!r}: {key}: got {values[key]!r} (allowed: {rules[key].describe()})"
        )
    sub = dataclasses.replace(ctx, values=values, valid=frozenset(valid))
    for key in quant_keys:  # relations, unless the config itself already fails them
      if key in valid and rules[key].relation is not None:
        message = rules[key].relation(values[key], sub)
        if message and (
          key in overridden
          or key not in ctx.valid
          or message != rules[key].relation(ctx.values[key], ctx)
        ):
          found.append(f"setting {i} of {name!r}: {key}: {message}")
  return "; ".join(found) or None
