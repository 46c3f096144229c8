"""The rule of every config key: :data:`RULES`.

Every key of the schema (``resq_jax.config_defaults.default_config``, re-exported by
``configs/default.py``) has a :class:`~resq_jax.config_checks.Rule` in :data:`RULES` (its type
and range, and its relations to other keys, ``resq_jax.config_relations``);
``tests/test_config_validation.py`` keeps the two key sets equal. :data:`SECTIONS` are the
top-level sections of the dotted keys. The two checks that read :data:`RULES` themselves live
here: ``_sweeps_ok`` (each setting of ``eval.sweeps`` names quant keys only) and the relation
``_sweep_settings`` (each setting of the selected sweep passes the quant rules). ``_ALIASES``
maps names users reach for to the keys' last parts (for ``config_lib.suggest``).
``config_lib`` applies the rules and re-exports :data:`RULES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import ml_collections

from resq_jax.config_checks import (
  CALIBRATION_METHODS,
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
  _policy_bits_ok,
  _qat_runs_ok,
  _real,
  _thresholds_ok,
)
from resq_jax.config_relations import (
  _calibration_batches,
  _class_weights,
  _dataset_fits,
  _divisible_by_devices,
  _eval_batches,
  _eval_split,
  _frame_thresholds,
  _gate_bits,
  _ladder_thresholds,
  _needs_init_from,
  _one_recipe_stage,
  _period_vs_clip,
  _residual_vs_key,
  _sweep_known,
  _train_batches,
  _validation_clips,
  _warmup,
)
from resq_jax.data.loader import DATASETS
from resq_jax.data.spec import MAX_SIZE, MIN_SIZE, REGIMES
from resq_jax.nn.models import SEGNET_PRESETS as PRESETS
from resq_jax.quant.recipe import REF_MODES
from resq_jax.quant.spec import MAX_BITS
from resq_jax.tasks import TASK_NAMES


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
