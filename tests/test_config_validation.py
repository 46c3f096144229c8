"""Config validation: a table of bad settings, each rejected up front with a one-line message
naming its key; every key of configs/default.py has a rule; bad flags exit 2 without a traceback.
"""

import dataclasses
import importlib.util
import json
import math
import pathlib
import sys

import jax
import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from resq_jax.experiment import parse, schema, spec

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAN, INF = math.nan, math.inf


def load_config(name="tiny"):
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def apply(config, overrides):
  for key, value in overrides.items():
    section, _, leaf = key.rpartition(".")
    target = config[section] if section else config
    with target.ignore_type():  # wrong types on purpose
      target[leaf] = value
  return config


# (overrides of configs/tiny.py, the key the message must name, a fragment of the message).
# tiny: 32x32, 4 frames, 16/8/8 clips, batch 8 (eval 8), 4 steps, warmup 1; 8 devices.
BAD = [
  ({"seed": -1}, "seed", "int in [0, 4294967294]"),
  ({"seed": 2**32}, "seed", "32-bit seeds"),
  ({"seed": 1.5}, "seed", "got 1.5"),
  ({"stage": "train"}, "stage", "fp | ptq | qat"),
  ({"init_from": None}, "init_from", "got None"),
  ({"distributed": "yes"}, "distributed", "True | False"),
  ({"distributed": 1}, "distributed", "True | False"),
  ({"data.dataset": "kitti"}, "data.dataset", "synth_res | cityscapes_video | jhmdb | davis2017"),
  ({"data.dataset": "davis2017"}, "data.dataset", "no task reads davis2017 yet"),
  ({"data.dataset": "jhmdb"}, "data.dataset", "read by task 'pose', not 'segmentation'"),
  (
    {"data.dataset": "cityscapes_video", "eval.split": "test"},
    "data.dataset",
    "no 'test' split for eval.split (allowed: eval.split in validation)",
  ),
  ({"data.dataset": "cityscapes_video", "data.num_frames": 21}, "data.dataset", "at most 20"),
  ({"data.data_dir": ""}, "data.data_dir", "non-empty path"),
  ({"data.regime": "fastpan"}, "data.regime", "static_cam | slow_pan | fast_pan | flicker"),
  ({"data.height": 16}, "data.height", "int in [32, 1024]"),
  ({"data.width": 0}, "data.width", "int in [32, 1024]"),
  ({"data.width": 2048}, "data.width", "int in [32, 1024]"),
  ({"data.num_frames": 1}, "data.num_frames", "int >= 2"),
  ({"data.num_train": 0}, "data.num_train", "int >= 1"),
  ({"data.num_train": 4}, "data.num_train", "fewer than one batch"),
  ({"data.num_validation": 0}, "data.num_validation", "int >= 1"),
  ({"data.num_validation": 4}, "data.num_validation", "fewer than one eval batch"),
  ({"data.num_validation": 12}, "data.num_validation", "the last 4 would never be evaluated"),
  ({"data.num_test": -1}, "data.num_test", "int >= 0"),
  ({"data.batch_size": 0}, "data.batch_size", "int >= 1"),
  ({"data.batch_size": 12}, "data.batch_size", "not divisible by the device count 8"),
  ({"data.batch_size": 8.0}, "data.batch_size", "got 8.0"),
  ({"data.worker_count": -1}, "data.worker_count", "int >= 0"),
  ({"model.preset": "small"}, "model.preset", "(allowed: tiny | demo | "),
  ({"model.conv_impl": "cudnn"}, "model.conv_impl", "(allowed: auto | xla | im2col)"),
  ({"quant.mode": "int8"}, "quant.mode", "float | fq | resq | dynamic"),
  ({"quant.key_bits": (1, 8)}, "quant.key_bits", "zero every positive weight"),
  ({"quant.key_bits": (8, 17)}, "quant.key_bits", "activation in [1, 16]"),
  ({"quant.key_bits": (8,)}, "quant.key_bits", "(weight, activation) ints"),
  ({"quant.key_bits": (8.0, 8)}, "quant.key_bits", "got (8.0, 8)"),
  ({"quant.residual_bits": (1, 4)}, "quant.residual_bits", "weight in [2, 16]"),
  ({"quant.residual_bits": (4, 1)}, "quant.residual_bits", "activation in [2, 16]"),
  (
    {"quant.mode": "resq", "quant.key_bits": (4, 4), "quant.residual_bits": (8, 4)},
    "quant.residual_bits",
    "more than quant.key_bits=(4, 4) (16) in mode 'resq'",
  ),
  (
    {"quant.mode": "dynamic", "quant.key_bits": (4, 2)},
    "quant.residual_bits",
    "more than quant.key_bits=(4, 2) (8) in mode 'dynamic'",
  ),
  ({"quant.period": 0}, "quant.period", "int >= 1"),
  (
    {"quant.mode": "resq", "quant.period": 16, "data.num_frames": 8},
    "quant.period",
    "16 exceeds data.num_frames=8 in mode 'resq'",
  ),
  ({"quant.period": True}, "quant.period", "got True"),
  ({"quant.ref_mode": "open"}, "quant.ref_mode", "closed | key | prev"),
  ({"quant.policy": "greedy"}, "quant.policy", "fixed_step | ladder"),
  ({"quant.policy_bits": (0, 1, 4)}, "quant.policy_bits", "each 0 (skip) or in [2, 16]"),
  ({"quant.policy_bits": (8, 4, 0, 2)}, "quant.policy_bits", "strictly ascending"),
  ({"quant.policy_bits": ()}, "quant.policy_bits", "non-empty"),
  ({"quant.policy_step": 0.0}, "quant.policy_step", "finite number > 0"),
  ({"quant.policy_step": NAN}, "quant.policy_step", "got nan"),
  ({"quant.thresholds": (1.0, 0.5, 2.0, 3.0)}, "quant.thresholds", "strictly ascending"),
  (
    {"quant.policy": "ladder", "quant.thresholds": (0.5, 1.5, 7.5)},
    "quant.thresholds",
    "3 thresholds for 4 quant.policy_bits",
  ),
  ({"quant.stop_ref_gradient": "no"}, "quant.stop_ref_gradient", "True | False"),
  ({"quant.policy": "skip"}, "quant.policy", "fixed_step | ladder | gate | hold"),
  (
    {"quant.policy": "gate", "quant.policy_bits": (0, 4, 8)},
    "quant.policy_bits",
    "(0, 4, 8) under the gate policy (allowed: (0, b) with b in [2, 16]",
  ),
  ({"quant.policy": "gate", "quant.policy_bits": (2, 8)}, "quant.policy_bits", "gate policy"),
  ({"quant.cut_threshold": -0.5}, "quant.cut_threshold", "finite number >= 0"),
  ({"quant.drift_threshold": NAN}, "quant.drift_threshold", "got nan"),
  ({"quant.gate_threshold": 0.0}, "quant.gate_threshold", "finite number > 0"),
  ({"quant.gate_threshold": NAN}, "quant.gate_threshold", "got nan"),
  ({"quant.gate_threshold": -1.0}, "quant.gate_threshold", "finite number > 0"),
  ({"quant.mode": "frame"}, "quant.mode", "dynamic | frame_precision"),
  ({"quant.frame_bits": ((4, 4),)}, "quant.frame_bits", "at least 2 (weight, activation)"),
  ({"quant.frame_bits": ((8, 8), (4, 4))}, "quant.frame_bits", "neither bit-width decreases"),
  ({"quant.frame_bits": ((4, 8), (8, 4))}, "quant.frame_bits", "neither bit-width decreases"),
  ({"quant.frame_bits": ((4, 4), (4, 4))}, "quant.frame_bits", "no pair repeated"),
  ({"quant.frame_bits": ((1, 4), (8, 8))}, "quant.frame_bits", "weight in [2, 16]"),
  ({"quant.frame_bits": ((4, 4), (8, 17))}, "quant.frame_bits", "activation in [1, 16]"),
  ({"quant.frame_bits": (4, 8)}, "quant.frame_bits", "int pairs"),
  ({"quant.frame_bits": ((4, 4.0), (8, 8))}, "quant.frame_bits", "got ((4, 4.0), (8, 8))"),
  ({"quant.frame_thresholds": (0.15, 0.05)}, "quant.frame_thresholds", "strictly ascending"),
  ({"quant.frame_thresholds": (0.0, 0.1)}, "quant.frame_thresholds", "positive"),
  ({"quant.frame_thresholds": ()}, "quant.frame_thresholds", "got ()"),
  (
    {"quant.mode": "frame_precision", "quant.frame_thresholds": (0.05,)},
    "quant.frame_thresholds",
    "1 thresholds for 3 quant.frame_bits ((4, 4), (6, 6), (8, 8)) (allowed: 2, one fewer",
  ),
  (
    {"stage": "qat", "init_from": "runs/fp", "quant.mode": "frame_precision"},
    "stage",
    "stage 'qat' calibrates or trains one recipe, but quant.mode='frame_precision'",
  ),
  (
    {"stage": "ptq", "init_from": "runs/fp", "quant.mode": "frame_precision"},
    "stage",
    "(allowed: stage 'fp' with frame_precision settings in eval.sweeps",
  ),
  ({"calibration.num_batches": 0}, "calibration.num_batches", "int >= 1"),
  ({"calibration.num_batches": 3}, "calibration.num_batches", "data.num_train=16 holds 2"),
  ({"calibration.weight": "max"}, "calibration.weight", "minmax | percentile | mse"),
  ({"calibration.key_act": "MSE"}, "calibration.key_act", "minmax | percentile | mse"),
  ({"calibration.residual_act": ""}, "calibration.residual_act", "got ''"),
  ({"calibration.residual_weight": None}, "calibration.residual_weight", "got None"),
  ({"optim.lr": -1e-3}, "optim.lr", "finite number > 0"),
  ({"optim.lr": 0.0}, "optim.lr", "finite number > 0"),
  ({"optim.lr": NAN}, "optim.lr", "got nan"),
  ({"optim.lr": INF}, "optim.lr", "got inf"),
  ({"optim.lr": "1e-3"}, "optim.lr", "got '1e-3'"),
  ({"optim.quant_lr": -1e-3}, "optim.quant_lr", "finite number > 0"),
  ({"optim.quant_lr": 0.0}, "optim.quant_lr", "finite number > 0"),
  ({"optim.weight_decay": -1e-4}, "optim.weight_decay", "finite number >= 0"),
  ({"optim.weight_decay": NAN}, "optim.weight_decay", "got nan"),
  ({"optim.warmup_steps": -1}, "optim.warmup_steps", "int >= 0"),
  ({"optim.warmup_steps": 4}, "optim.warmup_steps", "not below train.num_steps=4"),
  ({"optim.grad_clip": -1.0}, "optim.grad_clip", "finite number > 0"),
  ({"optim.grad_clip": 0.0}, "optim.grad_clip", "finite number > 0"),
  ({"train.class_weights": (1.0, -1.0)}, "train.class_weights", "one positive finite number"),
  ({"train.class_weights": (1.0, NAN)}, "train.class_weights", "one positive finite number"),
  ({"train.class_weights": (1.0,) * 3}, "train.class_weights", "3 weights for 7 classes"),
  (
    {"task": "pose", "train.class_weights": (1.0,) * 7},
    "train.class_weights",
    "task 'pose' has no classes (allowed: ())",
  ),
  ({"train.num_steps": 0}, "train.num_steps", "int >= 2"),
  ({"train.num_steps": 1, "optim.warmup_steps": 0}, "train.num_steps", "int >= 2"),
  ({"train.num_steps": 4.5}, "train.num_steps", "got 4.5"),
  ({"train.log_every": 0}, "train.log_every", "int >= 1"),
  ({"train.checkpoint_every": 0}, "train.checkpoint_every", "int >= 1"),
  ({"train.keep_checkpoints": 0}, "train.keep_checkpoints", "int >= 1"),
  ({"train.unroll": 1}, "train.unroll", "True | False"),
  ({"train.remat": "yes"}, "train.remat", "True | False"),
  ({"train.distill_weight": -0.1}, "train.distill_weight", "finite number >= 0"),
  ({"train.distill_weight": INF}, "train.distill_weight", "got inf"),
  ({"train.distill_weight": "0.5"}, "train.distill_weight", "read by QAT only"),
  ({"train.distill_temperature": 0.0}, "train.distill_temperature", "finite number > 0"),
  ({"train.distill_temperature": NAN}, "train.distill_temperature", "got nan"),
  ({"eval.batch_size": 0}, "eval.batch_size", "int >= 1"),
  ({"eval.batch_size": 4}, "eval.batch_size", "not divisible by the device count 8"),
  ({"eval.num_batches": -1}, "eval.num_batches", "int >= 0"),
  ({"eval.split": "train"}, "eval.split", "validation | test"),
  ({"eval.split": "test", "data.num_test": 4}, "eval.split", "fewer than one eval batch"),
  ({"eval.num_batches": 2}, "eval.num_batches", "data.num_validation=8 holds 1"),
  ({"eval.sweep": "full"}, "eval.sweep", "fp | short | tiny, the names of eval.sweeps"),
  ({"eval.sweeps": {"tiny": ()}}, "eval.sweeps", "non-empty tuple of settings"),
  (
    {"eval.sweeps": {"tiny": ({"mode": "fq", "period": 0},)}},
    "eval.sweeps",
    "setting 0 of 'tiny': quant.period: got 0 (allowed: int >= 1)",
  ),
  (
    {"eval.sweeps": {"tiny": ({"mode": "fq", "bits": 4},)}},
    "eval.sweeps",
    "each a dict of quant keys",
  ),
  (
    {"eval.sweeps": {"tiny": ({"mode": "fq", "family": "Skip Conv"},)}},
    "eval.sweeps",
    "'family', the family an identifier [a-z][a-z0-9_]{0,23}",
  ),
  ({"eval.sweeps": {"tiny": ({"mode": "fq", "family": "a" * 25},)}}, "eval.sweeps", "family"),
  ({"eval.sweeps": {"tiny": ({"mode": "fq", "family": 3},)}}, "eval.sweeps", "family"),
  (
    {"eval.sweeps": {"tiny": ({"mode": "dynamic", "policy": "gate", "family": "skipconv"},)}},
    "eval.sweeps",
    "setting 0 of 'tiny': quant.policy_bits: (0, 2, 4, 8) under the gate policy",
  ),
  (
    {"eval.sweeps": {"tiny": ({"mode": "frame_precision", "frame_bits": ((4, 4), (8, 8))},)}},
    "eval.sweeps",
    "setting 0 of 'tiny': quant.frame_thresholds: 2 thresholds for 2 quant.frame_bits",
  ),
  ({"task": "depth"}, "task", "segmentation | pose"),
  ({"eval.qat_runs": "runs/a, runs/b"}, "eval.qat_runs", "no spaces"),
  ({"eval.qat_runs": None}, "eval.qat_runs", "got None"),
  ({"eval.plots": "yes"}, "eval.plots", "True | False"),
  ({"optim.learning_rate": 1.0}, "optim.learning_rate", "(did you mean 'optim.lr'?)"),
  ({"train.steps": 10}, "train.steps", "(did you mean 'train.num_steps'?)"),
  ({"quant.keybits": (8, 8)}, "quant.keybits", "(did you mean 'quant.key_bits'?)"),
  (
    {"optimizer": ml_collections.ConfigDict({"lr": 1.0})},
    "optimizer.lr",
    "(did you mean 'optim.lr'?)",
  ),
  ({"optim": 3}, "optim", "a section with keys lr, quant_lr"),
]
IDS = [",".join(f"{k}={v!r}" for k, v in overrides.items()) for overrides, _, _ in BAD]


