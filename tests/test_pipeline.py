"""End-to-end: train.py's entry point, resume, configs, sharded steps, the evaluation report."""

import importlib.util
import json
import math
import pathlib
import shutil

import jax
import numpy as np
import optax
import pytest

from resq_jax import errors
from resq_jax.evaluation import load_results
from resq_jax.experiment import evaluate, inputs, parse, train
from resq_jax.experiment.models import init_variables, make_model
from resq_jax.nn import quantized
from resq_jax.training import TrainState, make_train_step, replicate, shard_batch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(name, **overrides):
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in overrides.items():
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
  return config


def parse_and_train(config, workdir, **kwargs) -> dict:
  """train.py's path: parse (validate) the config, train and evaluate; the result's row."""
  result = train.train_and_evaluate(parse.parse(config), workdir, **kwargs)
  return result.to_row()


def is_config(path) -> bool:
  return path.stem not in (
    "__init__",
    "sweeps",
    "comparison",
    "comparison_tiny",
  )  # plans, not configs


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("synthres"))


@pytest.fixture(scope="module")
def fp_run(tmp_path_factory, data_dir):
  """A finished tiny FP run (4 steps, checkpoints at 2 and 4, a loss logged every step)."""
  workdir = tmp_path_factory.mktemp("fp")
  config = load_config("tiny", **{"data.data_dir": data_dir, "train.log_every": 1})
  metrics = parse_and_train(config, str(workdir))
  return config, workdir, metrics


def read_losses(workdir):
  lines = (pathlib.Path(workdir) / "train_metrics.jsonl").read_text().splitlines()
  return {row["step"]: row["loss"] for row in map(json.loads, lines)}


def test_smoke_train_and_evaluate(fp_run):
  config, workdir, metrics = fp_run
  assert 0.0 <= metrics["miou"] <= 1.0
  assert metrics["pct_w8a8"] == pytest.approx(1600.0)  # float: 32 x 32 bits = 16 x (8 x 8)
  losses = read_losses(workdir)
  assert sorted(losses) == [1, 2, 3, 4] and all(math.isfinite(v) for v in losses.values())
  saved = json.loads((workdir / "eval_metrics.json").read_text())
  assert saved["miou"] == pytest.approx(metrics["miou"])
  assert json.loads((workdir / "config.json").read_text())["model"]["preset"] == "tiny"


def test_resume_reproduces_uninterrupted_losses(fp_run, tmp_path, monkeypatch):
  """Drop the last checkpoint (as if killed after step 2): the rerun resumes at step 2, with the
  data iterator where it was, and reproduces steps 3-4 of the uninterrupted run. The workdir is
  given relative to the current directory, as users type it."""
  config, workdir, _ = fp_run
  copy = tmp_path / "fp"
  shutil.copytree(workdir, copy)
  shutil.rmtree(copy / "checkpoints" / "4")
  jsonl = copy / "train_metrics.jsonl"
  jsonl.write_text("\n".join(jsonl.read_text().splitlines()[:2]) + "\n")
  monkeypatch.chdir(tmp_path)
  parse_and_train(config, "fp")
  original, resumed = read_losses(workdir), read_losses(copy)
  for step in (3, 4):
    assert resumed[step] == pytest.approx(original[step], rel=1e-5)


def test_qat_leaves_fp_checkpoint_untouched_and_reports_bops(fp_run, tmp_path, data_dir):
  config, fp_dir, _ = fp_run
  before = {p: p.read_bytes() for p in (fp_dir / "checkpoints").rglob("*") if p.is_file()}
  qat = load_config(
    "tiny",
    **{
      "data.data_dir": data_dir,
      "stage": "qat",
      "init_from": str(fp_dir),
      "quant.mode": "resq",
      "train.num_steps": 2,
    },
  )
  metrics = parse_and_train(qat, str(tmp_path / "qat"))
  after = {p: p.read_bytes() for p in (fp_dir / "checkpoints").rglob("*") if p.is_file()}
  assert before == after
  # K = 2: keyframes at W8A8 (64 bits), residual frames at W4A4 (16 bits): average 40/64.
  assert metrics["pct_w8a8"] == pytest.approx(100.0 * (64 + 16) / 2 / 64)


