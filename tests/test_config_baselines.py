"""Peer baselines as config data (docs/baselines.md): sweep settings parse into the documented
recipes, display families and frame-precision plans; the distillation keys reach TrainSpec.

Oracles: the recipe constructors of resq_jax.quant.recipe (the documented mapping) and
hand-written candidate lists.
"""

import importlib.util
import json
import pathlib

import ml_collections
import pytest

from resq_jax.experiment import parse
from resq_jax.experiment.spec import FramePrecisionPlan, Setting
from resq_jax.nn.frame_precision import FramePrecisionPolicy
from resq_jax.quant.dynamic import GatePolicy
from resq_jax.quant.recipe import (
  delta_cnn_recipe,
  dynamic_recipe,
  fq_recipe,
  hold_recipe,
  resq_recipe,
  skip_conv_recipe,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]

BASELINES = (
  {
    "mode": "dynamic",
    "ref_mode": "closed",
    "policy": "hold",
    "residual_bits": (8, 8),  # unused: every residual is skipped
    "family": "hold",
  },
  {
    "mode": "dynamic",
    "ref_mode": "prev",
    "policy": "gate",
    "policy_bits": (0, 8),
    "residual_bits": (8, 8),
    "gate_threshold": 0.5,
    "policy_step": 1.0,
    "family": "skipconv",
  },
  {
    "mode": "dynamic",
    "ref_mode": "closed",
    "policy": "gate",
    "policy_bits": (0, 16),
    "residual_bits": (8, 8),
    "gate_threshold": 2.0,
    "policy_step": 1 / 258,
    "family": "deltacnn",
    "name": "DeltaCNN thr=2",
  },
  {"mode": "frame_precision", "family": "videoiq"},
  {"mode": "resq", "period": 2},
)