def names_key(line: str, key: str) -> bool:
  return line.startswith(f"{key}: ") or f"unknown config key {key!r}" in line


def rejected(overrides, key, fragment) -> bool:
  try:
    parse.validate(apply(load_config(), overrides), num_devices=8)
  except parse.ConfigError as e:
    return len(e.problems) == 1 and names_key(e.problems[0], key) and fragment in str(e)
  return False


@pytest.mark.parametrize("overrides, key, fragment", BAD, ids=IDS)
def test_bad_setting_is_rejected_with_one_line_naming_its_key(overrides, key, fragment):
  with pytest.raises(parse.ConfigError) as info:
    parse.validate(apply(load_config(), overrides), num_devices=8)
  assert isinstance(info.value, ValueError)
  problems = info.value.problems
  assert len(problems) == 1, problems  # one mistake, one line
  assert names_key(problems[0], key) and fragment in problems[0], problems[0]
  assert "\n" not in problems[0] and str(info.value) == problems[0]
  if not problems[0].startswith("unknown config key"):
    assert "(allowed: " in problems[0]


def test_rejection_rate_of_the_table():
  assert len(BAD) >= 55
  rate = sum(rejected(*row) for row in BAD) / len(BAD)
  assert rate == 1.0, rate


def test_every_declared_key_is_documented_valid_by_default_and_in_the_table():
  """The schema is one declaration (schema.KEYS): each key has help text, its default passes
  its own rule, it fills a real field of the Experiment (or a builder of parse reads it), and
  the table above has a bad setting for it."""
  experiment_parts = {f.name: f.type for f in dataclasses.fields(spec.Experiment)}
  for key in schema.KEYS:
    assert key.help.strip() and key.rule.describe(), key.name
    assert key.rule.accepts(key.default), (key.name, key.default)
    if key.field is not None:
      part, _, field = key.field.rpartition(".")
      owner = getattr(spec, experiment_parts[part]) if part else spec.Experiment
      assert field in {f.name for f in dataclasses.fields(owner)}, key.field
  assert sorted(schema.RULES) == sorted(name for name, _ in parse.flatten(schema.default_config()))
  tested = {key for overrides, _, _ in BAD for key in overrides}
  assert set(schema.RULES) - tested == set()


