"""Task metrics: confusion matrix / mIoU for segmentation, PCK for pose (docs/design.md section 5).

Segmentation follows the Cityscapes convention: one confusion matrix is accumulated over the
whole split (pixels labelled `ignore_index`, 255, are dropped) and mIoU is computed from it once,
not averaged over images. The per-batch count runs in JAX (jit-able, on device); the running
total lives on the host in int64 (`ConfusionAccumulator`), so that a split of billions of
pixels cannot overflow the int32 counts that JAX produces without x64.

PCK follows JHMDB: a visible joint is correct when its distance to the ground truth is at most
`alpha * max(w, h)` of the person bounding box (`alpha = 0.2` for PCK@0.2).

Uncertainty: `bootstrap_ci` is the one percentile bootstrap over clips of the project (mIoU,
PCK and fidelity intervals all use it); `ConfusionAccumulator(per_clip=True)` keeps one
confusion matrix per clip so that mIoU can be recomputed on resampled clips. Fidelity to the
float model: `relative_l2` (jit-safe) and `FidelityAccumulator` (per-clip means, intervals and
per-frame-index curves).
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
def confusion_matrix(
  pred: jax.Array, label: jax.Array, num_classes: int, ignore_index: int = 255
) -> jax.Array:
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
    raise ValueError(
      f"{pred.size} pixels overflow int32 counts in one call; split the "
      "batch and sum with ConfusionAccumulator"
    )
  c = num_classes
  # Widen before comparing: uint8 labels cannot hold C*C, and strict promotion wants one type.
  p = pred.reshape(-1).astype(jnp.int32)
  y = label.reshape(-1).astype(jnp.int32)
  valid = (y != ignore_index) & (y >= 0) & (y < c) & (p >= 0) & (p < c)
  # Dropped pixels go to an extra bin C*C, cut off below.
  index = jnp.where(valid, y * c + p, c * c)
  counts = jnp.bincount(index, length=c * c + 1)
  return counts[: c * c].astype(jnp.int32).reshape(c, c)


@functools.partial(jax.jit, static_argnames=("num_classes", "ignore_index"))
def clip_confusion_matrices(
  pred: jax.Array, label: jax.Array, num_classes: int, ignore_index: int = 255
) -> jax.Array:
  """One `confusion_matrix` per clip: int32 `[B, C, C]` for `pred`, `label` `[B, ...]` (e.g.
  `[B, T, H, W]`; row b counts clip b only). Same rules and limits as `confusion_matrix`."""
  if pred.shape != label.shape or pred.ndim < 1:
    raise ValueError(f"pred {pred.shape} and label {label.shape} must be equal [B, ...] shapes")
  count = functools.partial(confusion_matrix, num_classes=num_classes, ignore_index=ignore_index)
  return jax.vmap(count)(pred, label)


class ConfusionAccumulator:
  """Host-side int64 sum of per-batch confusion matrices over a split.

  `update` dispatches the jitted count and keeps the (tiny) device result; pending results are
  fetched and added in int64 every `flush_every` updates and by `result()`, so the host does not
  wait on the device after every batch. With `per_clip=True` axis 0 of every update is the clip
  axis and one `[C, C]` matrix per clip is kept as well (`clip_matrices()`, `[N, C, C]` int64:
  C^2 integers per clip, what a bootstrap over clips needs).
  """

  def __init__(
    self, num_classes: int, ignore_index: int = 255, flush_every: int = 16, per_clip: bool = False
  ):
    if num_classes < 1:
      raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    self.num_classes = int(num_classes)
    self.ignore_index = int(ignore_index)
    self.per_clip = bool(per_clip)
    self._flush_every = max(1, int(flush_every))
    self._total = np.zeros((self.num_classes, self.num_classes), np.int64)
    self._clips: list[np.ndarray] = []
    self._pending: list[jax.Array] = []

  def update(self, pred, label) -> None:
    """Adds the counts of one batch (device or host arrays of equal shape; `[B, ...]` with
    `per_clip`)."""
    count = clip_confusion_matrices if self.per_clip else confusion_matrix
    self._pending.append(
      count(
        jnp.asarray(pred),
        jnp.asarray(label),
        num_classes=self.num_classes,
        ignore_index=self.ignore_index,
      )
    )
    if len(self._pending) >= self._flush_every:
      self._flush()

  def add(self, confusion) -> None:
    """Adds already counted matrices (e.g. gathered from another host): `[C, C]`, or
    `[N, C, C]` per clip with `per_clip`."""
    confusion = np.asarray(confusion)
    shape = (-1, *self._total.shape) if self.per_clip else self._total.shape
    if confusion.ndim != len(shape) or confusion.shape[-2:] != self._total.shape:
      want = "[N, C, C]" if self.per_clip else str(self._total.shape)
      raise ValueError(f"confusion {confusion.shape} is not {want} with C={self.num_classes}")
    self._add(confusion)

  def result(self) -> np.ndarray:
    """The int64 `[C, C]` total so far (a copy)."""
    self._flush()
    return self._total.copy()

  def clip_matrices(self) -> np.ndarray:
    """int64 `[N, C, C]`: one matrix per clip, in update order (`per_clip` only)."""
    if not self.per_clip:
      raise ValueError("clip_matrices() needs ConfusionAccumulator(per_clip=True)")
    self._flush()
    c = self.num_classes
    return np.concatenate(self._clips) if self._clips else np.zeros((0, c, c), np.int64)

  def reset(self) -> None:
    self._pending.clear()
    self._clips.clear()
    self._total[...] = 0

  def _add(self, counts: np.ndarray) -> None:
    counts = counts.astype(np.int64)
    if self.per_clip:
      self._clips.append(counts)
      counts = counts.sum(axis=0)
    self._total += counts

  def _flush(self) -> None:
    for counts in jax.device_get(self._pending):
      self._add(np.asarray(counts))
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


def miou_of_clips(clip_confusions) -> float:
  """mIoU of the summed per-clip confusion matrices `[N, C, C]` (the bootstrap statistic)."""
  return miou(np.sum(np.asarray(clip_confusions), axis=0))[0]


def pixel_accuracy_of_clips(clip_confusions) -> float:
  """Pixel accuracy of the summed per-clip confusion matrices `[N, C, C]`."""
  return pixel_accuracy(np.sum(np.asarray(clip_confusions), axis=0))


# --- Bootstrap over clips ----------------------------------------------------------------------


def bootstrap_ci(
  per_clip,
  statistic,
  num_resamples: int = 1000,
  level: float = 0.95,
  seed: int = 0,
) -> tuple[float, float]:
  """Percentile bootstrap interval `(lo, hi)` of `statistic` over clips.

  Args:
    per_clip: array whose axis 0 is the clips (`[N]` values, `[N, 2]` counts, `[N, C, C]`
      confusion matrices...). Clips are the resampling unit: frames of a clip are correlated,
      so resampling frames or pixels would give too narrow intervals.
    statistic: maps a resampled array (`per_clip[picks]`, same shape) to a scalar; non-finite
      results (e.g. a resample with nothing evaluated) are dropped.
    num_resamples: R resamples of N clips drawn with replacement, all at once from
      `np.random.default_rng(seed).integers(0, N, (R, N))` (fixed seed: reproducible).
    level: coverage; the interval is the `(1 - level) / 2` and `(1 + level) / 2` percentiles
      (`np.percentile`'s linear interpolation) of the R statistics.

  Returns `(nan, nan)` with fewer than 2 clips, no resample or no finite statistic.
  """
  if not 0 < level < 1:
    raise ValueError(f"level must be in (0, 1), got {level!r}")
  data = np.asarray(per_clip)
  n = data.shape[0] if data.ndim else 0
  if n < 2 or num_resamples < 1:
    return float("nan"), float("nan")
  picks = np.random.default_rng(seed).integers(0, n, size=(int(num_resamples), n))
  values = np.asarray([statistic(data[p]) for p in picks], np.float64)
  values = values[np.isfinite(values)]
  if not len(values):
    return float("nan"), float("nan")
  tail = 50.0 * (1.0 - level)
  q = np.round([tail, 100.0 - tail], 10)  # 2.5, 97.5 exactly for level 0.95
  lo, hi = np.percentile(values, q)
  return float(lo), float(hi)


# --- Fidelity to the float model -----------------------------------------------------------------


def relative_l2(outputs: jax.Array, reference: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`||y - y_ref||_2 / ||y_ref||_2` of clips `[B, T, ...]`: per clip `[B]` (norms over the
  whole clip) and per frame `[B, T]`; float32, jit-safe. 0 where both are equal (exactly), inf
  where only the reference is all zero."""
  y = jnp.asarray(outputs, jnp.float32)
  ref = jnp.asarray(reference, jnp.float32)
  if y.shape != ref.shape or y.ndim < 2:
    raise ValueError(f"outputs {y.shape} and reference {ref.shape} must be equal [B, T, ...]")
  axes = tuple(range(2, y.ndim))
  diff = jnp.sum(jnp.square(y - ref), axis=axes)  # [B, T]
  norm = jnp.sum(jnp.square(ref), axis=axes)

  def ratio(d, r):
    safe = jnp.where(r > 0, r, jnp.ones_like(r))
    inf = jnp.full_like(d, jnp.inf)
    return jnp.where(r > 0, jnp.sqrt(d / safe), jnp.where(d > 0, inf, jnp.zeros_like(d)))

  return ratio(jnp.sum(diff, axis=1), jnp.sum(norm, axis=1)), ratio(diff, norm)


BY_T = "_by_t"  # suffix of per-frame-index values
PER_CLIP = "_per_clip"  # suffix of a row's per-clip values (eval_lib writes, claims pairs them)


class FidelityAccumulator:
  """Fidelity values of a split, clip by clip (host side, a few floats per clip).

  `update(values)` takes a task's `fidelity(outputs, reference_outputs)` dict: per-clip values
  `{name: [B]}` and per-frame values `{name + '_by_t': [B, T]}`. `result()` gives, for every
  name, the mean over clips, its `bootstrap_ci` (`name_ci`: `[lo, hi]`) and the per-frame-index
  curve (`name_by_t`: `[T]`, the mean over clips at frame index t; clips shorter than t do not
  count there).
  """

  def __init__(self, num_resamples: int = 1000, level: float = 0.95, seed: int = 0):
    self.num_resamples, self.level, self.seed = int(num_resamples), float(level), int(seed)
    self._clips: dict[str, list[np.ndarray]] = {}
    self._t_sum: dict[str, np.ndarray] = {}
    self._t_count: dict[str, np.ndarray] = {}

  def update(self, values) -> None:
    for name, value in values.items():
      v = np.asarray(value, np.float64)
      if name.endswith(BY_T):
        if v.ndim != 2:
          raise ValueError(f"{name} must be [B, T], got shape {v.shape}")
        self._add_frames(name, v)
      else:
        if v.ndim != 1:
          raise ValueError(f"{name} must be [B] (one value per clip), got shape {v.shape}")
        self._clips.setdefault(name, []).append(v)

  def _add_frames(self, name: str, v: np.ndarray) -> None:
    t = v.shape[1]
    sums = self._t_sum.setdefault(name, np.zeros(0))
    if len(sums) < t:
      self._t_sum[name] = np.concatenate([sums, np.zeros(t - len(sums))])
      counts = self._t_count.get(name, np.zeros(0, np.int64))
      self._t_count[name] = np.concatenate([counts, np.zeros(t - len(counts), np.int64)])
    self._t_sum[name][:t] += v.sum(axis=0)
    self._t_count[name][:t] += v.shape[0]

  def clip_values(self, name: str) -> np.ndarray:
    """float64 `[N]`: `name`'s value of every clip added, in update order."""
    return np.concatenate(self._clips.get(name, [np.zeros(0)]))

  def result(self) -> dict:
    """`{name: mean, name_ci: [lo, hi], name_by_t: [T]}` (JSON-compatible; NaN when empty)."""
    out: dict = {}
    for name in self._clips:
      values = self.clip_values(name)
      out[name] = float(values.mean()) if len(values) else float("nan")
      ci = bootstrap_ci(values, np.mean, self.num_resamples, self.level, self.seed)
      out[f"{name}_ci"] = [ci[0], ci[1]]
    for name, sums in self._t_sum.items():
      out[name] = [float(v) for v in sums / np.maximum(self._t_count[name], 1)]
    return out


def bbox_size(bbox) -> np.ndarray:
  """`max(w, h)` of `(x0, y0, x1, y1)` boxes `[..., 4]` (pixel edges, SynthRes convention)."""
  bbox = np.asarray(bbox, np.float64)
  return np.maximum(bbox[..., 2] - bbox[..., 0], bbox[..., 3] - bbox[..., 1])


def pck_counts(
  pred_joints, gt_joints, visible, bbox, alpha: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
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
