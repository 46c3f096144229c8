"""The relations between config keys: each is the ``relation`` of one key's
:class:`~resq_jax.config_checks.Rule` in :data:`resq_jax.config_rules.RULES`, called with that
key's valid value and a :class:`~resq_jax.config_checks._Context` of the others, and returns a
message ending in ``(allowed: ...)`` or None. A relation is reported on one key only, and only
when the keys it reads are valid themselves (the context hides invalid ones).

Also :func:`task_for`, the task a ``(task, data.dataset)`` pair sets up (the dataset decides
the segmentation task's class count), which ``train.class_weights`` is checked against and
``config_lib.parse`` builds.
"""

from __future__ import annotations

import dataclasses

from resq_jax.config_checks import FRAME_PRECISION, _Context, _pairs
from resq_jax.data.loader import REAL_DATASETS
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