def test_every_experiment_field_is_filled_by_a_key_or_a_builder():
  """Every field of the Experiment parts that parse builds from keys is declared by a key's
  ``field``, except those parse derives from several keys (recipe, task, sweep, ...)."""
  derived = {"task", "config_json", "quant.recipe", "quant.period", "quant.calibration"}
  derived |= {"quant.frame_precision", "eval.sweep", "eval.qat_runs"}
  declared = {k.field for k in schema.KEYS if k.field is not None}
  fields = set()
  for f in dataclasses.fields(spec.Experiment):
    owner = getattr(spec, f.type, None) if isinstance(f.type, str) else None
    if dataclasses.is_dataclass(owner):
      fields |= {f"{f.name}.{g.name}" for g in dataclasses.fields(owner)}
    else:
      fields.add(f.name)
  assert fields - derived == declared


def test_stock_qat_configs_parse_without_init_from_and_only_the_train_entry_needs_it(
  monkeypatch, tmp_path
):
  """Friction 1: a QAT / PTQ config parses (to build a loss or a step from random weights);
  only train.train_and_evaluate, which restores the FP run, refuses an empty init_from, with
  the one line train.py prints (exit code 2), before building anything."""
  from resq_jax import errors
  from resq_jax.experiment import inputs, train

  monkeypatch.setattr(inputs, "ensure_data", lambda *a, **k: pytest.fail("built data"))
  for stage in ("qat", "ptq"):
    experiment = parse.parse(apply(load_config(), {"stage": stage}), num_devices=8)
    assert experiment.stage == stage and experiment.init_from == ""
    with pytest.raises(errors.InvalidConfigError) as info:
      train.train_and_evaluate(experiment, str(tmp_path / stage))
    assert str(info.value) == (
      f"init_from: empty, but stage {stage!r} needs init_from (allowed: the workdir of an FP run)"
    )
    assert errors.exit_code_of(info.value) == errors.EXIT_CONFIG == 2
    assert not (tmp_path / stage).exists()


