"""Task metrics: confusion matrix / mIoU for segmentation, PCK for pose (DESIGN.md section 5).

Segmentation follows the Cityscapes convention: one confusion matrix is accumulated over the
whole split (pixels labelled `ignore_index`, 255, are dropped) and mIoU is computed from it once,
not averaged over images. The per-batch count runs in JAX (jit-able, on device); the running
total lives on the host in int64 (`ConfusionAccumulator`), so that a split of billions of
pixels cannot overflow the int32 counts that JAX produces without x64.

PCK follows JHMDB: a visible joint is correct when its distance to the ground truth is at most
`alpha * max(w, h)` of the person bounding box (`alpha = 0.2` for PCK@0.2).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# jnp.bincount counts in int32 (x64 is off by default), so one call may see at most this many
# pixels; the host accumulator sums calls in int64.
MAX_PIXELS_PER_CALL = 2**31 - 1


@functools.partial(jax.jit, static_argnames=("num_classes", "ignore_index"))
def confusion_matrix(pred: jax.Array, label: jax.Array, num_classes: int,
                     ignore_index: int = 255) -> jax.Array:
    """Counts pixels by (label, prediction): int32 `[C, C]`, rows = label, columns = prediction.

    Args:
      pred: integer class predictions, any shape (e.g. `[B, T, H, W]`), values in `[0, C)`.
      label: integer labels of the same shape; `ignore_index` and any value outside `[0, C)`
        mark pixels that are not counted.
      num_classes: C (static).
      ignore_index: label value of pixels to drop (static).

    Pixels whose prediction lies outside `[0, C)` are dropped as well (a jitted function cannot
    raise on values); feed argmax outputs. Counts are int32: one call may hold at most
    `MAX_PIXELS_PER_CALL` pixels (checked from the static shape); sum calls with
    `ConfusionAccumulator`.

    Raises:
      ValueError: shapes differ, non-integer inputs, C < 1, or too many pixels for int32.
    """
    if pred.shape != label.shape:
        raise ValueError(f"pred {pred.shape} and label {label.shape} must have the same shape")
    for name, x in (("pred", pred), ("label", label)):
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(f"{name} must be an integer array, got {x.dtype}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if pred.size > MAX_PIXELS_PER_CALL:
        raise ValueError(f"{pred.size} pixels overflow int32 counts in one call; split the "
                         "batch and sum with ConfusionAccumulator")
    c = num_classes
    # Widen before comparing: uint8 labels cannot hold C*C, and strict promotion wants one type.
    p = pred.reshape(-1).astype(jnp.int32)
    y = label.reshape(-1).astype(jnp.int32)
    valid = (y != ignore_index) & (y >= 0) & (y < c) & (p >= 0) & (p < c)
    # Dropped pixels go to an extra bin C*C, cut off below.
    index = jnp.where(valid, y * c + p, c * c)
    counts = jnp.bincount(index, length=c * c + 1)
    return counts[: c * c].astype(jnp.int32).reshape(c, c)


class ConfusionAccumulator:
    """Host-side int64 sum of per-batch confusion matrices over a split.

    `update` dispatches the jitted count and keeps the (tiny) device result; pending results are
    fetched and added in int64 every `flush_every` updates and by `result()`, so the host does not
    wait on the device after every batch.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, flush_every: int = 16):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self._flush_every = max(1, int(flush_every))
        self._total = np.zeros((self.num_classes, self.num_classes), np.int64)
        self._pending: list[jax.Array] = []

    def update(self, pred, label) -> None:
        """Adds the counts of one batch (device or host arrays of equal shape)."""
        self._pending.append(confusion_matrix(jnp.asarray(pred), jnp.asarray(label),
                                              num_classes=self.num_classes,
                                              ignore_index=self.ignore_index))
        if len(self._pending) >= self._flush_every:
            self._flush()

    def add(self, confusion) -> None:
        """Adds an already counted `[C, C]` matrix (e.g. gathered from another host)."""
        confusion = np.asarray(confusion)
        if confusion.shape != self._total.shape:
            raise ValueError(f"confusion {confusion.shape} != {self._total.shape}")
        self._total += confusion.astype(np.int64)

    def result(self) -> np.ndarray:
        """The int64 `[C, C]` total so far (a copy)."""
        self._flush()
        return self._total.copy()

    def reset(self) -> None:
        self._pending.clear()
        self._total[...] = 0

    def _flush(self) -> None:
        for counts in jax.device_get(self._pending):
            self._total += np.asarray(counts).astype(np.int64)
        self._pending.clear()


