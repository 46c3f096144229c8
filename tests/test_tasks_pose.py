"""PoseTask: Gaussian targets, visibility-masked losses, sub-pixel decoding, PCK accumulation.

Oracles: hand-computed heatmap values, a NumPy reference heatmap, exact Gaussians for the
decoders, zero loss on perfect outputs, and `evaluation.pck` on the pooled arrays.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.data.spec import NUM_JOINTS
from resq_jax.evaluation import pck, pck_counts
from resq_jax.nn import SegNet, segnet_preset
from resq_jax.tasks import pose
from resq_jax.tasks.pose import PoseTask

J = NUM_JOINTS


def _random_joints(rng, lead, height, width, margin=3.0):
  x = rng.uniform(margin, width - 1 - margin, size=(*lead, J))
  y = rng.uniform(margin, height - 1 - margin, size=(*lead, J))
  return np.stack([x, y], axis=-1).astype(np.float32)


def test_heatmap_peak_and_hand_values():
  joints = np.zeros((J, 2), np.float32)
  joints[0] = (10.0, 5.0)  # x = column 10, y = row 5
  h = np.asarray(pose.gaussian_heatmaps(jnp.asarray(joints), 16, 20, sigma=2.0))
  assert h.shape == (16, 20, J)
  assert np.unravel_index(np.argmax(h[..., 0]), (16, 20)) == (5, 10)
  assert h[5, 10, 0] == pytest.approx(1.0)
  assert h[5, 11, 0] == pytest.approx(math.exp(-1 / 8))  # one pixel right: d^2 = 1, 2 s^2 = 8
  assert h[7, 10, 0] == pytest.approx(math.exp(-4 / 8))  # two rows down
  assert h[6, 12, 0] == pytest.approx(math.exp(-5 / 8))
  # NumPy reference for a sub-pixel joint.
  joints[1] = (3.3, 12.6)
  rows, cols = np.mgrid[0:16, 0:20]
  ref = np.exp(-((cols - 3.3) ** 2 + (rows - 12.6) ** 2) / (2 * 1.5**2))
  h = np.asarray(pose.gaussian_heatmaps(jnp.asarray(joints), 16, 20, sigma=1.5))
  np.testing.assert_allclose(h[..., 1], ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
  "task",
  [
    PoseTask(),
    PoseTask(decode="soft_argmax"),
    PoseTask(loss_type="mse"),
    PoseTask(loss_type="mse", decode="soft_argmax"),
  ],
  ids=["softmax-argmax", "softmax-soft", "mse-argmax", "mse-soft"],
)
def test_decoding_a_gaussian_returns_the_joint(task):
  rng = np.random.default_rng(0)
  joints = _random_joints(rng, (2, 3), 64, 48, margin=8.0)  # [B, T, J, 2], sub-pixel
  log_h = pose.log_heatmaps(jnp.asarray(joints), 64, 48, task.sigma)
  outputs = log_h if task.loss_type == "softmax" else jnp.exp(log_h)
  pred = np.asarray(jax.jit(task.predict)(outputs))
  assert pred.shape == joints.shape
  assert np.abs(pred - joints).max() < 0.1


def test_argmax_refinement_is_bounded_at_the_border():
  joints = np.full((J, 2), 20.0, np.float32)
  joints[0] = (0.2, 28.8)  # peak in column 0: no left neighbour, so no refinement in x
  joints[1] = (12.3, 31.4)  # peak in the last row: no refinement in y
  pred = np.asarray(PoseTask().predict(pose.log_heatmaps(jnp.asarray(joints), 32, 32, 2.0)))
  assert pred[0, 0] == 0.0 and abs(pred[0, 1] - 28.8) < 0.1
  assert abs(pred[1, 0] - 12.3) < 0.1 and pred[1, 1] == 31.0
  assert np.abs(pred - joints).max() <= 0.5


@pytest.mark.parametrize("loss_type", pose.LOSS_TYPES)
def test_loss_is_zero_on_perfect_outputs_and_masks_invisible_joints(loss_type):
  task = PoseTask(loss_type=loss_type, sigma=1.5)
  rng = np.random.default_rng(1)
  joints = jnp.asarray(_random_joints(rng, (4,), 32, 32))  # [N, J, 2]
  visible = np.ones((4, J), bool)
  log_h = pose.log_heatmaps(joints, 32, 32, task.sigma)
  perfect = log_h if loss_type == "softmax" else jnp.exp(log_h)
  targets = {"joints": joints, "visible": jnp.asarray(visible)}
  loss, metrics = jax.jit(task.loss)(perfect, targets)
  assert float(loss) == pytest.approx(0.0, abs=1e-5)
  assert float(metrics["pixel_error"]) < 0.05

  # Corrupt joint 3 of frame 1 (its map moved by 10 pixels): counted only while visible.
  corrupt = perfect.at[1, :, :, 3].set(jnp.roll(perfect[1, :, :, 3], 10, axis=1))
  assert float(task.loss(corrupt, targets)[0]) > 1e-4
  visible[1, 3] = False
  masked = {"joints": joints, "visible": jnp.asarray(visible)}
  assert float(task.loss(corrupt, masked)[0]) == pytest.approx(0.0, abs=1e-5)

  # The loss is the mean over visible joints of the per-joint loss.
  per_joint = (pose.heatmap_kl if loss_type == "softmax" else pose.heatmap_mse)(
    corrupt, joints, task.sigma
  )
  visible[1, 3] = True
  visible[0, :5] = False
  vis = jnp.asarray(visible)
  expected = float(jnp.sum(jnp.where(vis, per_joint, 0.0))) / visible.sum()
  assert float(task.loss(corrupt, {"joints": joints, "visible": vis})[0]) == pytest.approx(
    expected, rel=1e-5
  )


def test_kl_of_flat_logits_is_log_pixels_minus_target_entropy():
  task = PoseTask(sigma=2.0)
  joints = jnp.full((1, J, 2), 15.5, jnp.float32)
  log_t = np.asarray(pose.log_heatmaps(joints, 32, 32, 2.0), np.float64)[0, ..., 0]
  p = np.exp(log_t) / np.exp(log_t).sum()
  entropy = -np.sum(p * np.log(p))
  loss, _ = task.loss(
    jnp.zeros((1, 32, 32, J), jnp.float32), {"joints": joints, "visible": jnp.ones((1, J), bool)}
  )
  assert float(loss) == pytest.approx(math.log(32 * 32) - entropy, rel=1e-4)


def _targets(rng, b, t, size=64):
  joints = _random_joints(rng, (b, t), size, size)
  visible = rng.random((b, t, J)) < 0.9
  x0 = rng.uniform(0, 20, (b, t))
  y0 = rng.uniform(0, 20, (b, t))
  bbox = np.stack(
    [x0, y0, x0 + rng.uniform(20, 40, (b, t)), y0 + rng.uniform(20, 40, (b, t))], axis=-1
  ).astype(np.float32)
  bbox[0, 0] = 0.0  # a frame whose person is hidden: not evaluated
  return {"joints": joints, "visible": visible, "bbox": bbox}


def test_accumulator_equals_pck_on_pooled_arrays():
  rng = np.random.default_rng(2)
  acc = PoseTask().new_accumulator()
  preds, targets = [], []
  for b in (3, 2, 4):
    tgt = _targets(rng, b, 5)
    pred = tgt["joints"] + rng.normal(0, 5, tgt["joints"].shape).astype(np.float32)
    acc.update(pred, tgt)
    preds.append(pred)
    targets.append(tgt)
  pooled = {k: np.concatenate([t[k] for t in targets]) for k in targets[0]}
  pred = np.concatenate(preds)
  result = acc.result()
  expected = pck(pred, pooled["joints"], pooled["visible"], pooled["bbox"], 0.2)
  assert 0.2 < expected < 0.9  # the noise makes both outcomes common
  assert result["pck"] == pytest.approx(expected, abs=1e-12)
  correct, evaluated = pck_counts(pred, pooled["joints"], pooled["visible"], pooled["bbox"])
  assert result["joints_evaluated"] == evaluated.sum()
  np.testing.assert_allclose(list(result["pck_per_joint"].values()), correct / evaluated)
  assert result["clips"] == 9
  lo, hi = result["pck_ci95"]
  assert lo <= result["pck"] <= hi and hi - lo < 0.3
  with pytest.raises(ValueError, match="predictions must be"):
    acc.update(pred[:, :, :5], pooled)  # 5 joints into a 15-joint accumulator


def test_pck_is_one_when_predictions_equal_ground_truth():
  rng = np.random.default_rng(3)
  acc = PoseTask().new_accumulator()
  tgt = _targets(rng, 4, 3)
  acc.update(tgt["joints"].copy(), tgt)
  result = acc.result()
  assert result["pck"] == 1.0
  assert result["pck_ci95"] == [1.0, 1.0]
  # Hidden frame (bbox zero) and invisible joints are not evaluated.
  assert result["joints_evaluated"] == tgt["visible"][:, :].sum() - tgt["visible"][0, 0].sum()


def test_prepare_loss_and_gradient_through_segnet():
  task = pose.TASK
  rng = np.random.default_rng(4)
  tgt = _targets(rng, 2, 2, size=32)
  batch = {
    "frames": rng.integers(0, 256, (2, 2, 32, 32, 3), dtype=np.uint8),
    "joints": tgt["joints"],
    "joint_visible": tgt["visible"],
    "bbox": tgt["bbox"],
    "semantic": np.zeros((2, 2, 32, 32), np.uint8),
  }
  frames, targets = task.prepare(batch)
  assert frames.dtype == jnp.float32 and frames.shape == (2, 2, 32, 32, 3)
  assert targets["visible"].dtype == jnp.bool_
  model = SegNet(num_classes=task.num_outputs(), **segnet_preset("tiny"))
  flat = frames.reshape(-1, 32, 32, 3)
  variables = model.init(jax.random.key(0), flat, phase="key")
  flat_targets = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), targets)

  @jax.jit
  def loss_fn(params):
    out = model.apply({**variables, "params": params}, flat)
    return task.loss(out, flat_targets)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert np.isfinite(float(metrics["pixel_error"]))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  # Clip layout [B, T, H, W, J] takes [B, T, ...] targets.
  out = model.apply(variables, flat).reshape(2, 2, 32, 32, J)
  pred = task.predict(out)
  assert pred.shape == (2, 2, J, 2)
  assert float(task.loss(out, targets)[0]) == pytest.approx(float(loss), rel=1e-5)


def test_registry_and_validation():
  from resq_jax.tasks import get_task

  task = get_task("pose")
  assert task is pose.TASK and task.metric_name == "pck" and task.num_outputs() == J
  assert hash(task) == hash(PoseTask())
  for bad in (dict(loss_type="l1"), dict(decode="mean"), dict(sigma=0.0)):
    with pytest.raises(ValueError):
      PoseTask(**bad)
  with pytest.raises(ValueError, match="leading axes"):
    pose.TASK.loss(
      jnp.zeros((2, 8, 8, J)), {"joints": jnp.zeros((3, J, 2)), "visible": jnp.ones((3, J), bool)}
    )


def test_pck_interval_is_the_shared_bootstrap_with_the_former_numbers():
  """The interval comes from `bootstrap_ci`; the oracle is the accumulator's former inline
  computation (one (R, N) draw of clip indices, pooled ratio per resample, 2.5 / 97.5
  percentiles), which must give the very same numbers for the same seed."""
  rng = np.random.default_rng(5)
  acc = PoseTask().new_accumulator()
  for b in (4, 3):
    tgt = _targets(rng, b, 4)
    acc.update(tgt["joints"] + rng.normal(0, 6, tgt["joints"].shape).astype(np.float32), tgt)
  result = acc.result()
  clips = np.concatenate(acc._clips)
  picks = np.random.default_rng(0).integers(0, len(clips), size=(1000, len(clips)))
  sums = clips[picks].sum(axis=1)
  ok = sums[:, 1] > 0
  expected = np.percentile(sums[ok, 0] / sums[ok, 1], [2.5, 97.5])
  assert result["pck_ci"] == [float(v) for v in expected]
  assert result["pck_ci95"] == result["pck_ci"]  # the older name of the same interval


def test_fidelity_joint_distance_and_relative_l2():
  """Log-Gaussian heatmaps decode exactly to their centres, so joints moved by (3, 4) pixels in
  clip 0 are 5 pixels from the reference's; clip 1 is the reference itself (exactly 0)."""
  rng = np.random.default_rng(6)
  joints = _random_joints(rng, (2, 3), 32, 32, margin=6.0)
  moved = joints.copy()
  moved[0] += np.array([3.0, -4.0], np.float32)
  ref = pose.log_heatmaps(joints, 32, 32, 2.0)  # [2, 3, 32, 32, J]
  out = pose.log_heatmaps(moved, 32, 32, 2.0)
  values = jax.jit(PoseTask().fidelity)(out, ref)
  np.testing.assert_allclose(values["kp_dist"], [5.0, 0.0], atol=1e-3)
  np.testing.assert_allclose(values["kp_dist_by_t"], [[5.0] * 3, [0.0] * 3], atol=1e-3)
  assert float(values["kp_dist"][1]) == 0.0 and float(values["rel_l2"][1]) == 0.0
  d, r = np.asarray(out, np.float64) - np.asarray(ref), np.asarray(ref, np.float64)
  np.testing.assert_allclose(
    values["rel_l2"][0], np.sqrt((d[0] ** 2).sum() / (r[0] ** 2).sum()), rtol=1e-5
  )
  assert PoseTask.fidelity_error_name == "kp_dist" and "kp_dist" in values