@pytest.mark.parametrize(
  "name",
  [
    p.stem
    for p in sorted((ROOT / "configs").glob("*.py"))
    if p.stem not in ("__init__", "sweeps", "comparison", "comparison_tiny")
  ],
)
def test_shipped_configs_and_their_json_round_trip_validate(name):
  config = load_config(name)
  for num_devices in (1, 8):
    parse.validate(config, num_devices=num_devices)
  # QAT runs are read back from config.json, where tuples become lists.
  parse.validate(ml_collections.ConfigDict(json.loads(config.to_json())), num_devices=8)


@pytest.mark.parametrize(
  "overrides",
  [
    {"train.num_steps": 2, "optim.warmup_steps": 0},
    {"stage": "ptq", "init_from": "runs/fp", "quant.mode": "fq", "quant.key_bits": (2, 1)},
    {"quant.mode": "resq", "quant.key_bits": (4, 4), "quant.residual_bits": (4, 4)},
    {"quant.mode": "float", "quant.key_bits": (4, 4)},  # residual bits unused by float / fq
    {"data.num_test": 0, "eval.num_batches": 1, "calibration.num_batches": 2},
    # A real dataset: the SynthRes clip counts are unused (the build decides them).
    {"data.dataset": "cityscapes_video", "data.num_train": 1, "data.num_validation": 3},
    {"data.dataset": "jhmdb", "task": "pose", "eval.split": "test", "data.num_test": 0},
    {"quant.policy": "ladder", "quant.policy_bits": (0, 8), "quant.thresholds": (0.5, 127.5)},
    {"quant.policy_bits": (0, 8)},  # thresholds only need one per candidate for 'ladder'
    {"optim.weight_decay": 0.0, "optim.lr": 1, "eval.qat_runs": "runs/a,runs/b"},
    # Peer baselines (docs/baselines.md): DeltaCNN-style gate, keyframe hold, frame precision.
    {"quant.mode": "dynamic", "quant.policy": "gate", "quant.policy_bits": (0, 16)},
    {"quant.mode": "dynamic", "quant.policy": "hold", "quant.policy_bits": (0, 2, 4, 8)},
    {
      "quant.mode": "frame_precision",
      "quant.frame_bits": ((2, 4), (4, 4), (4, 8), (8, 8)),
      "quant.frame_thresholds": (0.01, 0.1, 1.0),
    },
    {"quant.frame_thresholds": (0.1,)},  # the count only matters in mode frame_precision
    {  # as read back from JSON
      "quant.mode": "frame_precision",
      "quant.frame_bits": [[4, 4], [8, 8]],
      "quant.frame_thresholds": [0.1],
    },
    {"train.distill_weight": 0.0, "train.distill_temperature": 1e-3},
    {"train.distill_weight": 2, "stage": "qat", "init_from": "runs/fp"},
    {
      "eval.sweeps": {
        "tiny": (
          {"mode": "dynamic", "policy": "hold", "family": "hold", "name": "Hold"},
          {"mode": "frame_precision", "family": "videoiq"},
          {"mode": "fq", "family": "a23456789012345678901234"},
        )
      }
    },
  ],
)
def test_edge_values_are_accepted(overrides):
  parse.validate(apply(load_config(), overrides), num_devices=8)


