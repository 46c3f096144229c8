"""Evaluation metrics against NumPy references and hand-computed values."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.evaluation import davis as davis_metrics
from resq_jax.evaluation import metrics


def _numpy_confusion(pred, label, c, ignore=255):
  """Reference: np.add.at over the non-ignored pixels (rows = label, columns = prediction)."""
  pred, label = np.asarray(pred).ravel(), np.asarray(label).ravel().astype(np.int64)
  keep = label != ignore
  cm = np.zeros((c, c), np.int64)
  np.add.at(cm, (label[keep], pred[keep]), 1)
  return cm


def _random_batch(rng, shape, c, ignore_frac=0.2):
  pred = rng.integers(0, c, shape).astype(np.int32)
  label = rng.integers(0, c, shape).astype(np.uint8)
  label[rng.random(shape) < ignore_frac] = 255
  return pred, label


def test_confusion_matrix_matches_numpy_with_ignored_pixels():
  rng = np.random.default_rng(0)
  pred, label = _random_batch(rng, (2, 3, 8, 8), 5)
  got = metrics.confusion_matrix(jnp.asarray(pred), jnp.asarray(label), num_classes=5)
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(got), _numpy_confusion(pred, label, 5))
  # Every non-ignored pixel is counted exactly once.
  assert int(got.sum()) == int((label != 255).sum())


def test_confusion_matrix_custom_ignore_index_and_out_of_range_labels():
  pred = jnp.asarray([0, 1, 2, 1, 0, 2], jnp.int32)
  label = jnp.asarray([0, 1, 7, 3, 2, 2], jnp.int32)  # 7 = ignore, 3 >= C: both dropped
  got = np.asarray(metrics.confusion_matrix(pred, label, num_classes=3, ignore_index=7))
  expected = np.zeros((3, 3), np.int64)
  expected[0, 0] = expected[1, 1] = expected[2, 0] = expected[2, 2] = 1
  np.testing.assert_array_equal(got, expected)


def test_confusion_matrix_traces_once_and_guards_int32_overflow(monkeypatch):
  rng = np.random.default_rng(1)
  cm = functools.partial(metrics.confusion_matrix, num_classes=4)
  traces = []
  bincount = jnp.bincount

  def counting_bincount(*args, **kwargs):  # runs only while tracing
    traces.append(1)
    return bincount(*args, **kwargs)

  monkeypatch.setattr(jnp, "bincount", counting_bincount)
  for _ in range(3):
    pred, label = _random_batch(rng, (3, 5, 7), 4)  # a shape no other test uses
    np.testing.assert_array_equal(np.asarray(cm(pred, label)), _numpy_confusion(pred, label, 4))
  assert len(traces) == 1  # new values, same shapes: no retrace
  huge = jax.ShapeDtypeStruct((2**16, 2**15), jnp.int32)  # 2^31 pixels, never allocated
  with pytest.raises(ValueError, match="overflow"):
    jax.eval_shape(cm, huge, huge)
  with pytest.raises(ValueError, match="same shape"):
    cm(jnp.zeros((2, 2), jnp.int32), jnp.zeros((2, 3), jnp.int32))


def test_accumulator_over_batches_equals_one_shot_and_counts_in_int64():
  rng = np.random.default_rng(2)
  batches = [_random_batch(rng, (2, 2, 6, 6), 6) for _ in range(5)]
  acc = metrics.ConfusionAccumulator(6, flush_every=2)  # exercises periodic and final flush
  for pred, label in batches:
    acc.update(jnp.asarray(pred), jnp.asarray(label))
  all_pred = np.concatenate([p for p, _ in batches])
  all_label = np.concatenate([lab for _, lab in batches])
  one_shot = _numpy_confusion(all_pred, all_label, 6)
  total = acc.result()
  assert total.dtype == np.int64
  np.testing.assert_array_equal(total, one_shot)
  # Totals beyond int32 (a split of billions of pixels) stay exact on the host.
  big = np.full((6, 6), 2**31 - 1, np.int64)
  acc.add(big)
  acc.add(big)
  np.testing.assert_array_equal(acc.result(), one_shot + 2 * big)
  acc.reset()
  np.testing.assert_array_equal(acc.result(), np.zeros((6, 6), np.int64))


def test_miou_hand_example_with_absent_and_only_predicted_classes():
  # rows = label. Class 2 is predicted once but never labelled (IoU 0, counted);
  # class 3 appears nowhere (NaN, left out of the mean).
  cm = np.array([[4, 1, 1, 0], [2, 6, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
  mean, per_class = metrics.miou(cm)
  # IoU0 = 4 / (6 + 6 - 4), IoU1 = 6 / (8 + 7 - 6), IoU2 = 0 / 1.
  np.testing.assert_allclose(per_class[:3], [0.5, 2 / 3, 0.0], rtol=1e-12)
  assert np.isnan(per_class[3])
  assert mean == pytest.approx((0.5 + 2 / 3 + 0.0) / 3, rel=1e-12)
  assert metrics.pixel_accuracy(cm) == pytest.approx(10 / 14, rel=1e-12)
  empty_mean, empty_per_class = metrics.miou(np.zeros((3, 3), np.int64))
  assert np.isnan(empty_mean) and np.isnan(empty_per_class).all()
  assert np.isnan(metrics.pixel_accuracy(np.zeros((2, 2))))


def test_pck_hand_example():
  # Box 10 x 20 -> max(w, h) = 20, threshold 0.2 * 20 = 4 pixels.
  gt = np.array([[[5, 5], [5, 10], [5, 15], [2, 2]], [[1, 1], [1, 1], [1, 1], [1, 1]]], np.float32)
  pred = gt + np.array(
    [[[3, 0], [3, 4], [0, 4], [50, 50]], [[0, 0], [0, 0], [0, 0], [0, 0]]], np.float32
  )
  visible = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
  # Frame 2 has an empty box (person out of view): not evaluated.
  bbox = np.array([[0, 0, 10, 20], [3, 3, 3, 3]], np.float32)
  # Distances 3 (correct), 5 (wrong), 4 (correct: on the threshold); joint 3 invisible.
  assert metrics.pck(pred, gt, visible, bbox) == pytest.approx(2 / 3)
  correct, evaluated = metrics.pck_counts(pred, gt, visible, bbox)
  np.testing.assert_array_equal(correct, [1, 0, 1, 0])
  np.testing.assert_array_equal(evaluated, [1, 1, 1, 0])
  # A stricter alpha: threshold 2 pixels, no joint is correct.
  assert metrics.pck(pred, gt, visible, bbox, alpha=0.1) == 0.0
  assert np.isnan(metrics.pck(pred, gt, np.zeros_like(visible), bbox))


# --- DAVIS J&F ---------------------------------------------------------------------------------
def _square(size=10, top=3, left=3, side=4):
  mask = np.zeros((size, size), bool)
  mask[top : top + side, left : left + side] = True
  return mask


def test_seg2bmap_marks_4k_pixels_of_a_square():
  b = davis_metrics.seg2bmap(_square())  # rows / columns 3-6
  # The row above and the column left of the square (outside, 5 + 4 pixels) and its own
  # right column and bottom row (inside, 4 + 3 pixels).
  want = np.zeros((10, 10), bool)
  want[2, 2:7] = True
  want[3:7, 2] = True
  want[3:7, 6] = True
  want[6, 3:6] = True
  np.testing.assert_array_equal(b, want)
  assert b.sum() == 16


def test_j_and_f_identical_disjoint_and_empty_masks():
  sq = _square()
  assert davis_metrics.region_similarity(sq, sq) == 1.0
  assert davis_metrics.boundary_f_measure(sq, sq) == 1.0
  far = np.zeros((10, 10), bool)
  far[8:10, 8:10] = True  # disjoint, boundaries 2+ pixels apart
  assert davis_metrics.region_similarity(sq, far) == 0.0
  assert davis_metrics.boundary_f_measure(sq, far, bound_th=1) == 0.0
  empty = np.zeros((10, 10), bool)
  # DAVIS: both empty J = F = 1; one empty J = F = 0.
  assert davis_metrics.region_similarity(empty, empty) == 1.0
  assert davis_metrics.boundary_f_measure(empty, empty) == 1.0
  assert davis_metrics.region_similarity(sq, empty) == 0.0
  assert davis_metrics.boundary_f_measure(sq, empty) == 0.0
  assert davis_metrics.boundary_f_measure(empty, sq) == 0.0


def test_j_and_f_square_shifted_by_one_pixel():
  gt, pred = _square(), _square(left=4)
  # J: overlap 4 x 3 = 12, union 4 x 5 = 20.
  assert davis_metrics.region_similarity(gt, pred) == pytest.approx(0.6)
  # Tolerance 1 pixel (also the default on a 10 x 10 image: ceil(0.008 * 14.1) = 1): every
  # boundary pixel has a partner one column away, P = R = F = 1.
  assert davis_metrics.boundary_tolerance((10, 10)) == 1
  assert davis_metrics.boundary_f_measure(gt, pred, bound_th=1) == 1.0
  assert davis_metrics.boundary_f_measure(gt, pred) == 1.0
  # Tolerance 0 (exact matches): of the 16 boundary pixels of each, 8 coincide -- row 2
  # columns 3-6, (6, 3) and row 6 columns 4-6 -- so P = R = 8 / 16 and F = 0.5.
  assert davis_metrics.boundary_tolerance((10, 10), bound_th=0) == 0
  assert davis_metrics.boundary_f_measure(gt, pred, bound_th=0) == pytest.approx(0.5)
  # Large image: the tolerance 0.008 * diagonal covers a 3-pixel shift but not a 4-pixel one.
  big_gt = _square(size=200, top=50, left=50, side=40)
  assert davis_metrics.boundary_tolerance((200, 200)) == 3  # ceil(0.008 * 282.8)
  assert davis_metrics.boundary_f_measure(big_gt, _square(200, 50, 53, 40)) == 1.0
  assert davis_metrics.boundary_f_measure(big_gt, _square(200, 50, 54, 40)) < 1.0


def test_davis_j_and_f_over_objects_frames_and_void():
  sq, shifted = _square(), _square(left=4)
  gt = np.zeros((2, 10, 10), np.uint8)
  pred = np.zeros((2, 10, 10), np.uint8)
  gt[:, sq] = 1
  pred[0, sq] = 1  # frame 0 exact, frame 1 shifted by one pixel
  pred[1, shifted] = 1
  gt[:, 0, :2] = 2  # object 2: two pixels, missed in frame 0, found in frame 1
  pred[1, 0, :2] = 2
  gt[:, 9, 9] = 255  # void
  pred[:, 9, 9] = 1  # predicting the void pixel costs nothing
  res = davis_metrics.davis_j_and_f(gt, pred, bound_th=1)
  np.testing.assert_allclose(res["J"], [[1.0, 0.6], [0.0, 1.0]])
  np.testing.assert_allclose(res["F"], [[1.0, 1.0], [0.0, 1.0]])
  np.testing.assert_allclose(res["J_mean"], [0.8, 0.5])
  assert res["J_seq"] == pytest.approx(0.65)
  assert res["F_seq"] == pytest.approx(0.75)
  assert res["JF_seq"] == pytest.approx(0.7)
  # One more sequence predicted perfectly: pooled over the four (sequence, object) pairs.
  perfect = davis_metrics.davis_j_and_f(gt, gt)
  assert perfect["JF_seq"] == 1.0 and perfect["J_mean"].shape == (2,)
  summary = davis_metrics.davis_summary([res, perfect])
  assert summary["J"] == pytest.approx((0.8 + 0.5 + 1.0 + 1.0) / 4)
  assert summary["F"] == pytest.approx((1.0 + 0.5 + 1.0 + 1.0) / 4)
  assert summary["J&F"] == pytest.approx((summary["J"] + summary["F"]) / 2)
  # Skipping the first and last frames (official semi-supervised protocol).
  three = np.concatenate([gt, gt[:1]])
  res3 = davis_metrics.davis_j_and_f(
    three, np.concatenate([pred, pred[:1]]), bound_th=1, skip_first_last=True
  )
  np.testing.assert_allclose(res3["J"], [[0.6], [1.0]])
  assert np.isnan(davis_metrics.davis_summary([])["J&F"])