def test_eval_sweep_writes_report(fp_run, tmp_path):
  config, fp_dir, _ = fp_run
  config = load_config("tiny", **{"data.data_dir": config.data.data_dir, "init_from": str(fp_dir)})
  rows = [
    r.to_row()
    for r in evaluate.evaluate_sweep(parse.parse(config, needs_init_from=True), str(tmp_path))
  ]
  loaded, meta = load_results(tmp_path / "report")
  assert [r["name"] for r in loaded] == [r["name"] for r in rows]
  for row in loaded:
    assert 0.0 <= row["miou"] <= 1.0 and math.isfinite(row["gbops_avg"])
  by_name = {r["name"]: r for r in loaded}
  assert by_name["FQ W8A8"]["pct_w8a8"] == pytest.approx(100.0)
  assert by_name["ResQ K=2 closed W8A8/W4A4"]["pct_w8a8"] == pytest.approx(62.5)
  # Every setting is compared with the FP model: FP itself exactly (its outputs are the
  # reference); the one FQ point is the FQ front, so its err/FQ is 1 exactly.
  fp, fq = by_name["FP32"], by_name["FQ W8A8"]
  assert fp["agreement"] == 1.0 and fp["rel_l2"] == 0.0 and fp["fidelity_error"] == "rel_l2"
  assert 0.0 < fq["rel_l2"] and fq["err_fq_ratio"] == 1.0 and fq["delta_fq_pts"] == 0.0
  for row in loaded:
    lo, hi = row["miou_ci"]
    assert lo <= row["miou"] <= hi and len(row["rel_l2_by_t"]) == config.data.num_frames
  v = meta["variances"]  # per layer, network order: ratio = 100 * residual / activation var
  assert len(v["layers"]) == len(v["ratio_pct"]) > 0
  np.testing.assert_allclose(v["ratio_pct"], 100 * np.divide(v["res_var"], v["act_var"]))
  for name in ("results.md", "pareto.png", "variance.png", "bit_map.png"):
    assert (tmp_path / "report" / name).stat().st_size > 0


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.py")), ids=lambda p: p.stem)
def test_every_config_loads_and_validates(path):
  if not is_config(path):
    return
  config = load_config(path.stem)
  if config.stage in ("ptq", "qat"):
    config.init_from = "runs/fp"
  parse.validate(config, num_devices=8)
  parse.recipe_from(config.quant)


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"optim.learning_rate": 1.0}, "unknown config key 'optim.learning_rate'"),
    ({"quant.key_bits": (8, 17)}, "quant.key_bits: got (8, 17)"),
    ({"quant.residual_bits": (0, 4)}, "quant.residual_bits: got (0, 4)"),
    ({"quant.period": 0}, "quant.period: got 0 (allowed: int >= 1)"),
    (
      {"quant.mode": "dynamic", "quant.policy": "ladder", "quant.thresholds": (1.0, 0.5, 2.0, 3.0)},
      "quant.thresholds: got (1.0, 0.5, 2.0, 3.0)",
    ),
    ({"data.batch_size": 12}, "data.batch_size: 12 is not divisible by the device count 8"),
    ({"quant.ref_mode": "open"}, "quant.ref_mode: got 'open' (allowed: closed | key | prev)"),
  ],
)
def test_invalid_configs_are_rejected(overrides, message):
  config = load_config("tiny")
  for key, value in overrides.items():
    section, _, leaf = key.rpartition(".")
    target = config[section] if section else config
    if leaf not in target:
      with target.ignore_type():
        target[leaf] = value
    else:
      target[leaf] = value
  with pytest.raises(ValueError) as info:
    parse.validate(config, num_devices=8)
  assert message in str(info.value)