def _check_confusion(confusion) -> np.ndarray:
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion must be square [C, C], got {cm.shape}")
    return cm.astype(np.float64)


def miou(confusion) -> tuple[float, np.ndarray]:
    """Mean IoU and per-class IoU from a `[C, C]` confusion matrix (rows = label).

    `IoU_c = TP / (TP + FP + FN)`. A class absent from both labels and predictions has no IoU
    (NaN) and is left out of the mean; a class only predicted (never labelled) has IoU 0 and
    counts. The mean is NaN when no class has any pixel.
    """
    cm = _check_confusion(confusion)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    per_class = np.full(cm.shape[0], np.nan)
    present = union > 0
    per_class[present] = tp[present] / union[present]
    mean = float(per_class[present].mean()) if present.any() else float("nan")
    return mean, per_class


def pixel_accuracy(confusion) -> float:
    """Correct pixels / counted pixels (NaN for an empty matrix)."""
    cm = _check_confusion(confusion)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float("nan")


def bbox_size(bbox) -> np.ndarray:
    """`max(w, h)` of `(x0, y0, x1, y1)` boxes `[..., 4]` (pixel edges, SynthRes convention)."""
    bbox = np.asarray(bbox, np.float64)
    return np.maximum(bbox[..., 2] - bbox[..., 0], bbox[..., 3] - bbox[..., 1])


def pck_counts(pred_joints, gt_joints, visible, bbox,
               alpha: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint (correct, evaluated) counts, int64 `[J]` each, for summing over a split.

    Args:
      pred_joints, gt_joints: `[..., J, 2]` (x, y) in pixels.
      visible: bool `[..., J]`; only visible joints are evaluated.
      bbox: `[..., 4]` person box `(x0, y0, x1, y1)`; instances whose box has no extent
        (`max(w, h) <= 0`, e.g. the person left the frame) are not evaluated.
      alpha: threshold as a fraction of `max(w, h)`; a joint is correct when
        `||pred - gt|| <= alpha * max(w, h)`.
    """
    pred = np.asarray(pred_joints, np.float64)
    gt = np.asarray(gt_joints, np.float64)
    vis = np.asarray(visible).astype(bool)
    if pred.shape != gt.shape or pred.shape[-1] != 2:
        raise ValueError(f"joints must be [..., J, 2] of equal shape: {pred.shape}, {gt.shape}")
    if vis.shape != gt.shape[:-1]:
        raise ValueError(f"visible {vis.shape} must be {gt.shape[:-1]}")
    size = bbox_size(bbox)
    if size.shape != gt.shape[:-2]:
        raise ValueError(f"bbox {np.shape(bbox)} must be {gt.shape[:-2] + (4,)}")
    threshold = alpha * size[..., None]  # [..., 1]
    evaluated = vis & (threshold > 0)
    dist = np.linalg.norm(pred - gt, axis=-1)
    correct = evaluated & (dist <= threshold)
    lead = tuple(range(correct.ndim - 1))
    return correct.sum(axis=lead).astype(np.int64), evaluated.sum(axis=lead).astype(np.int64)


def pck(pred_joints, gt_joints, visible, bbox, alpha: float = 0.2) -> float:
    """PCK@alpha over all evaluated joints pooled (NaN when none); see `pck_counts`."""
    correct, evaluated = pck_counts(pred_joints, gt_joints, visible, bbox, alpha)
    total = evaluated.sum()
    return float(correct.sum() / total) if total > 0 else float("nan")