def tiny_config(**overrides):
  spec = importlib.util.spec_from_file_location("cfg_tiny", ROOT / "configs" / "tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.eval.sweeps = ml_collections.ConfigDict({"baselines": BASELINES})
  config.eval.sweep = "baselines"
  for key, value in overrides.items():
    section, _, leaf = key.rpartition(".")
    config[section][leaf] = value
  return config


def test_sweep_settings_parse_into_the_documented_recipes():
  hold, skip, delta, videoiq, resq = parse.parse(tiny_config(), num_devices=8).eval.sweep
  period = tiny_config().quant.period  # 2
  assert hold.recipe == hold_recipe() and hold.period == period and hold.family == "hold"
  assert skip.recipe == skip_conv_recipe(0.5) and skip.family == "skipconv"
  assert delta.recipe == delta_cnn_recipe(2.0) and delta.family == "deltacnn"
  assert delta.name == "DeltaCNN thr=2"
  assert videoiq.family == "videoiq" and videoiq.period == 1
  assert videoiq.frame_precision == FramePrecisionPlan(
    (fq_recipe(4, 4), fq_recipe(6, 6), fq_recipe(8, 8)), (0.05, 0.15)
  )
  assert videoiq.recipe == fq_recipe(8, 8)  # the top candidate
  assert videoiq.frame_precision.policy == FramePrecisionPolicy((0.05, 0.15))
  # Without a family the recipe's own (as before); no frame-precision plan.
  assert resq.family == "resq" and resq.recipe == resq_recipe() and resq.frame_precision is None
  names = [s.name for s in (hold, skip, videoiq, resq)]
  assert names == [
    "Hold K=2 W8A8",
    "Gate K=2 prev W8A8 thr=0.5",
    "FramePrec W4A4/W6A6/W8A8 thr=0.05/0.15",
    "ResQ K=2 closed W8A8/W4A4",
  ]
  config = tiny_config()
  unnamed = {k: v for k, v in BASELINES[2].items() if k != "name"}
  config.eval.sweeps = ml_collections.ConfigDict({"baselines": (unnamed,)})
  (default_delta,) = parse.parse(config, num_devices=8).eval.sweep
  assert default_delta.name == "Gate K=2 closed W8A16 thr=2 step=0.00388"


def test_frame_precision_keys_and_gate_threshold_reach_the_plan():
  config = tiny_config(
    **{
      "quant.mode": "frame_precision",
      "quant.frame_bits": ((2, 4), (4, 4), (8, 8)),
      "quant.frame_thresholds": (0.1, 0.3),
    }
  )
  plan = parse.parse(config, num_devices=8).quant
  assert plan.frame_precision.candidates == (fq_recipe(2, 4), fq_recipe(4, 4), fq_recipe(8, 8))
  assert plan.frame_precision.thresholds == (0.1, 0.3)
  assert plan.recipe == fq_recipe(8, 8) and plan.period == 1
  gate = parse.policy_from(
    {"policy": "gate", "policy_bits": [0, 4], "gate_threshold": 3, "policy_step": 0.5}
  )
  assert gate == GatePolicy((0, 4), 3.0, 0.5)


def test_json_round_trip_and_old_qat_configs_parse():
  """A run's config.json (lists for tuples) parses to the same settings; a QAT run saved before
  the new keys existed takes their defaults."""
  config = tiny_config()
  again = ml_collections.ConfigDict(json.loads(config.to_json()))
  assert parse.parse(again, num_devices=8).eval.sweep == (
    parse.parse(config, num_devices=8).eval.sweep
  )
  saved = json.loads(config.to_json())
  for key in ("gate_threshold", "frame_bits", "frame_thresholds"):
    del saved["quant"][key]
  saved["quant"].update(mode="dynamic", policy="fixed_step")
  setting = parse.qat_setting(saved, "runs/qat", "QAT qat")
  assert setting.recipe == dynamic_recipe(None, (8, 8), (4, 4), "closed")
  assert setting.source == "qat" and setting.family == "dynamic"


def test_distillation_keys_reach_train_spec():
  spec = parse.parse(tiny_config(), num_devices=8).train
  assert (spec.distill_weight, spec.distill_temperature) == (0.0, 1.0)
  spec = parse.parse(
    tiny_config(**{"train.distill_weight": 0.5, "train.distill_temperature": 4.0}), num_devices=8
  ).train
  assert (spec.distill_weight, spec.distill_temperature) == (0.5, 4.0)


def test_setting_checks_its_frame_precision_plan():
  plan = FramePrecisionPlan((fq_recipe(4, 4), fq_recipe(8, 8)), (0.1,))
  assert Setting(name="x", recipe=fq_recipe(8, 8), frame_precision=plan).family == (
    "frame_precision"
  )
  with pytest.raises(ValueError, match="top candidate"):
    Setting(name="x", recipe=fq_recipe(4, 4), frame_precision=plan)
  with pytest.raises(TypeError, match="positional"):  # keyword-only: no silent reordering
    Setting("x", fq_recipe(8, 8), 4, "ptq")
  with pytest.raises(ValueError, match="one threshold fewer"):
    FramePrecisionPlan((fq_recipe(4, 4), fq_recipe(8, 8)), (0.1, 0.2))
  with pytest.raises(ValueError, match="stateless"):
    FramePrecisionPlan((fq_recipe(4, 4), resq_recipe()), (0.1,))
  with pytest.raises(ValueError, match="strictly ascending"):
    FramePrecisionPlan((fq_recipe(2, 2), fq_recipe(4, 4), fq_recipe(8, 8)), (0.2, 0.1))


def test_setting_from_merges_a_sweep_entry_over_the_quant_section():
  """parse.setting_from: the entry's quant keys override the section; name, family, source
  and run_dir as given (oracle: the recipe constructors and the documented default name)."""
  section = dict(tiny_config().quant)  # period 2
  entry = {"mode": "resq", "residual_bits": (2, 2), "family": "mine"}
  setting = parse.setting_from(section, entry, source="qat", run_dir="runs/q")
  assert setting.recipe == resq_recipe((8, 8), (2, 2)) and setting.period == 2
  assert (setting.family, setting.source, setting.run_dir) == ("mine", "qat", "runs/q")
  assert setting.name == "ResQ K=2 closed W8A8/W2A2 QAT"
  fp = parse.setting_from(section, {"mode": "float", "name": "FP"})
  assert (fp.name, fp.source, fp.period) == ("FP", "fp", 1)