def test_sharded_train_step_equals_single_device(data_dir):
  """One QAT step (static ResQ over clips) on 8 virtual devices equals the 1-device step. (FP
  steps agree too: BatchNorm statistics are synchronised over the data axis, see
  tests/test_training_parallel.py.)"""
  config = load_config(
    "tiny",
    **{"data.data_dir": data_dir, "stage": "qat", "init_from": "unused", "quant.mode": "resq"},
  )
  experiment = parse.parse(config, num_devices=8)
  model = make_model(experiment.model, experiment.task, experiment.quant.recipe)
  variables = init_variables(model, experiment.data.frame_shape, jax.random.key(0))
  # Plain SGD: Adam's first step divides by |g|, which amplifies round-off where g ~ 0.
  optimizer = optax.sgd(0.1)
  inputs.ensure_data(experiment.data)
  batch = next(iter(inputs.loader(experiment.data, "train", batch_size=8, seed=0, shuffle=False)))
  results = []
  for devices in (jax.devices()[:1], jax.devices()[:8]):
    mesh = jax.make_mesh(
      (len(devices),), ("data",), devices=devices, axis_types=(jax.sharding.AxisType.Auto,)
    )
    step = make_train_step(
      train.make_loss_fn(experiment, model), optimizer, mesh, has_model_state=True, donate=False
    )
    state = replicate(
      TrainState.create(
        variables["params"], optimizer, jax.random.key(0), variables["batch_stats"]
      ),
      mesh,
    )
    new_state, metrics = step(state, shard_batch(batch, mesh))
    results.append((jax.device_get(new_state.params), float(metrics["loss"])))
  (p1, l1), (p8, l8) = results
  assert l1 == pytest.approx(l8, rel=1e-5)
  p0 = jax.device_get(variables["params"])
  deltas1 = jax.tree.map(lambda a, b: a - b, p1, p0)
  deltas8 = jax.tree.map(lambda a, b: a - b, p8, p0)
  scale = max(float(np.max(np.abs(d))) for d in jax.tree.leaves(deltas1))
  for (path, d1), d8 in zip(
    jax.tree_util.tree_flatten_with_path(deltas1)[0], jax.tree.leaves(deltas8)
  ):
    # A quantizer scale's LSQ gradient sums round(v) - v over many elements: a 1-ulp change of
    # an activation (different conv batch sizes per device) can flip one rounding, so
    # quantizer updates get 1% of the largest update as tolerance, weights 0.01%.
    quantizer = quantized.is_quantizer_param(path)
    np.testing.assert_allclose(
      d8, d1, rtol=0, atol=(1e-2 if quantizer else 1e-4) * scale, err_msg=jax.tree_util.keystr(path)
    )


def _copy_run(fp_run, tmp_path):
  config, workdir, metrics = fp_run
  copy = tmp_path / "fp"
  shutil.copytree(workdir, copy)
  return config, copy, metrics


def test_rerun_of_a_finished_run_returns_its_metrics_without_training(fp_run, tmp_path):
  config, copy, metrics = _copy_run(fp_run, tmp_path)
  rows = (copy / "train_metrics.jsonl").read_text()
  result = parse_and_train(config, str(copy))
  assert set(result) == set(metrics)
  assert result["miou"] == pytest.approx(metrics["miou"])
  assert result["per_class_iou"] == pytest.approx(metrics["per_class_iou"])
  assert (copy / "train_metrics.jsonl").read_text() == rows


def test_resume_with_a_changed_config_is_refused_unless_allowed(fp_run, tmp_path):
  config, copy, _ = _copy_run(fp_run, tmp_path)
  saved = (copy / "config.json").read_text()
  changed = load_config(
    "tiny",
    **{
      "data.data_dir": config.data.data_dir,
      "train.log_every": 1,
      "optim.lr": 100 * config.optim.lr,
      "train.num_steps": 6,
      "train.checkpoint_every": 3,
    },
  )  # not compared
  with pytest.raises(errors.ConfigMismatchError) as info:
    parse_and_train(changed, str(copy))
  message = str(info.value)
  assert "optim.lr: 0.002 -> 0.2" in message and "train.num_steps: 4 -> 6" in message
  assert "checkpoint_every" not in message and "--allow_config_change" in message
  assert "move" not in message
  assert (copy / "config.json").read_text() == saved  # written only after a restore
  changed.train.num_steps = 4  # same steps, new lr: nothing to train, evaluated again
  parse_and_train(changed, str(copy), allow_config_change=True)
  assert json.loads((copy / "config.json").read_text())["optim"]["lr"] == pytest.approx(0.2)


def test_bit_flip_in_the_newest_checkpoint_resumes_from_the_intact_one(fp_run, tmp_path, caplog):
  """Step 4 rots: the rerun warns, moves it aside, resumes from step 2 and reproduces the
  uninterrupted run's steps 3-4 (and saves an intact step 4 again)."""
  config, copy, _ = _copy_run(fp_run, tmp_path)
  ckpt_dir = copy / "checkpoints"
  data_files = [
    p
    for p in (ckpt_dir / "4" / "state").rglob("*")
    if p.is_file() and "ocdbt.process" in str(p) and p.parent.name == "d"
  ]
  target = max(data_files, key=lambda p: p.stat().st_size)
  blob = bytearray(target.read_bytes())
  middle = len(blob) // 2
  blob[middle : middle + 16] = bytes(b ^ 0xFF for b in blob[middle : middle + 16])
  target.write_bytes(bytes(blob))
  (copy / "eval_metrics.json").unlink()  # as if it was killed before evaluating
  with caplog.at_level("WARNING"):
    parse_and_train(config, str(copy))
  assert any("step 4" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
  assert [p.name.split("-")[0] for p in (ckpt_dir / "damaged").iterdir()] == ["4"]
  assert sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) == [2, 4]
  original, resumed = read_losses(fp_run[1]), read_losses(copy)
  for step in (3, 4):
    assert resumed[step] == pytest.approx(original[step], rel=1e-5)


