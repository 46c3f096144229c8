"""The experiment schema: every config key, declared once in :data:`KEYS`.

Each :class:`~resq_jax.experiment.checks.Key` gives a key's default, its rule (type and range,
and its relation to other keys: ``resq_jax.experiment.rules``), its help text and the field of
the typed :class:`~resq_jax.experiment.spec.Experiment` it fills. Everything else derives from
the table: :func:`default_config` (the key set every config file of ``configs/`` starts from;
``configs/default.py`` adds the repository's named sweeps, ``configs/sweeps.py``), :data:`RULES`
(what ``parse.validate`` checks), :data:`SECTIONS`, :func:`help_text` (``python -m
resq_jax.experiment.schema`` prints it) and ``parse.parse``'s typed specs. It lives inside the
package so that an installed (non-editable) resq_jax validates configs without the repository.

Run: python train.py --config configs/<name>.py --workdir DIR [--config.optim.lr=1e-3 ...]
"""

from __future__ import annotations

import ml_collections

from resq_jax.data.loader import DATASETS
from resq_jax.data.spec import MAX_SIZE, MIN_SIZE, REGIMES
from resq_jax.experiment import rules as r
from resq_jax.experiment.checks import (
  CALIBRATION_METHODS,
  POLICIES,
  QUANT_MODES,
  STAGES,
  Key,
  Rule,
  bits,
  boolean,
  choice,
  frame_bits_ok,
  integer,
  is_finite,
  is_seq,
  policy_bits_ok,
  qat_runs_ok,
  real,
  thresholds_ok,
)
from resq_jax.nn.layers import CONV_IMPLS
from resq_jax.nn.models import SEGNET_PRESETS
from resq_jax.quant.resq import REF_MODES
from resq_jax.quant.spec import MAX_BITS
from resq_jax.tasks import TASK_NAMES

# The sweep every config has: the float model alone (and any eval.qat_runs). Named sweeps of
# quantization settings are experiment data: configs/sweeps.py.
FP_SWEEP = ({"mode": "float"},)
_METHOD = choice(CALIBRATION_METHODS)
_METHOD_HELP = "calibration method (minmax | percentile | mse) of the "
_POSITIVE = real(0, strict=True)
_UNITS = "in units of the layer's residual step"

