"""evaluate_model's fidelity to the float model against NumPy on run_clip's outputs; the FP model
against itself is exact (agreement 1, rel_l2 0)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.evaluation import bootstrap_ci
from resq_jax.experiment import evaluate
from resq_jax.experiment.models import init_variables
from resq_jax.experiment.spec import Setting
from resq_jax.nn import SegNet, run_clip, segnet_preset
from resq_jax.quant.recipe import float_recipe
from resq_jax.tasks.segmentation import SegmentationTask

C, B, T, HW = 3, 2, 3, 32
TASK = SegmentationTask(num_classes=C)
SETTING = Setting(name="FP32", recipe=float_recipe(), period=1, source="fp")


@pytest.fixture(scope="module")
def setup():
  rng = np.random.default_rng(0)
  batches = [
    {
      "frames": rng.integers(0, 256, (B, T, HW, HW, 3), dtype=np.uint8),
      "semantic": rng.integers(0, C, (B, T, HW, HW), dtype=np.uint8),
    }
    for _ in range(2)
  ]
  model = SegNet(num_classes=C, **segnet_preset("tiny"))
  variables = jax.jit(init_variables, static_argnums=(0, 1))(
    model, (1, HW, HW, 3), jax.random.key(0)
  )
  rng = np.random.default_rng(1)
  noisy = dict(
    variables,
    params=jax.tree.map(
      lambda v: v + 0.05 * rng.standard_normal(v.shape, np.float32), variables["params"]
    ),
  )
  return model, variables, noisy, batches


def test_float_model_against_itself_is_exact(setup):
  model, variables, _, batches = setup
  # The FP row of the sweep (same model and variables: its own outputs are the reference) and
  # an equal copy of the variables (a second forward through the same compiled program).
  for reference in ((model, variables), (model.clone(), jax.tree.map(jnp.copy, variables))):
    result = evaluate.evaluate_model(TASK, model, variables, batches, SETTING, reference)
    m = result.metrics
    assert m["agreement"] == 1.0 and m["rel_l2"] == 0.0
    assert m["agreement_ci"] == [1.0, 1.0] and m["rel_l2_ci"] == [0.0, 0.0]
    assert m["agreement_by_t"] == [1.0] * T and m["rel_l2_by_t"] == [0.0] * T
    assert result.fidelity_error == "rel_l2" and result.to_row()["fidelity_error"] == "rel_l2"


def test_fidelity_of_a_perturbed_model_matches_numpy(setup):
  model, variables, noisy, batches = setup
  result = evaluate.evaluate_model(TASK, model, noisy, batches, SETTING, (model, variables))
  agreement, rel, agreement_t, rel_t = [], [], [], []
  for batch in batches:
    frames = TASK.prepare(batch)[0]
    y = np.asarray(run_clip(model, noisy, frames, period=1).outputs, np.float64)
    ref = np.asarray(run_clip(model, variables, frames, period=1).outputs, np.float64)
    same = y.argmax(-1) == ref.argmax(-1)
    agreement.append(same.mean(axis=(1, 2, 3)))
    agreement_t.append(same.mean(axis=(2, 3)))
    d2, r2 = ((y - ref) ** 2).sum(axis=(2, 3, 4)), (ref**2).sum(axis=(2, 3, 4))
    rel.append(np.sqrt(d2.sum(1) / r2.sum(1)))
    rel_t.append(np.sqrt(d2 / r2))
  agreement, rel = np.concatenate(agreement), np.concatenate(rel)
  m = result.metrics
  assert 0.0 < m["agreement"] < 1.0 and m["rel_l2"] > 0.0  # the noise changes the outputs
  assert m["agreement"] == pytest.approx(agreement.mean(), abs=1e-6)
  assert m["rel_l2"] == pytest.approx(rel.mean(), rel=1e-4)
  np.testing.assert_allclose(m["agreement_by_t"], np.concatenate(agreement_t).mean(0), atol=1e-6)
  np.testing.assert_allclose(m["rel_l2_by_t"], np.concatenate(rel_t).mean(0), rtol=1e-4)
  np.testing.assert_allclose(m["agreement_ci"], bootstrap_ci(agreement, np.mean), atol=1e-6)
  np.testing.assert_allclose(m["rel_l2_ci"], bootstrap_ci(rel, np.mean), rtol=1e-4)
  # The metric's interval over the 4 clips brackets it.
  lo, hi = m["miou_ci"]
  assert lo <= result.metric <= hi and m["clips"] == 2 * B
  # The compared error's value of every clip, in the order of the batches (7 digits), is kept
  # in the row for the claims' paired bootstrap; only that error's.
  row = result.to_row()
  assert len(row["rel_l2_per_clip"]) == 2 * B and "agreement_per_clip" not in row
  np.testing.assert_allclose(row["rel_l2_per_clip"], rel, rtol=1e-5)


def test_per_clip_errors_are_those_of_each_clip_evaluated_alone(setup, tmp_path):
  """The per-clip list of a 4-clip evaluation equals the error of each clip evaluated on its
  own, in order, and survives results.json (written and loaded back)."""
  from resq_jax.evaluation import load_results, write_results

  model, variables, noisy, batches = setup
  result = evaluate.evaluate_model(TASK, model, noisy, batches, SETTING, (model, variables))
  alone = [
    evaluate.evaluate_model(
      TASK, model, noisy, [{k: v[i : i + 1] for k, v in batch.items()}], SETTING, (model, variables)
    ).metrics["rel_l2"]
    for batch in batches
    for i in range(B)
  ]
  per_clip = result.metrics["rel_l2_per_clip"]
  np.testing.assert_allclose(per_clip, alone, rtol=1e-5)
  assert len(set(per_clip)) == len(per_clip)  # distinct clips: the order is checked
  write_results(tmp_path, [result.to_row()])
  (loaded,), _ = load_results(tmp_path)
  assert loaded["rel_l2_per_clip"] == per_clip
  assert evaluate.EvalResult.from_row(loaded).metrics["rel_l2_per_clip"] == per_clip


def test_without_reference_no_fidelity_and_old_rows_load(setup):
  model, variables, _, batches = setup
  result = evaluate.evaluate_model(TASK, model, variables, batches[:1], SETTING)
  assert result.fidelity_error is None
  assert not {"agreement", "rel_l2", "agreement_ci"} & set(result.metrics)
  row = dict(result.to_row(), fidelity_error="rel_l2", rel_l2=0.5)
  back = evaluate.EvalResult.from_row(row)
  assert back.fidelity_error == "rel_l2" and back.metrics["rel_l2"] == 0.5
  del row["fidelity_error"]  # a row written before fidelity existed
  assert evaluate.EvalResult.from_row(row).fidelity_error is None


def test_frame_precision_setting_counts_each_frame_at_its_chosen_candidate(setup):
  """A VideoIQ-style setting through evaluate_model: with a threshold no frame reaches, every
  frame after the first runs at the low candidate (W4A4), the first at the top (W8A8); outputs
  match the candidates run alone and BOPs per frame average (64 + (T-1) * 16) / T W8A8 units."""
  from resq_jax.experiment.models import init_from_fp
  from resq_jax.experiment.spec import FramePrecisionPlan
  from resq_jax.nn import calibrate_model
  from resq_jax.quant.recipe import fq_recipe

  model, variables, _, batches = setup
  clips = [TASK.prepare(b)[0] for b in batches]
  low, top = fq_recipe(4, 4), fq_recipe(8, 8)
  models, calibrated = [], []
  for recipe in (low, top):
    m = model.clone(recipe=recipe)
    v = init_from_fp(m, variables, (1, HW, HW, 3))
    models.append(m)
    calibrated.append(calibrate_model(m, float_model=model, variables=v, clips=clips, period=1))
  plan = FramePrecisionPlan((low, top), (1e6,))
  setting = Setting(
    name="VideoIQ", recipe=top, period=1, source="ptq", family_label="videoiq", frame_precision=plan
  )
  result = evaluate.evaluate_model(
    TASK, tuple(models), tuple(calibrated), batches, setting, (model, variables)
  )
  assert result.family == "videoiq"
  assert result.pct_w8a8 == pytest.approx(100.0 * (64 + (T - 1) * 16) / (64 * T))
  expected = []
  for frames in clips:
    y_low = np.asarray(run_clip(models[0], calibrated[0], frames, period=1).outputs)
    y_top = np.asarray(run_clip(models[1], calibrated[1], frames, period=1).outputs)
    y = np.concatenate([y_top[:, :1], y_low[:, 1:]], axis=1)
    ref = np.asarray(run_clip(model, variables, frames, period=1).outputs)
    expected.append((y.argmax(-1) == ref.argmax(-1)).mean(axis=(1, 2, 3)))
  assert result.metrics["agreement"] == pytest.approx(np.concatenate(expected).mean(), abs=1e-6)


def test_a_cached_reference_gives_the_same_rows_with_one_float_forward_per_batch(
  setup, monkeypatch
):
  """A sweep's ReferenceCache: the same metrics as a fresh reference for every setting, the
  float forward run once per batch (counted), and a batch that changed is refused."""
  model, variables, noisy, batches = setup
  plain = evaluate.evaluate_model(TASK, model, noisy, batches, SETTING, (model, variables))
  calls = []
  forward = evaluate.outputs_and_predict_clip

  def counted(m, *args, **kwargs):
    calls.append(m)
    return forward(m, *args, **kwargs)

  monkeypatch.setattr(evaluate, "outputs_and_predict_clip", counted)
  cache = evaluate.ReferenceCache(model, variables)
  for _ in range(2):  # two settings of a sweep (the same perturbed weights)
    cached = evaluate.evaluate_model(TASK, model, noisy, batches, SETTING, cache)
    assert cached.metrics["rel_l2_per_clip"] == plain.metrics["rel_l2_per_clip"]
    assert cached.metrics["agreement"] == plain.metrics["agreement"]
  # Per setting one forward of the evaluated weights per batch, plus the float reference's
  # forward per batch for the first setting only.
  assert len(calls) == 2 * len(batches) + len(batches)
  # The FP setting itself fills no second forward: its own outputs are the reference.
  calls.clear()
  fresh = evaluate.ReferenceCache(model, variables)
  fp = evaluate.evaluate_model(TASK, model, variables, batches, SETTING, fresh)
  assert len(calls) == len(batches) and fp.metrics["rel_l2"] == 0.0
  swapped = [batches[1], batches[0]]
  with pytest.raises(ValueError, match="evaluation batch 0 differs"):
    evaluate.evaluate_model(TASK, model, noisy, swapped, SETTING, fresh)