def test_every_problem_is_listed():
  config = apply(load_config(), {"optim.lr": -1.0, "train.log_every": 0, "optim.lrr": 1.0})
  with pytest.raises(parse.ConfigError) as info:
    parse.validate(config, num_devices=8)
  assert info.value.problems == (
    "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)",
    "optim.lr: got -1.0 (allowed: finite number > 0)",
    "train.log_every: got 0 (allowed: int >= 1)",
  )


def test_missing_key_and_eval_needs_init_from():
  config = load_config()
  del config.train["unroll"]
  with pytest.raises(parse.ConfigError, match=r"^train.unroll: missing \(allowed: True"):
    parse.validate(config, num_devices=8)
  with pytest.raises(parse.ConfigError, match="the evaluation sweep needs init_from"):
    parse.validate(load_config(), num_devices=8, needs_init_from=True)


def test_multi_host_config_validates_before_jax_distributed_initialize(monkeypatch):
  """distributed=True: the device count is global only after jax.distributed.initialize(),
  which fails once a backend has started, so validate must not ask for it before."""

  def no_backend():
    raise AssertionError("jax.device_count() before jax.distributed.initialize()")

  monkeypatch.setattr(jax, "device_count", no_backend)
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  multi_host = {"distributed": True, "data.batch_size": 12}
  config = apply(load_config(), multi_host)
  parse.validate(config)  # divisibility is checked again after initialising
  with pytest.raises(parse.ConfigError, match="^optim.lr: got -1.0"):
    parse.validate(apply(load_config(), {**multi_host, "optim.lr": -1.0}))
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
  monkeypatch.setattr(jax, "device_count", lambda: 8)
  with pytest.raises(parse.ConfigError, match="^data.batch_size: 12 is not divisible"):
    parse.validate(config)


