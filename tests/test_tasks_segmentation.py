"""The segmentation task against hand-computed values (loss, prediction, mIoU)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.tasks import TASK_NAMES, TASKS, get_task, normalise_frames
from resq_jax.tasks.segmentation import SegmentationTask


def test_registry_and_normalisation():
  assert TASKS["segmentation"] is get_task("segmentation")
  assert tuple(TASKS) == TASK_NAMES
  with pytest.raises(ValueError, match="unknown task"):
    get_task("depth")
  frames = np.array([0, 128, 255], np.uint8)
  np.testing.assert_allclose(normalise_frames(frames), (frames / 255.0 - 0.5) / 0.25, atol=1e-6)


def test_loss_prediction_and_miou():
  task = SegmentationTask(num_classes=2)
  assert hash(task) == hash(SegmentationTask(num_classes=2)) and task.num_outputs() == 2
  batch = {
    "frames": np.zeros((1, 1, 1, 3, 3), np.uint8),
    "semantic": np.array([[[[0, 1, 255]]]], np.uint8),
  }
  frames, labels = task.prepare(batch)
  assert frames.dtype == jnp.float32 and labels.dtype == jnp.int32
  logits = jnp.array([[[[[2.0, 0.0], [2.0, 0.0], [0.0, 5.0]]]]])  # predicts 0, 0, 1
  loss, extra = task.loss(logits, labels)
  # Cross-entropy of the two labelled pixels; the ignored one does not count.
  expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))) / 2
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  assert float(extra["accuracy"]) == pytest.approx(0.5)
  accumulator = task.new_accumulator()
  accumulator.update(task.predict(logits), labels)
  result = accumulator.result()
  # class 0: TP 1, FP 1 -> IoU 1/2; class 1: TP 0, FN 1 -> 0.
  assert result["miou"] == pytest.approx(0.25)
  assert result["per_class_iou"] == pytest.approx([0.5, 0.0])


def test_class_weighted_loss_is_the_weighted_mean_over_labelled_pixels():
  """PyTorch's ``CrossEntropyLoss(weight=w, ignore_index=255)``: sum_i w[y_i] ce_i / sum_i w[y_i]
  over labelled pixels, computed here by hand in NumPy."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 4, 5, 3)).astype(np.float32)
  labels = rng.integers(0, 3, size=(2, 3, 4, 5))
  labels[0, 0, :2] = 255
  weights = (1.0, 4.0, 0.5)
  task = SegmentationTask(num_classes=3, class_weights=weights)
  loss, extra = task.loss(jnp.asarray(logits), jnp.asarray(labels, jnp.int32))
  z = logits - logits.max(-1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
  keep = labels != 255
  y = labels[keep]
  ce = -log_p[keep][np.arange(y.size), y]
  w = np.asarray(weights)[y]
  assert float(loss) == pytest.approx(float((w * ce).sum() / w.sum()), rel=1e-5)
  # Accuracy is unweighted; equal weights give the unweighted loss.
  unweighted, plain = SegmentationTask(num_classes=3).loss(jnp.asarray(logits), jnp.asarray(labels))
  assert float(extra["accuracy"]) == pytest.approx(float(plain["accuracy"]))
  same = SegmentationTask(num_classes=3, class_weights=(2.0, 2.0, 2.0))
  assert float(same.loss(jnp.asarray(logits), jnp.asarray(labels))[0]) == pytest.approx(
    float(unweighted), rel=1e-6
  )
  assert float(unweighted) == pytest.approx(float(ce.mean()), rel=1e-5)


def test_fidelity_agreement_and_relative_l2_hand_built():
  """Clip 0: frame 0 equals the reference, frame 1 flips the argmax of 1 pixel of 4 (agreement
  1 and 3/4, clip 7/8); clip 1 is the reference itself (agreement 1, rel_l2 0 exactly)."""
  task = SegmentationTask(num_classes=2)
  ref = np.zeros((2, 2, 2, 2, 2), np.float32)
  ref[..., 0] = 1.0  # every pixel: class 0 with logits (1, 0)
  out = ref.copy()
  out[0, 1, 0, 0] = (0.0, 2.0)  # argmax 1 there; that pixel differs by (-1, 2)
  values = task.fidelity(jnp.asarray(out), jnp.asarray(ref))
  np.testing.assert_allclose(values["agreement_by_t"], [[1.0, 0.75], [1.0, 1.0]])
  np.testing.assert_allclose(values["agreement"], [0.875, 1.0])
  # ||y - y_ref||^2 = 1 + 4 over the clip, ||y_ref||^2 = 8 pixels x 1; per frame 5 / 4.
  np.testing.assert_allclose(values["rel_l2"], [math.sqrt(5 / 8), 0.0], rtol=1e-6)
  np.testing.assert_allclose(
    values["rel_l2_by_t"], [[0.0, math.sqrt(5 / 4)], [0.0, 0.0]], rtol=1e-6
  )
  assert float(values["rel_l2"][1]) == 0.0
  assert task.fidelity_error_name == "rel_l2"
