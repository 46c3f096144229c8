"""The public evaluation API (evaluate_setting, setting_variables, eval_batches) against the
sweep's own rows, and the compiles a sweep pays, counted with jax.monitoring: one program per
(recipe, period), none for settings that differ only in their weights or calibration values,
none when the same setting is evaluated again."""

import contextlib
import importlib.util
import pathlib

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resq_jax.experiment import evaluate, inputs, models, parse, recipe_sweep
from resq_jax.experiment.spec import Setting
from resq_jax.nn import QConv, QConvTranspose, calibrate_model, observe
from resq_jax.quant.recipe import float_recipe, fq_recipe, resq_recipe
from resq_jax.tasks.segmentation import SegmentationTask
from resq_jax.training import Checkpointer, TrainState, checkpoint_dir

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMINGS = ("eval_seconds", "frames_per_s")


def load_config(**overrides):
  spec = importlib.util.spec_from_file_location("cfg_tiny_eval", ROOT / "configs" / "tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in overrides.items():
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
  return config


@contextlib.contextmanager
def compiles():
  """The names of the functions XLA compiles inside the block."""
  names = []

  def listener(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      names.append(kwargs.get("fun_name"))

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield names
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
  """The tiny config with init_from a fake FP run: random weights saved as step 0 with its
  config.json (what train.py leaves behind, without training), and its data built."""
  tmp = tmp_path_factory.mktemp("evaluate")
  config = load_config(**{"data.data_dir": str(tmp / "data"), "init_from": str(tmp / "fp")})
  experiment = parse.parse(config, num_devices=1, needs_init_from=True)
  model = models.make_model(experiment.model, experiment.task, float_recipe())
  shapes = models.abstract_variables(model, experiment.data.frame_shape)
  rng = np.random.default_rng(0)
  values = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), shapes)
  values["batch_stats"] = jax.tree.map(jnp.abs, values["batch_stats"])  # variances > 0
  state = TrainState.create(
    values["params"], optax.sgd(0.1), jax.random.key(0), values["batch_stats"]
  )
  with Checkpointer(checkpoint_dir(tmp / "fp"), save_every_steps=1, async_save=False) as ckpt:
    ckpt.save(0, state)
  (tmp / "fp" / "config.json").write_text(experiment.config_json)
  inputs.ensure_data(experiment.data)
  return experiment, tmp


def _same(a, b):
  ra, rb = a.to_row(), b.to_row()
  for key in TIMINGS:
    ra.pop(key), rb.pop(key)
  return ra == rb


def test_evaluate_setting_equals_the_sweep_row_and_compiles_nothing_again(experiment):
  experiment, tmp = experiment
  jax.clear_caches()  # count this sweep's compiles, whatever ran before in this process
  with compiles() as first:
    rows = evaluate.evaluate_sweep(experiment, str(tmp / "eval"))
  assert [r.name for r in rows] == [s.name for s in experiment.eval.sweep]
  # One evaluation program per setting (each has its own recipe or period), not more: the
  # float reference is the FP row's own program, the bit map plot reuses the dynamic one's.
  assert first.count("jit(outputs_and_predict_clip)") == len(experiment.eval.sweep)
  assert "jit(predict_clip)" not in first
  with compiles() as again:
    alone = [evaluate.evaluate_setting(experiment, s) for s in experiment.eval.sweep]
  assert again == []  # every program (load, calibration, evaluation) is reused
  for row, result in zip(rows, alone):
    assert _same(row, result), row.name
  # The pieces, by hand: the FQ row from setting_variables + eval_batches + evaluate_model.
  fq = experiment.eval.sweep[1]
  fp = evaluate.runs.load_fp(experiment, experiment.init_from)
  model, variables = evaluate.setting_variables(experiment, fq, *fp)
  by_hand = evaluate.evaluate_model(
    experiment.task, model, variables, evaluate.eval_batches(experiment), fq, reference=fp
  )
  assert _same(by_hand, rows[1])


def test_other_calibration_values_reuse_the_program_and_a_new_recipe_compiles_once(experiment):
  experiment, _ = experiment
  fq = experiment.eval.sweep[1]
  fp = evaluate.runs.load_fp(experiment, experiment.init_from)
  cache = evaluate.ReferenceCache(*fp)
  evaluate.evaluate_setting(experiment, fq, fp=fp, reference=cache)  # compiled (or cached)
  clips = evaluate.calibration_clips(experiment)
  other = observe(fp[0], fp[1], [0.5 * c for c in clips])  # other ranges: other values
  with compiles() as names:
    base = evaluate.evaluate_setting(experiment, fq, fp=fp, reference=cache)
    shifted = evaluate.evaluate_setting(experiment, fq, fp=fp, observations=other, reference=cache)
  assert "jit(outputs_and_predict_clip)" not in names
  assert base.metrics["rel_l2"] != shifted.metrics["rel_l2"]  # the values did change
  new = Setting(name="FQ W6A6", recipe=fq_recipe(6, 6), period=1, source="ptq")  # not in the sweep
  with compiles() as names:
    evaluate.evaluate_setting(experiment, new, fp=fp, reference=cache)
  assert names.count("jit(outputs_and_predict_clip)") == 1
  with compiles() as names:
    evaluate.evaluate_setting(experiment, new, fp=fp, reference=cache)
  assert names == []


