"""Bootstrap intervals over clips, per-clip confusion matrices and fidelity values: statistical
bounds, hand-built cases and NumPy references."""

import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.evaluation import metrics
from resq_jax.tasks.segmentation import MiouAccumulator


def test_bootstrap_ci_of_the_mean_covers_at_the_nominal_rate():
  """Over 300 data sets of 40 N(3, 2^2) values, the 95% interval of the mean should hold 3 in
  about 93.5% of them (the percentile bootstrap under-covers at n = 40: its width uses the
  biased standard deviation and z instead of t). With 300 draws the binomial standard deviation
  is 1.4%, so [89%, 99%] is a > 3-sigma band (measured: 91%); the mean width should be near the
  normal interval's 2 * 1.96 * 2 / sqrt(40) = 1.24 (measured: 1.20)."""
  rng = np.random.default_rng(0)
  hits, widths = 0, []
  for seed in range(300):
    data = rng.normal(3.0, 2.0, 40)
    lo, hi = metrics.bootstrap_ci(data, np.mean, num_resamples=400, seed=seed)
    hits += lo <= 3.0 <= hi
    widths.append(hi - lo)
  assert 0.89 <= hits / 300 <= 0.99
  assert np.mean(widths) == pytest.approx(2 * 1.96 * 2.0 / np.sqrt(40), rel=0.1)


def test_bootstrap_ci_hand_cases():
  # Constant data: every resample has the same mean, a zero-width interval.
  assert metrics.bootstrap_ci(np.full(10, 0.7), np.mean) == (pytest.approx(0.7),) * 2
  # Two clips 0 and 1: resample means are 0 (1/4), 0.5 (1/2) and 1 (1/4), so the 2.5% and
  # 97.5% percentiles of 1000 resamples fall inside the blocks of 0 and of 1 exactly.
  assert metrics.bootstrap_ci(np.array([0.0, 1.0]), np.mean) == (0.0, 1.0)
  # Fewer than 2 clips or no resample: no interval.
  assert all(np.isnan(metrics.bootstrap_ci(np.array([1.0]), np.mean)))
  assert all(np.isnan(metrics.bootstrap_ci(np.arange(3.0), np.mean, num_resamples=0)))
  # Non-finite statistics are dropped; none finite: no interval.
  assert all(np.isnan(metrics.bootstrap_ci(np.arange(3.0), lambda x: np.nan)))
  # Fixed seed: the same numbers; another seed: other resamples.
  data = np.random.default_rng(1).normal(size=30)
  assert metrics.bootstrap_ci(data, np.mean, seed=4) == metrics.bootstrap_ci(data, np.mean, seed=4)
  assert metrics.bootstrap_ci(data, np.mean, seed=4) != metrics.bootstrap_ci(data, np.mean, seed=5)
  # A narrower level gives a nested interval.
  lo90, hi90 = metrics.bootstrap_ci(data, np.mean, level=0.9)
  lo95, hi95 = metrics.bootstrap_ci(data, np.mean)
  assert lo95 <= lo90 < hi90 <= hi95
  with pytest.raises(ValueError, match="level"):
    metrics.bootstrap_ci(data, np.mean, level=95)


def _numpy_confusion(pred, label, c, ignore=255):
  keep = label.ravel() != ignore
  cm = np.zeros((c, c), np.int64)
  np.add.at(cm, (label.ravel()[keep].astype(np.int64), pred.ravel()[keep]), 1)
  return cm


def test_clip_confusion_matrices_match_numpy_per_clip():
  rng = np.random.default_rng(2)
  pred = rng.integers(0, 4, (3, 2, 5, 6)).astype(np.int32)
  label = rng.integers(0, 4, (3, 2, 5, 6)).astype(np.int32)
  label[rng.random(label.shape) < 0.2] = 255
  got = np.asarray(metrics.clip_confusion_matrices(pred, label, num_classes=4))
  for b in range(3):
    np.testing.assert_array_equal(got[b], _numpy_confusion(pred[b], label[b], 4))
  acc = metrics.ConfusionAccumulator(4, per_clip=True, flush_every=1)
  acc.update(pred[:2], label[:2])
  acc.update(pred[2:], label[2:])
  np.testing.assert_array_equal(acc.clip_matrices(), got)
  np.testing.assert_array_equal(acc.result(), _numpy_confusion(pred, label, 4))
  acc.add(got[:1])
  assert acc.clip_matrices().shape == (4, 4, 4)
  with pytest.raises(ValueError, match="per_clip"):
    metrics.ConfusionAccumulator(4).clip_matrices()
  with pytest.raises(ValueError):
    acc.add(got[0])  # a [C, C] matrix into a per-clip accumulator


