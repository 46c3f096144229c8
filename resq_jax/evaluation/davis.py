"""DAVIS J&F for video object segmentation (split from ``metrics``, which re-exports it).

Follows the DAVIS 2017 evaluation code (davis2017-evaluation, davis2017/metrics.py): J is the
IoU of an object's masks, F the F-measure of their boundaries (`seg2bmap`) matched within
`bound_th * image diagonal` pixels (rounded up; `bound_th >= 1` is a pixel count) by dilation
with a disk. Void pixels (id 255 in the annotations) count in neither.
"""

from __future__ import annotations

import numpy as np


def region_similarity(gt_mask, pred_mask, void=None) -> np.ndarray:
  """J: IoU of boolean masks `[..., H, W]` per leading index, float64 `[...]`.

  DAVIS convention: J = 1 when both masks are empty (outside the void pixels).
  """
  gt = np.asarray(gt_mask).astype(bool)
  pred = np.asarray(pred_mask).astype(bool)
  if gt.shape != pred.shape:
    raise ValueError(f"masks must have the same shape: {gt.shape}, {pred.shape}")
  keep = np.ones_like(gt) if void is None else ~np.broadcast_to(np.asarray(void, bool), gt.shape)
  inter = np.sum(gt & pred & keep, axis=(-2, -1)).astype(np.float64)
  union = np.sum((gt | pred) & keep, axis=(-2, -1)).astype(np.float64)
  return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def seg2bmap(mask) -> np.ndarray:
  """DAVIS boundary map of a boolean `[H, W]` mask (same size).

  A pixel is on the boundary when it differs from its right, lower or lower-right neighbour
  (outside the image counts as equal), i.e. every edge between a foreground and a background
  pixel marks the pixel above / left of it; a k x k square gives 4k boundary pixels.
  """
  seg = np.asarray(mask).astype(bool)
  if seg.ndim != 2:
    raise ValueError(f"seg2bmap takes one [H, W] mask, got {seg.shape}")
  e = np.zeros_like(seg)
  s = np.zeros_like(seg)
  se = np.zeros_like(seg)
  e[:, :-1] = seg[:, 1:]
  s[:-1, :] = seg[1:, :]
  se[:-1, :-1] = seg[1:, 1:]
  b = (seg ^ e) | (seg ^ s) | (seg ^ se)
  b[-1, :] = seg[-1, :] ^ e[-1, :]
  b[:, -1] = seg[:, -1] ^ s[:, -1]
  b[-1, -1] = False
  return b


def boundary_tolerance(shape, bound_th: float = 0.008) -> int:
  """Matching radius in pixels: `bound_th` itself if >= 1, else ceil(bound_th * diagonal)."""
  if bound_th >= 1:
    return int(bound_th)
  return int(np.ceil(bound_th * np.linalg.norm(shape[-2:])))


def boundary_f_measure(gt_mask, pred_mask, void=None, bound_th: float = 0.008) -> float:
  """F: boundary F-measure of two boolean `[H, W]` masks (DAVIS `f_measure`).

  Boundary pixels of each mask (`seg2bmap`, void pixels removed from the masks first) match
  when a boundary pixel of the other mask lies within a disk of radius
  `boundary_tolerance(shape, bound_th)`. Precision = matched predicted / predicted boundary
  pixels, recall = matched ground truth / ground-truth boundary pixels. Empty boundaries:
  both empty F = 1; only one empty F = 0.
  """
  from scipy import ndimage
  from skimage.morphology import disk

  gt = np.asarray(gt_mask).astype(bool)
  pred = np.asarray(pred_mask).astype(bool)
  if gt.shape != pred.shape or gt.ndim != 2:
    raise ValueError(f"masks must be [H, W] of equal shape: {gt.shape}, {pred.shape}")
  if void is not None:
    keep = ~np.asarray(void, bool)
    gt, pred = gt & keep, pred & keep
  gt_b, pred_b = seg2bmap(gt), seg2bmap(pred)
  radius = boundary_tolerance(gt.shape, bound_th)
  footprint = disk(radius).astype(bool)
  gt_dil = ndimage.binary_dilation(gt_b, structure=footprint)
  pred_dil = ndimage.binary_dilation(pred_b, structure=footprint)
  n_pred, n_gt = int(pred_b.sum()), int(gt_b.sum())
  if n_pred == 0 and n_gt == 0:
    return 1.0
  if n_pred == 0 or n_gt == 0:
    return 0.0  # DAVIS: precision 1, recall 0 (or the reverse)
  precision = float((pred_b & gt_dil).sum()) / n_pred
  recall = float((gt_b & pred_dil).sum()) / n_gt
  if precision + recall == 0:
    return 0.0
  return 2 * precision * recall / (precision + recall)