class OwnNet(flax.linen.Module):
  """A user's own network (the README's): QConv layers that follow ``recipe``."""

  recipe: object = float_recipe()

  @flax.linen.compact
  def __call__(self, x, phase=None):
    x = flax.linen.relu(QConv(8, strides=(2, 2), use_bn=True, recipe=self.recipe)(x, phase))
    x = flax.linen.relu(QConvTranspose(8, (2, 2), strides=(2, 2), recipe=self.recipe)(x, phase))
    return QConv(3, kernel_size=(1, 1), recipe=self.recipe)(x, phase)


def test_sweep_recipes_of_an_own_model_equals_calibrating_by_hand():
  """sweep_recipes without a config: the FP row is exact against itself, every quantized row
  equals calibrate_model + evaluate_model by hand, and a second sweep compiles no program."""
  task = SegmentationTask(num_classes=3)
  rng = np.random.default_rng(0)
  batches = [
    {
      "frames": rng.integers(0, 256, (2, 4, 16, 16, 3), dtype=np.uint8),
      "semantic": rng.integers(0, 3, (2, 4, 16, 16), dtype=np.uint8),
    }
    for _ in range(2)
  ]
  clips = [task.prepare(b)[0] for b in batches[:1]]
  model = OwnNet()
  float_vars = model.init(jax.random.key(0), clips[0][:, 0])
  recipes = [float_recipe(), fq_recipe(8, 8), resq_recipe((8, 8), (4, 4), "closed")]
  jax.clear_caches()
  with compiles() as first:
    rows = recipe_sweep.sweep_recipes(
      model, float_vars, recipes, batches, task=task, calibration=clips, period=2
    )
  assert [r.name for r in rows] == ["FP32", "FQ W8A8", "ResQ K=2 closed W8A8/W4A4"]
  assert rows[0].metrics["rel_l2"] == 0.0 and rows[0].pct_w8a8 == pytest.approx(1600.0)
  assert rows[2].pct_w8a8 == pytest.approx(100.0 * (64 + 16) / 2 / 64)
  assert first.count("jit(outputs_and_predict_clip)") == 3
  for recipe, row in zip(recipes[1:], rows[1:]):
    quantized = model.clone(recipe=recipe)
    variables = calibrate_model(
      quantized,
      float_model=model,
      variables=models.init_from_fp(quantized, float_vars, (1, 16, 16, 3)),
      clips=clips,
      period=2,
    )
    setting = Setting(name=row.name, recipe=recipe, period=2, source="ptq")
    by_hand = evaluate.evaluate_model(
      task, quantized, variables, batches, setting, (model, float_vars)
    )
    assert _same(by_hand, row), row.name
  with compiles() as again:
    recipe_sweep.sweep_recipes(
      model, float_vars, recipes, batches, task=task, calibration=clips, period=2
    )
  assert "jit(outputs_and_predict_clip)" not in again


def test_adaptive_keyframes_are_a_setting_and_a_sweep_family(experiment):
  """Adaptive keyframes as a Setting (``trigger``) and sweep entries (configs/sweeps.py
  ``adaptive``): a trigger that can never fire equals the fixed-period setting exactly; one
  that fires on every frame leaves no residual to calibrate on, and says so."""
  exp, _ = experiment
  quant = load_config().quant.to_dict()
  base = {"mode": "resq", "period": 2, "name": "fixed"}
  fixed = parse.setting_from(quant, base)
  never = parse.setting_from(quant, {**base, "cut_threshold": 1e9, "name": "never"})
  always = parse.setting_from(quant, {**base, "drift_threshold": 1e-9, "name": "always"})
  assert never.trigger is not None and never.trigger.max_period == 2
  assert never.family == "resq_adaptive" and fixed.family == "resq"
  rows = {s.name: evaluate.evaluate_setting(exp, s).to_row() for s in (fixed, never)}
  for key in ("miou", "pct_w8a8", "rel_l2"):
    np.testing.assert_array_equal(rows["never"][key], rows["fixed"][key])
  assert rows["never"]["family"] == "resq_adaptive"
  with pytest.raises(ValueError, match="the trigger made every frame of the clips a keyframe"):
    evaluate.evaluate_setting(exp, always)
  config = load_config()
  config.eval.sweep = "adaptive"
  names = [s.name for s in parse.parse(config, num_devices=1).eval.sweep]
  assert names == [
    "FP32",
    "Hold K=4",
    "Hold K=4 adaptive cut=0.25",
    "ResQ K=4 closed W8A8/W4A4",
    "ResQ K=4 closed W8A8/W4A4 adaptive cut=0.25",
  ]