def test_non_finite_loss_stops_before_saving_with_its_step(data_dir, tmp_path):
  config = load_config(
    "tiny", **{"data.data_dir": data_dir, "optim.lr": 1e30, "train.checkpoint_every": 1}
  )
  with pytest.raises(errors.NonFiniteError, match="step 3") as info:
    parse_and_train(config, str(tmp_path))
  assert info.value.exit_code == errors.EXIT_NON_FINITE
  # Steps 1-2 were finite and saved; nothing from step 3 on, and no evaluation.
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [1, 2]
  assert not (tmp_path / "eval_metrics.json").exists()


def test_init_from_a_run_of_another_model_names_the_mismatch(fp_run, tmp_path, data_dir):
  _, fp_dir, _ = fp_run
  qat = load_config(
    "tiny",
    **{
      "data.data_dir": data_dir,
      "stage": "qat",
      "init_from": str(fp_dir),
      "quant.mode": "fq",
      "model.preset": "demo",
    },
  )
  with pytest.raises(
    errors.ConfigMismatchError,
    match="model.preset: 'tiny' in init_from run .*, 'demo' in this config",
  ):
    parse_and_train(qat, str(tmp_path / "qat"))


def test_a_truncated_validation_split_fails_before_training(tmp_path):
  config = load_config("tiny", **{"data.data_dir": str(tmp_path / "data")})
  inputs.ensure_data(parse.parse(config).data)
  (path,) = (tmp_path / "data").rglob("*validation.array_record*")
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  with pytest.raises(errors.DataError, match="validation split"):
    parse_and_train(config, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_keys_added_to_the_schema_at_their_default_are_not_a_change():
  """A run saved before a key existed resumes when the key has its default; a real change of
  it, or of any saved key, is still reported."""
  saved = {"optim": {"lr": 0.1}, "data": {"regime": "slow_pan"}}
  defaults = {"optim": {"lr": 0.002}, "data": {"regime": "slow_pan", "dataset": "synth_res"}}
  new = {"optim": {"lr": 0.1}, "data": {"regime": "slow_pan", "dataset": "synth_res"}}
  assert train.config_changes(saved, new, defaults) == []
  new["data"]["dataset"] = "jhmdb"
  assert train.config_changes(saved, new, defaults) == ["data.dataset: (absent) -> 'jhmdb'"]
  new["data"]["dataset"], new["optim"]["lr"] = "synth_res", 0.2
  assert train.config_changes(saved, new, defaults) == ["optim.lr: 0.1 -> 0.2"]


def test_distillation_adds_the_weighted_kl_to_the_float_teacher(fp_run, data_dir):
  """QAT with train.distill_weight = w: the loss is the task loss plus w times the class KL
  between the float run's outputs (recomputed here with a plain apply) and the student's."""
  from resq_jax.experiment import runs
  from resq_jax.nn import run_clip
  from resq_jax.tasks.distill import class_kl

  _, fp_dir, _ = fp_run
  overrides = {
    "data.data_dir": data_dir,
    "stage": "qat",
    "init_from": str(fp_dir),
    "quant.mode": "resq",
    "train.distill_temperature": 2.0,
  }
  plain = parse.parse(load_config("tiny", **overrides))
  distilled = parse.parse(load_config("tiny", **overrides, **{"train.distill_weight": 0.5}))
  model = make_model(plain.model, plain.task, plain.quant.recipe)
  variables = train.initial_variables(plain, model)
  batch = next(inputs.train_batches(plain.data, plain.seed))
  args = (variables["params"], variables["batch_stats"], batch, jax.random.key(0))
  base, _ = train.make_loss_fn(plain, model)(*args)
  total, (_, extra) = train.make_loss_fn(distilled, model)(*args)

  frames, _ = plain.task.prepare(batch)
  fp_model, fp_vars = runs.load_fp(plain, str(fp_dir))
  teacher = run_clip(fp_model, fp_vars, frames, period=1).outputs
  student = run_clip(model, variables, frames, period=plain.quant.period).outputs
  expected_kl = float(class_kl(student, teacher, 2.0))
  assert float(extra["distill"]) == pytest.approx(expected_kl, rel=1e-4)
  assert float(total) == pytest.approx(float(base) + 0.5 * expected_kl, rel=1e-5)
  assert expected_kl > 0