def davis_j_and_f(
  gt_ids,
  pred_ids,
  *,
  num_objects: int | None = None,
  bound_th: float = 0.008,
  void_id: int = 255,
  skip_first_last: bool = False,
) -> dict:
  """J and F of one sequence from object-id maps `[T, H, W]` (0 background, 1..N objects).

  Args:
    gt_ids: ground-truth ids; pixels equal to `void_id` are void (ignored in J and F).
    pred_ids: predicted ids of the same shape (ids above N are ignored, as extra objects).
    num_objects: N; default the largest non-void id of the first ground-truth frame (the
      DAVIS 2017 convention: the objects given in the first frame).
    skip_first_last: drop the first and last frames, as the official semi-supervised
      evaluation does (the first mask is given; pass True to match its numbers).

  Returns a dict: `J` / `F` float64 `[N, T']` per object and frame, `J_mean` / `F_mean`
  `[N]` per object (mean over frames), and the sequence scores `J`, `F`, `J&F` under the keys
  "J_seq", "F_seq", "JF_seq" (mean over objects of the per-object means; NaN if N = 0).
  Pool sequences with `davis_summary`.
  """
  gt = np.asarray(gt_ids)
  pred = np.asarray(pred_ids)
  if gt.shape != pred.shape or gt.ndim != 3:
    raise ValueError(f"ids must be [T, H, W] of equal shape: {gt.shape}, {pred.shape}")
  if skip_first_last:
    if gt.shape[0] < 3:
      raise ValueError("skip_first_last needs at least 3 frames")
    gt, pred = gt[1:-1], pred[1:-1]
    first = np.asarray(gt_ids)[0]
  else:
    first = gt[0]
  void = gt == void_id
  if num_objects is None:
    num_objects = int(first[first != void_id].max(initial=0))
  j = np.zeros((num_objects, gt.shape[0]))
  f = np.zeros((num_objects, gt.shape[0]))
  for k in range(num_objects):
    gt_k, pred_k = (gt == k + 1) & ~void, pred == k + 1
    j[k] = region_similarity(gt_k, pred_k, void)
    for t in range(gt.shape[0]):
      f[k, t] = boundary_f_measure(gt_k[t], pred_k[t], void[t], bound_th)
  j_mean, f_mean = j.mean(axis=1), f.mean(axis=1)
  j_seq = float(j_mean.mean()) if num_objects else float("nan")
  f_seq = float(f_mean.mean()) if num_objects else float("nan")
  return {
    "J": j,
    "F": f,
    "J_mean": j_mean,
    "F_mean": f_mean,
    "J_seq": j_seq,
    "F_seq": f_seq,
    "JF_seq": (j_seq + f_seq) / 2,
  }


def davis_summary(results) -> dict[str, float]:
  """Dataset J, F and J&F from `davis_j_and_f` results: means over all (sequence, object)
  pairs of the per-object frame means, as the DAVIS benchmark reports them."""
  j = np.concatenate([np.asarray(r["J_mean"], np.float64) for r in results] or [np.zeros(0)])
  f = np.concatenate([np.asarray(r["F_mean"], np.float64) for r in results] or [np.zeros(0)])
  if j.size == 0:
    return {"J": float("nan"), "F": float("nan"), "J&F": float("nan")}
  return {"J": float(j.mean()), "F": float(f.mean()), "J&F": float((j.mean() + f.mean()) / 2)}
