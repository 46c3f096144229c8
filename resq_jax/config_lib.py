"""The config boundary: validate an experiment ConfigDict and turn it into typed arguments.

Layers and jitted steps never read a ConfigDict (DESIGN.md section 1); ``train_lib`` and
``eval_lib`` call :func:`validate` once, before anything compiles, and then use the typed values
built here (:func:`recipe_from`, :func:`calibration_methods_from`, ...).
"""
from __future__ import annotations

import importlib.util
import pathlib

import jax
import ml_collections

from resq_jax.data.spec import REGIMES
from resq_jax.nn.calibrate import CalibrationMethods
from resq_jax.nn.models import SEGNET_PRESETS as PRESETS
from resq_jax.quant.dynamic import FixedStepPolicy, LadderPolicy
from resq_jax.quant.recipe import (MODES, REF_MODES, LayerRecipe, dynamic_recipe, float_recipe,
                                   fq_recipe, resq_recipe)
from resq_jax.quant.spec import MAX_BITS, MIN_BITS

STAGES = ("fp", "ptq", "qat")
POLICIES = ("fixed_step", "ladder")
CALIBRATION_METHODS = ("minmax", "percentile", "mse")
DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "default.py"


def default_config() -> ml_collections.ConfigDict:
  """``configs/default.py``'s ``get_config()`` (the reference key set)."""
  spec = importlib.util.spec_from_file_location("resq_default_config", DEFAULT_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _unknown_keys(config, reference, prefix="") -> list[str]:
  out = []
  for key in config.keys():
    name = f"{prefix}{key}"
    if key not in reference:
      out.append(name)
    elif isinstance(config[key], ml_collections.ConfigDict):
      out += _unknown_keys(config[key], reference[key], name + ".")
  return out


def _bits_errors(name, value, low=MIN_BITS) -> list[str]:
  if not isinstance(value, (tuple, list)) or len(value) != 2:
    return [f"{name} must be a (weight_bits, activation_bits) pair, got {value!r}"]
  bad = [b for b in value if isinstance(b, bool) or not isinstance(b, int)
         or not low <= b <= MAX_BITS]
  return [f"{name} bits must be ints in [{low}, {MAX_BITS}], got {tuple(value)}"] if bad else []


def _quant_errors(q) -> list[str]:
  errors = []
  if q.mode not in MODES:
    errors.append(f"quant.mode must be one of {MODES}, got {q.mode!r}")
  errors += _bits_errors("quant.key_bits", q.key_bits)
  errors += _bits_errors("quant.residual_bits", q.residual_bits, low=2)
  if isinstance(q.period, bool) or not isinstance(q.period, int) or q.period < 1:
    errors.append(f"quant.period (K) must be an int >= 1, got {q.period!r}")
  if q.ref_mode not in REF_MODES:
    errors.append(f"quant.ref_mode must be one of {REF_MODES}, got {q.ref_mode!r}")
  if q.policy not in POLICIES:
    errors.append(f"quant.policy must be one of {POLICIES}, got {q.policy!r}")
  if q.mode == "dynamic":
    try:
      policy_from(q)
    except ValueError as e:
      errors.append(f"quant.policy_bits / thresholds / policy_step: {e}")
  return errors


def validate(config: ml_collections.ConfigDict, *, num_devices: int | None = None) -> None:
  """Raise one ValueError listing every problem of ``config``; return None if it is valid."""
  errors = [f"unknown config key {k!r}" for k in _unknown_keys(config, default_config())]
  if config.get("stage") not in STAGES:
    errors.append(f"stage must be one of {STAGES}, got {config.get('stage')!r}")
  if config.get("stage") in ("ptq", "qat") and not config.get("init_from"):
    errors.append(f"stage {config.stage!r} needs init_from (the workdir of an FP run)")
  data = config.get("data", {})
  if data.get("regime") not in REGIMES:
    errors.append(f"data.regime must be one of {REGIMES}, got {data.get('regime')!r}")
  for key in ("height", "width", "num_frames", "batch_size", "num_train"):
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      errors.append(f"data.{key} must be a positive int, got {value!r}")
  num_devices = jax.device_count() if num_devices is None else num_devices
  for name in ("data.batch_size", "eval.batch_size"):
    section, key = name.split(".")
    value = config.get(section, {}).get(key)
    if isinstance(value, int) and value % num_devices:
      errors.append(f"{name}={value} is not divisible by the device count {num_devices}")
  if config.get("model", {}).get("preset") not in PRESETS:
    errors.append(f"model.preset must be one of {PRESETS}, got "
                  f"{config.get('model', {}).get('preset')!r}")
  if "quant" in config:
    errors += _quant_errors(config.quant)
  for key, value in config.get("calibration", {}).items():
    if key != "num_batches" and value not in CALIBRATION_METHODS:
      errors.append(f"calibration.{key} must be one of {CALIBRATION_METHODS}, got {value!r}")
  if config.get("train", {}).get("num_steps", 1) < 0:
    errors.append(f"train.num_steps must be >= 0, got {config.train.num_steps}")
  if errors:
    raise ValueError("invalid config:\n  - " + "\n  - ".join(errors))


def policy_from(q) -> FixedStepPolicy | LadderPolicy:
  """The dynamic ResQ policy of a ``quant`` section."""
  if q.policy == "ladder":
    return LadderPolicy(bits=tuple(q.policy_bits), thresholds=tuple(q.thresholds))
  return FixedStepPolicy(bits=tuple(q.policy_bits), step=float(q.policy_step))


def recipe_from(q) -> LayerRecipe:
  """The LayerRecipe of a ``quant`` section."""
  key_bits, res_bits = tuple(q.key_bits), tuple(q.residual_bits)
  if q.mode == "float":
    return float_recipe()
  if q.mode == "fq":
    return fq_recipe(*key_bits)
  if q.mode == "resq":
    return resq_recipe(key_bits, res_bits, q.ref_mode, q.stop_ref_gradient)
  return dynamic_recipe(policy_from(q), key_bits, res_bits, q.ref_mode, q.stop_ref_gradient)


def calibration_methods_from(c) -> CalibrationMethods:
  return CalibrationMethods(weight=c.weight, key_act=c.key_act, residual_act=c.residual_act,
                            residual_weight=c.residual_weight)


def data_kwargs(data) -> dict:
  """Keyword arguments of ``build_synthres`` / ``make_loader`` that identify the dataset."""
  return dict(regime=data.regime, height=data.height, width=data.width,
              num_frames=data.num_frames, num_train=data.num_train,
              num_validation=data.num_validation, num_test=data.num_test)
