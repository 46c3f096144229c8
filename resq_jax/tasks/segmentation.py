"""Semantic segmentation: per-pixel class logits, cross-entropy, mIoU over the split.

Labels are ``semantic`` maps: SynthRes's (``NUM_CLASSES`` classes, the default) or another
dataset's, whose class count the task then carries (``num_classes``: Cityscapes' 19 trainIds,
set by ``config_lib.task_for`` from ``data.dataset``); pixels labelled
``ignore_index`` (255, the Cityscapes convention) count neither in the loss nor in mIoU. mIoU
comes from one confusion matrix over the whole split (``resq_jax.evaluation.miou``), not from
averaging per-batch scores.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from resq_jax.data.spec import NUM_CLASSES
from resq_jax.evaluation import ConfusionAccumulator, miou, pixel_accuracy
from resq_jax.tasks.base import normalise_frames

IGNORE = 255


def segmentation_loss(
  logits: jax.Array, labels: jax.Array, ignore_index: int = IGNORE
) -> tuple[jax.Array, jax.Array]:
  """(mean softmax cross-entropy over labelled pixels, pixel accuracy); ``logits [..., C]``,
  ``labels [...]`` int."""
  mask = labels != ignore_index
  safe = jnp.where(mask, labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
  n = jnp.maximum(jnp.sum(mask), 1).astype(ce.dtype)
  accuracy = jnp.sum((jnp.argmax(logits, -1) == labels) & mask).astype(ce.dtype) / n
  return jnp.sum(jnp.where(mask, ce, jnp.zeros_like(ce))) / n, accuracy


class MiouAccumulator:
  """mIoU (and per-class IoU, pixel accuracy) from one int64 confusion matrix over a split."""

  def __init__(self, num_classes: int, ignore_index: int = IGNORE):
    self._confusion = ConfusionAccumulator(num_classes, ignore_index)

  def update(self, predictions, targets) -> None:
    self._confusion.update(predictions, targets)

  def result(self) -> dict:
    confusion = self._confusion.result()
    mean, per_class = miou(confusion)
    return {
      "miou": float(mean),
      "per_class_iou": [float(v) for v in per_class],
      "pixel_accuracy": float(pixel_accuracy(confusion)),
    }


@dataclasses.dataclass(frozen=True)
class SegmentationTask:
  """Semantic segmentation on SynthRes (or any dataset with a ``semantic`` label map; the model
  gets ``num_classes`` output channels)."""

  num_classes: int = NUM_CLASSES
  ignore_index: int = IGNORE
  name: str = "segmentation"
  metric_name: str = "miou"

  def num_outputs(self) -> int:
    return self.num_classes

  def prepare(self, batch: dict) -> tuple[jax.Array, jax.Array]:
    """(frames float32 [B, T, H, W, 3] normalised, labels int32 [B, T, H, W])."""
    return normalise_frames(batch["frames"]), jnp.asarray(batch["semantic"], jnp.int32)

  def loss(self, outputs: jax.Array, targets: jax.Array) -> tuple[jax.Array, dict]:
    loss, accuracy = segmentation_loss(outputs, targets, self.ignore_index)
    return loss, {"accuracy": accuracy}

  def predict(self, outputs: jax.Array) -> jax.Array:
    """Argmax labels int32 (``outputs`` without their class axis)."""
    return jnp.argmax(outputs, axis=-1).astype(jnp.int32)

  def new_accumulator(self) -> MiouAccumulator:
    return MiouAccumulator(self.num_classes, self.ignore_index)


TASK = SegmentationTask()