# One entry per key: Key(name, default, rule, help, field=..., aliases=...). field=None: read by
# a builder of parse.parse (the recipe, the task, the sweep), not copied into a field.
# fmt: off
KEYS: tuple[Key, ...] = (
  Key("seed", 0,
      integer(0, 2**32 - 2, " (grain shuffles with 32-bit seeds; calibration uses seed + 1)"),
      "seed of initialisation and shuffling; calibration uses seed + 1"),
  Key("stage", "fp", choice(STAGES, relation=r.one_recipe_stage),
      "fp: float training; ptq: calibrate quantizer ranges on a few clips (no training); qat: "
      "quantization-aware fine-tuning over clips (scan over frames) from init_from"),
  Key("init_from", "",
      Rule(lambda v: isinstance(v, str), "the workdir of an FP run ('' for stage fp)",
           r.init_from_needed),
      "workdir (or checkpoint dir) of the FP run that ptq / qat and evaluation sweeps start "
      "from; only the entry that restores it requires it, parsing does not"),
  Key("distributed", False, boolean(), "jax.distributed.initialize() for multi-host runs"),
  Key("task", "segmentation", choice(TASK_NAMES),
      "segmentation | pose (resq_jax.tasks); the dataset decides the class count", field=None),
  # --- data
  Key("data.dataset", "synth_res",
      choice(DATASETS, " (a real one built by python -m resq_jax.data.build)", r.dataset_fits),
      "synth_res (built on first use) or a real dataset built beforehand, once, by `python -m "
      "resq_jax.data.build` (README, 'Real datasets') at data.height x data.width with "
      "data.num_frames-frame clips; the SynthRes keys (regime, num_*) are then unused"),
  Key("data.data_dir", "runs/data",
      Rule(lambda v: isinstance(v, str) and v.strip() == v and v != "", "a non-empty path"),
      "where SynthRes is built (offline, on first use) or a real dataset's build is read"),
  Key("data.regime", "slow_pan", choice(REGIMES), "SynthRes camera motion / lighting regime"),
  Key("data.height", 64, integer(MIN_SIZE, MAX_SIZE), "frame height in pixels"),
  Key("data.width", 64, integer(MIN_SIZE, MAX_SIZE), "frame width in pixels"),
  Key("data.num_frames", 8, integer(2, note=" (a keyframe and at least one residual frame)"),
      "frames per clip", aliases=("frames",)),
  Key("data.num_train", 480, integer(1, relation=r.train_clips_fit), "SynthRes training clips"),
  Key("data.num_validation", 48, integer(1, relation=r.validation_clips_fit),
      "SynthRes validation clips: a multiple of eval.batch_size (no clip left unevaluated)"),
  Key("data.num_test", 48, integer(0, note=" (read when eval.split='test')"),
      "SynthRes test clips (may be 0 unless eval.split='test')"),
  Key("data.batch_size", 8, integer(1, relation=r.divisible_by_devices),
      "clips per training step, over all devices (divisible by the device count)"),
  Key("data.worker_count", 0, integer(0, note=" (0: read in the main process)"),
      "grain worker processes (0: read in the main process)", aliases=("workers", "num_workers")),
  # --- model
  Key("model.preset", "demo", choice(SEGNET_PRESETS),
      "SegNet preset (resq_jax.nn.models.segnet_preset); a dense head at input resolution"),
  Key("model.conv_impl", "auto", choice(CONV_IMPLS),
      "every QConv's implementation: auto (the im2col VJP inside rolled loops on CPU, else "
      "XLA) | xla | im2col (resq_jax.nn.layers.resolve_conv_impl)"),
  # --- quant: the recipe of every conv (resq_jax.quant.recipe.LayerRecipe)
  Key("quant.mode", "float", choice(QUANT_MODES),
      "float | fq | resq | dynamic | frame_precision (VideoIQ-style: each frame runs at one of "
      "the FQ precisions quant.frame_bits, picked by quant.frame_thresholds; sweeps only)",
      field=None),
  Key("quant.key_bits", (8, 8), bits(2, 1),
      "(weight, activation) bits of keyframes (and of FQ)", field=None),
  Key("quant.residual_bits", (4, 4), bits(2, 2, relation=r.residual_vs_key),
      "(weight, activation) bits of residual frames", field=None),
  Key("quant.period", 4, integer(1, relation=r.period_vs_clip),
      "K: a keyframe every K frames (float and fq have no keyframes: K = 1)", field=None,
      aliases=("k", "keyframe_period")),
  Key("quant.cut_threshold", 0.0, real(0.0, strict=False),
      "adaptive keyframes (KeyframeTrigger, docs/drift.md): a keyframe when mean |x_t - x_key| "
      "of the input exceeds this (a scene cut); 0: off. With it or quant.drift_threshold on, "
      "quant.period is the longest distance between keyframes", field=None),
  Key("quant.drift_threshold", 0.0, real(0.0, strict=False),
      "adaptive keyframes: a keyframe when the sum of mean |x_t - x_{t-1}| since the keyframe "
      "exceeds this; 0: off", field=None),
  Key("quant.ref_mode", "closed", choice(REF_MODES),
      "reference of the residuals: closed loop | the keyframe | the previous frame", field=None),
  Key("quant.policy", "fixed_step", choice(POLICIES),
      "dynamic ResQ policy. gate: skip a location whose max_c |r| < gate_threshold, else "
      "policy_bits[-1] bits at policy_step; hold: skip every residual (docs/baselines.md maps "
      "the peer baselines onto these keys)", field=None),
  Key("quant.policy_bits", (0, 2, 4, 8),
      Rule(policy_bits_ok, f"non-empty strictly ascending ints, each 0 (skip) or in [2, "
           f"{MAX_BITS}]; (0, b) for the gate policy", r.gate_bits),
      "candidate residual bits of the dynamic policy (0 = skip)", field=None),
  Key("quant.policy_step", 1.0, _POSITIVE, f"fixed_step, gate: the residual step, {_UNITS}",
      field=None),
  Key("quant.thresholds", (0.5, 1.5, 7.5, 127.5),
      Rule(thresholds_ok, "positive, strictly ascending finite numbers (one per "
           "quant.policy_bits candidate for the ladder policy)", r.ladder_thresholds_count),
      f"ladder: one threshold per candidate, {_UNITS}", field=None),
  Key("quant.gate_threshold", 1.0, _POSITIVE, f"gate: skip threshold, {_UNITS}", field=None),
  Key("quant.frame_bits", ((4, 4), (6, 6), (8, 8)),
      Rule(frame_bits_ok, f"at least 2 (weight, activation) int pairs, weight in [2, "
           f"{MAX_BITS}], activation in [1, {MAX_BITS}], ascending (neither bit-width "
           "decreases, no pair repeated)"),
      "frame_precision: candidate (weight, activation) bits, ascending", field=None),
  Key("quant.frame_thresholds", (0.05, 0.15),
      Rule(thresholds_ok, "positive, strictly ascending finite numbers (one fewer than "
           "quant.frame_bits for mode frame_precision)", r.frame_thresholds_count),
      "frame_precision: thresholds on a frame's mean |x_t - x_{t-1}| (normalised input "
      "units) that pick among the candidates", field=None),
  Key("quant.stop_ref_gradient", False, boolean(), "truncate BPTT at the input reference",
      field=None),
  # --- calibration
  Key("calibration.num_batches", 2, integer(1, relation=r.calibration_batches_fit),
      "training batches that set the quantizer ranges (ptq, and qat's start)",
      field="quant.calibration_batches"),
  Key("calibration.weight", "minmax", _METHOD, _METHOD_HELP + "key weights", field=None),
  Key("calibration.key_act", "mse", _METHOD, _METHOD_HELP + "key activations", field=None),
  Key("calibration.residual_act", "mse", _METHOD, _METHOD_HELP + "residual activations",
      field=None),
  Key("calibration.residual_weight", "mse", _METHOD, _METHOD_HELP + "residual weights",
      field=None),
  # --- optim
  Key("optim.lr", 2e-3, _POSITIVE, "peak learning rate of weights (AdamW, warmup + cosine "
      "decay)", aliases=("learning_rate",)),
  Key("optim.quant_lr", 1e-2, _POSITIVE,
      "learning rate of quantizer parameters (Adam, no decay): relative for scales (a step "
      "moves a scale by about quant_lr times its value), in grid steps for zero points",
      aliases=("quant_learning_rate", "lr_quant")),
  Key("optim.weight_decay", 1e-4, real(0, strict=False), "AdamW weight decay", aliases=("wd",)),
  Key("optim.warmup_steps", 20, integer(0, relation=r.warmup_below_steps),
      "linear warmup steps, in [0, train.num_steps)", aliases=("warmup",)),
  Key("optim.grad_clip", 1.0, _POSITIVE, "global gradient-norm clip", aliases=("clip",)),
  # --- train
  Key("train.num_steps", 300,
      # PTQ trains no step, but train.make_optimizer builds the warmup + cosine schedule for
      # every stage, and optax needs 2 steps for it.
      integer(2, note=" (every stage: PTQ ignores it, the LR schedule needs 2)"),
      "training steps (>= 2 at every stage: PTQ trains none)", aliases=("steps",)),
  Key("train.log_every", 10, integer(1), "steps between log lines"),
  Key("train.checkpoint_every", 100, integer(1), "steps between checkpoints"),
  Key("train.keep_checkpoints", 2, integer(1), "checkpoints kept"),
  Key("train.unroll", False, boolean(),
      "QAT's residual scan: rolled (False) or unrolled (True). Rolled compiles in a time "
      "independent of K, and model.conv_impl='auto' then uses the im2col conv VJP on CPU, "
      "which avoids XLA:CPU's scan trap: 0.24-0.94x the unrolled step for K = 32..4 "
      "(BENCHMARKS.md)"),
  Key("train.remat", False, boolean(),
      "rematerialise the residual scan in the backward pass (less memory)"),
  Key("train.distill_weight", 0.0,
      real(0, strict=False, note=" (0: no distillation; read by QAT only)"),
      "QAT only: weight of a distillation loss from the float teacher's outputs (0: none)"),
  Key("train.distill_temperature", 1.0, _POSITIVE,
      "QAT only: softmax temperature of teacher and student"),
  Key("train.class_weights", (),
      Rule(lambda v: is_seq(v) and all(is_finite(w) and w > 0 for w in v),
           "() or one positive finite number per class of the segmentation task",
           r.class_weights_fit),
      "segmentation only: one loss weight per class (() : every pixel counts the same), e.g. "
      "heavier weights for classes that cover few pixels, since mIoU weighs every class "
      "equally"),
  # --- eval
  Key("eval.batch_size", 8, integer(1, relation=r.divisible_by_devices),
      "clips per evaluation batch, over all devices"),
  Key("eval.split", "validation",
      Rule(lambda v: v in ("validation", "test"), "validation | test", r.eval_split_fits),
      "the split every evaluation reports"),
  Key("eval.num_batches", 0, integer(0, note=" (0: the whole split)",
                                     relation=r.eval_batches_fit),
      "evaluation batches (0: the whole split)"),
  Key("eval.sweeps", {"fp": FP_SWEEP},
      Rule(lambda v: r.sweeps_ok(v, RULES),
           "name -> non-empty tuple of settings, each a dict of quant keys (and an optional "
           "display 'name' and 'family', the family an identifier [a-z][a-z0-9_]{0,23}); see "
           "configs/sweeps.py", r.sweep_settings_pass),
      "named sweeps: name -> tuple of settings, each a dict of quant keys overriding this "
      "config's quant section (plus an optional display 'name' and 'family', e.g. 'hold', "
      "'skipconv', 'deltacnn', 'videoiq'); {'mode': 'float'} evaluates the FP run itself",
      field=None),
  Key("eval.sweep", "fp",
      Rule(lambda v: isinstance(v, str) and v != "", "a name of eval.sweeps", r.sweep_known),
      "the key of eval.sweeps that eval.py evaluates", field="eval.sweep_name"),
  Key("eval.qat_runs", "",
      Rule(qat_runs_ok, "'' or comma-separated workdirs, no spaces around them"),
      "comma-separated workdirs of QAT runs to evaluate too", field=None),
  Key("eval.plots", True, boolean(), "draw the report's figures"),
)
# fmt: on
RULES: dict[str, Rule] = {k.name: k.rule for k in KEYS}
SECTIONS = tuple(dict.fromkeys(k.name.partition(".")[0] for k in KEYS if "." in k.name))


def default_config() -> ml_collections.ConfigDict:
  """A fresh ConfigDict of every key at its default (sections in the order of :data:`KEYS`)."""
  c = ml_collections.ConfigDict()
  for key in KEYS:
    *sections, leaf = key.name.split(".")
    target = c
    for section in sections:
      if section not in target:
        target[section] = ml_collections.ConfigDict()
      target = target[section]
    default = key.default
    target[leaf] = ml_collections.ConfigDict(default) if isinstance(default, dict) else default
  return c


def help_text() -> str:
  """One paragraph per key: ``name = default``, its help and what is allowed."""
  return "\n\n".join(
    f"{k.name} = {k.default!r}\n  {k.help}\n  allowed: {k.rule.describe()}" for k in KEYS
  )


if __name__ == "__main__":
  print(help_text())