def test_table_is_rejected_by_train_lib_before_data_or_compilation(monkeypatch, tmp_path):
  """Through the real entry of train.py: ConfigError before any data is built, any model made
  or anything compiled. The device count is jax.device_count() (8 virtual CPU devices)."""
  from resq_jax.experiment import inputs, models, train

  def forbidden(*args, **kwargs):
    raise AssertionError("built something before validating the config")

  def no_distributed(enabled, **kwargs):
    if enabled:
      raise AssertionError("jax.distributed initialised before validating the config")
    return False

  for module, name in (
    (inputs, "ensure_data"),
    (inputs, "loader"),
    (models, "make_model"),
    (models, "init_variables"),
    (train, "make_model"),
    (train, "init_variables"),
  ):
    monkeypatch.setattr(module, name, forbidden)
  monkeypatch.setattr(train, "maybe_initialize_distributed", no_distributed)
  compiled = []
  listener = lambda event, duration, **kwargs: compiled.append(event)
  jax.monitoring.register_event_duration_secs_listener(listener)
  outcomes = []
  try:
    for i, (overrides, key, _) in enumerate(BAD):
      workdir = tmp_path / str(i)
      try:
        train.train_and_evaluate(parse.parse(apply(load_config(), overrides)), str(workdir))
        outcomes.append(False)
      except parse.ConfigError as e:
        outcomes.append(names_key(str(e), key) and not workdir.exists())
      except AssertionError:  # something was built (or initialised) first
        outcomes.append(False)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert jax.device_count() == 8 and compiled == []
  assert sum(outcomes) / len(outcomes) >= 0.95, [r for r, ok in zip(IDS, outcomes) if not ok]