# Two hand-built clips of 2 classes (1 frame of 1 x 4 pixels each).
#   clip A: labels 0 0 1 1, predicted 0 0 1 1 -> IoU 1, 1: mIoU 1.
#   clip B: labels 0 0 1 1, predicted 1 1 1 1 -> IoU 0 (class 0), 2/4 (class 1): mIoU 0.25.
#   A + B: class 0 TP 2, FN 2 -> 1/2; class 1 TP 4, FP 2 -> 4/6: mIoU 7/12.
CLIP_LABELS = np.array([[[[0, 0, 1, 1]]], [[[0, 0, 1, 1]]]], np.int32)
CLIP_PREDS = np.array([[[[0, 0, 1, 1]]], [[[1, 1, 1, 1]]]], np.int32)


def test_miou_interval_hand_built_two_clips():
  acc = MiouAccumulator(2)
  acc.update(CLIP_PREDS, CLIP_LABELS)
  result = acc.result()
  assert result["miou"] == pytest.approx(7 / 12) and result["clips"] == 2
  # The identity resample (the clips as they are) gives back the point estimate, in any order.
  clips = acc.clip_confusions()
  assert metrics.miou_of_clips(clips) == pytest.approx(result["miou"])
  assert metrics.miou_of_clips(clips[::-1]) == pytest.approx(result["miou"])
  # Resamples: BB (1/4) -> 0.25, AB/BA (1/2) -> 7/12, AA (1/4) -> 1: the percentiles land in
  # the BB and AA blocks.
  assert result["miou_ci"] == [pytest.approx(0.25), pytest.approx(1.0)]
  # Pixel accuracy: A 4/4, B 2/4, pooled 6/8.
  assert result["pixel_accuracy"] == pytest.approx(0.75)
  assert result["pixel_accuracy_ci"] == [pytest.approx(0.5), pytest.approx(1.0)]


def test_miou_interval_brackets_the_estimate_on_random_clips():
  rng = np.random.default_rng(3)
  acc = MiouAccumulator(3)
  for _ in range(4):
    label = rng.integers(0, 3, (5, 2, 6, 6)).astype(np.int32)
    pred = np.where(rng.random(label.shape) < 0.7, label, rng.integers(0, 3, label.shape))
    acc.update(pred.astype(np.int32), label)
  result = acc.result()
  lo, hi = result["miou_ci"]
  assert lo < result["miou"] < hi and hi - lo < 0.2
  lo, hi = result["pixel_accuracy_ci"]
  assert lo < result["pixel_accuracy"] < hi
  # Same data, same seed: the same interval (the bootstrap is reproducible).
  again = MiouAccumulator(3)
  again._confusion.add(acc.clip_confusions())
  assert again.result()["miou_ci"] == result["miou_ci"]


def test_relative_l2_matches_numpy():
  rng = np.random.default_rng(4)
  ref = rng.normal(size=(2, 3, 4, 4, 5)).astype(np.float32)
  out = ref + 0.1 * rng.normal(size=ref.shape).astype(np.float32)
  out[1] = ref[1]  # clip 1: identical
  per_clip, per_frame = metrics.relative_l2(jnp.asarray(out), jnp.asarray(ref))
  d, r = out.astype(np.float64) - ref, ref.astype(np.float64)
  expected = np.sqrt((d**2).sum(axis=(1, 2, 3, 4)) / (r**2).sum(axis=(1, 2, 3, 4)))
  np.testing.assert_allclose(per_clip, expected, rtol=1e-5)
  np.testing.assert_allclose(
    per_frame, np.sqrt((d**2).sum(axis=(2, 3, 4)) / (r**2).sum(axis=(2, 3, 4))), rtol=1e-5
  )
  assert float(per_clip[1]) == 0.0 and np.all(np.asarray(per_frame[1]) == 0.0)
  zero = jnp.zeros((1, 2, 3))
  np.testing.assert_array_equal(metrics.relative_l2(zero, zero)[0], [0.0])
  np.testing.assert_array_equal(metrics.relative_l2(zero + 1.0, zero)[0], [np.inf])


def test_fidelity_accumulator_means_intervals_and_curves():
  acc = metrics.FidelityAccumulator()
  acc.update({"rel_l2": np.array([0.1, 0.3]), "rel_l2_by_t": np.array([[0.0, 0.2], [0.2, 0.4]])})
  acc.update({"rel_l2": np.array([0.2]), "rel_l2_by_t": np.array([[0.1, 0.3, 0.5]])})
  result = acc.result()
  assert result["rel_l2"] == pytest.approx(0.2)
  lo, hi = result["rel_l2_ci"]
  assert 0.1 <= lo <= 0.2 <= hi <= 0.3
  # Frame 2 exists only in the last clip.
  np.testing.assert_allclose(result["rel_l2_by_t"], [0.1, 0.3, 0.5])
  np.testing.assert_array_equal(acc.clip_values("rel_l2"), [0.1, 0.3, 0.2])
  with pytest.raises(ValueError, match="one value per clip"):
    acc.update({"rel_l2": np.zeros((2, 3))})
