"""Semantic segmentation: per-pixel class logits, cross-entropy, mIoU over the split.

Labels are ``semantic`` maps: SynthRes's (``NUM_CLASSES`` classes, the default) or another
dataset's, whose class count the task then carries (``num_classes``: Cityscapes' 19 trainIds,
set by ``config_lib.task_for`` from ``data.dataset``); pixels labelled
``ignore_index`` (255, the Cityscapes convention) count neither in the loss nor in mIoU. mIoU
comes from one confusion matrix over the whole split (``resq_jax.evaluation.miou``), not from
averaging per-batch scores; its 95% confidence interval is a percentile bootstrap over clips
(each resample's mIoU recomputed from the summed confusion matrices of its clips).

Fidelity to the float model (``fidelity``): per clip, ``agreement`` (fraction of pixels whose
argmax class equals the float model's) and ``rel_l2`` (``||y - y_fp|| / ||y_fp||`` over the
clip's logits), the equal-cost error of the report.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from resq_jax.data.spec import NUM_CLASSES
from resq_jax.evaluation.metrics import (
  ConfusionAccumulator,
  bootstrap_ci,
  miou,
  miou_of_clips,
  pixel_accuracy,
  pixel_accuracy_of_clips,
  relative_l2,
)
from resq_jax.tasks.base import normalise_frames
from resq_jax.tasks.distill import class_kl

IGNORE = 255


def segmentation_loss(
  logits: jax.Array,
  labels: jax.Array,
  ignore_index: int = IGNORE,
  class_weights: tuple[float, ...] | None = None,
) -> tuple[jax.Array, jax.Array]:
  """(softmax cross-entropy over labelled pixels, pixel accuracy); ``logits [..., C]``,
  ``labels [...]`` int. Without ``class_weights`` the loss is the mean over labelled pixels;
  with them (``[C]``, positive) each pixel counts with its label's weight and the loss is the
  weighted mean (``sum w_i ce_i / sum w_i``, PyTorch's ``CrossEntropyLoss(weight=...)``)."""
  mask = labels != ignore_index
  safe = jnp.where(mask, labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
  n = jnp.maximum(jnp.sum(mask), 1).astype(ce.dtype)
  accuracy = jnp.sum((jnp.argmax(logits, -1) == labels) & mask).astype(ce.dtype) / n
  if class_weights is None:
    return jnp.sum(jnp.where(mask, ce, jnp.zeros_like(ce))) / n, accuracy
  weight = jnp.where(mask, jnp.asarray(class_weights, ce.dtype)[safe], jnp.zeros_like(ce))
  return jnp.sum(weight * ce) / jnp.maximum(jnp.sum(weight), jnp.finfo(ce.dtype).tiny), accuracy


class MiouAccumulator:
  """mIoU (and per-class IoU, pixel accuracy) from one int64 confusion matrix over a split,
  with 95% bootstrap intervals over clips (axis 0 of every update is the clip axis: predictions
  and labels ``[B, T, H, W]``, one confusion matrix kept per clip; ``num_bootstrap`` resamples,
  fixed ``seed``)."""

  def __init__(
    self, num_classes: int, ignore_index: int = IGNORE, num_bootstrap: int = 1000, seed: int = 0
  ):
    self._confusion = ConfusionAccumulator(num_classes, ignore_index, per_clip=True)
    self.num_bootstrap, self.seed = int(num_bootstrap), int(seed)

  def update(self, predictions, targets) -> None:
    self._confusion.update(predictions, targets)

  def clip_confusions(self) -> np.ndarray:
    """int64 ``[N, C, C]``: the confusion matrix of every clip added."""
    return self._confusion.clip_matrices()

  def result(self) -> dict:
    """``{'miou', 'miou_ci': [lo, hi], 'per_class_iou', 'pixel_accuracy',
    'pixel_accuracy_ci': [lo, hi], 'clips'}`` (fractions; intervals NaN under 2 clips)."""
    confusion = self._confusion.result()
    clips = self.clip_confusions()
    mean, per_class = miou(confusion)

    def interval(statistic) -> list[float]:
      return list(bootstrap_ci(clips, statistic, self.num_bootstrap, seed=self.seed))

    return {
      "miou": float(mean),
      "miou_ci": interval(miou_of_clips),
      "per_class_iou": [float(v) for v in per_class],
      "pixel_accuracy": float(pixel_accuracy(confusion)),
      "pixel_accuracy_ci": interval(pixel_accuracy_of_clips),
      "clips": int(len(clips)),
    }


@dataclasses.dataclass(frozen=True)
class SegmentationTask:
  """Semantic segmentation on SynthRes (or any dataset with a ``semantic`` label map; the model
  gets ``num_classes`` output channels). ``class_weights``: None (every labelled pixel counts
  the same in the loss) or one positive weight per class (config ``train.class_weights``):
  mIoU weighs every class equally, while SynthRes's four shape classes cover few pixels, so an
  unweighted loss spends its capacity on the backdrop (docs/results.md)."""

  num_classes: int = NUM_CLASSES
  ignore_index: int = IGNORE
  class_weights: tuple[float, ...] | None = None
  name: str = "segmentation"
  metric_name: str = "miou"
  fidelity_error_name: ClassVar[str] = "rel_l2"

  def num_outputs(self) -> int:
    return self.num_classes

  def prepare(self, batch: dict) -> tuple[jax.Array, jax.Array]:
    """(frames float32 [B, T, H, W, 3] normalised, labels int32 [B, T, H, W])."""
    return normalise_frames(batch["frames"]), jnp.asarray(batch["semantic"], jnp.int32)

  def loss(self, outputs: jax.Array, targets: jax.Array) -> tuple[jax.Array, dict]:
    loss, accuracy = segmentation_loss(outputs, targets, self.ignore_index, self.class_weights)
    return loss, {"accuracy": accuracy}

  def predict(self, outputs: jax.Array) -> jax.Array:
    """Argmax labels int32 (``outputs`` without their class axis)."""
    return jnp.argmax(outputs, axis=-1).astype(jnp.int32)

  def new_accumulator(self) -> MiouAccumulator:
    return MiouAccumulator(self.num_classes, self.ignore_index)

  def distill_loss(self, outputs: jax.Array, teacher: jax.Array, temperature: float) -> jax.Array:
    """Distillation from the float teacher's logits: the class KL of every pixel."""
    return class_kl(outputs, teacher, temperature)

  def fidelity(self, outputs: jax.Array, reference_outputs: jax.Array) -> dict[str, jax.Array]:
    """Per clip ``[B]``: ``agreement`` (fraction of pixels whose argmax equals the reference's)
    and ``rel_l2`` (of the clip's logits); per frame ``[B, T]``: ``agreement_by_t``,
    ``rel_l2_by_t``. ``outputs``, ``reference_outputs``: logits ``[B, T, H, W, C]``."""
    same = self.predict(outputs) == self.predict(reference_outputs)  # [B, T, H, W]
    by_t = jnp.mean(same.astype(jnp.float32), axis=(2, 3))
    rel, rel_by_t = relative_l2(outputs, reference_outputs)
    return {
      "agreement": jnp.mean(by_t, axis=1),
      "agreement_by_t": by_t,
      "rel_l2": rel,
      "rel_l2_by_t": rel_by_t,
    }


TASK = SegmentationTask()