@pytest.fixture
def flag_values():
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", flag_values=fv, lock_config=True
  )
  flags.DEFINE_string("workdir", None, "Directory.", flag_values=fv)
  flags.mark_flags_as_required(["config", "workdir"], flag_values=fv)
  return fv


@pytest.mark.parametrize(
  "extra, line",
  [
    (
      ["--config.optim.learning_rate=1"],
      "config error: unknown config key 'optim.learning_rate' (did you mean 'optim.lr'?)",
    ),
    (
      ["--config.optim.lr=abc"],
      "config error: optim.lr: cannot parse 'abc': could not convert "
      "string to float: 'abc' (allowed: finite number > 0)",
    ),
    (
      ["--config", "configs/missing.py"],
      "flag error: cannot load the config file of --config: "
      "[Errno 2] No such file or directory: 'configs/missing.py'",
    ),
  ],
)
def test_parse_flags_prints_one_line_and_exits_2(flag_values, monkeypatch, capsys, extra, line):
  argv = ["train.py", "--config", str(ROOT / "configs" / "tiny.py"), "--workdir", "w", *extra]
  monkeypatch.chdir(ROOT)
  monkeypatch.setattr(sys, "argv", argv)  # ml_collections reads overrides from sys.argv
  with pytest.raises(SystemExit) as info:
    parse.parse_flags(argv, flag_values)
  assert info.value.code == 2
  assert capsys.readouterr().err.splitlines() == [line]


def test_parse_flags_accepts_good_overrides(flag_values, monkeypatch):
  argv = [
    "train.py",
    "--config",
    str(ROOT / "configs" / "tiny.py"),
    "--workdir",
    "w",
    "--config.optim.lr=0.01",
    "--noconfig.train.unroll",
  ]
  monkeypatch.setattr(sys, "argv", argv)
  assert parse.parse_flags(argv, flag_values) == ["train.py"]
  config = flag_values["config"].value
  assert config.optim.lr == 0.01 and config.train.unroll is False
  parse.validate(config, num_devices=8)
