"""Pareto fronts of (cost, quality) points and the equal-cost comparison with frame quantization.

Pure NumPy, shared by the Markdown report (marks front rows, err/FQ and Δ vs FQ columns) and the
Pareto plot.

Equal cost: a setting is compared with what frame quantization (FQ, the rows of family 'fq',
PTQ weights by default) reaches at the *same average BOPs per frame*. The FQ points form a lower
front of error against cost (`fq_front`: the FQ points no other FQ point beats on both), and
between two consecutive front points the FQ error is interpolated linearly against log(GBOPs)
(`Front.at`); outside the front's cost range there is no comparison (None, 'n/a' in the
report). `equal_cost_ratio` = setting error / FQ error at its cost (< 1: closer to the float
model than FQ at equal cost); `equal_cost_metric_delta` = setting metric - FQ metric at its cost,
in points (the metric's front is an upper front).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

COST_KEY = "gbops_avg"


def pareto_front(points) -> np.ndarray:
  """Indices of the non-dominated points of `[N, 2]` `(cost, quality)`, by ascending cost.

  Point j dominates i when `cost_j <= cost_i` and `quality_j >= quality_i` with at least one
  strict inequality. Exact duplicates do not dominate each other, so both stay on the front.
  Points with a non-finite coordinate are never on the front.
  """
  pts = np.asarray(points, np.float64).reshape(-1, 2)
  finite = np.isfinite(pts).all(axis=1)
  cost, quality = pts[:, 0], pts[:, 1]
  # dominated[i, j]: j dominates i (N is a few hundred settings at most, so O(N^2) is fine).
  no_worse = (cost[None, :] <= cost[:, None]) & (quality[None, :] >= quality[:, None])
  better = (cost[None, :] < cost[:, None]) | (quality[None, :] > quality[:, None])
  dominated = (no_worse & better & finite[None, :]).any(axis=1)
  front = np.flatnonzero(finite & ~dominated)
  order = np.lexsort((-quality[front], cost[front]))
  return front[order]


def finite_float(value: Any) -> float | None:
  """A finite float, or None for missing / non-numeric / non-finite values."""
  if isinstance(value, bool) or value is None:
    return None
  try:
    x = float(value)
  except (TypeError, ValueError):
    return None
  return x if math.isfinite(x) else None


@dataclasses.dataclass(frozen=True)
class Front:
  """A front of `key` against average GBOPs/frame: `gbops` ascending (> 0), `values` strictly
  improving along it (decreasing for an error, increasing with `higher_is_better`)."""

  key: str
  gbops: np.ndarray
  values: np.ndarray
  higher_is_better: bool = False

  def __len__(self) -> int:
    return len(self.gbops)

  def at(self, gbops: Any) -> float | None:
    """The front's value at `gbops` (linear in log(GBOPs) between the two bracketing points;
    a front point's own value at its cost); None outside `[gbops[0], gbops[-1]]` or for a
    missing / non-positive cost."""
    cost = finite_float(gbops)
    if cost is None or cost <= 0 or not len(self) or not self.gbops[0] <= cost <= self.gbops[-1]:
      return None
    return float(np.interp(math.log(cost), np.log(self.gbops), self.values))


def fq_front(
  rows: Sequence[Mapping[str, Any]],
  error_key: str,
  *,
  higher_is_better: bool = False,
  family: str = "fq",
  source: str | None = "ptq",
) -> Front:
  """The lower front (upper with `higher_is_better`) of `row[error_key]` against
  `row['gbops_avg']` over the rows of `family` (and `source`; None: any source).

  Rows without a finite value or a positive cost are left out; of the rest only the points no
  other one beats (lower or equal cost and better or equal value, one strictly) are kept, and
  of exact duplicates one: the front is the lower envelope of the FQ points.
  """
  pts = []
  for row in rows:
    if row.get("family") != family or (source is not None and row.get("source") != source):
      continue
    cost, value = finite_float(row.get(COST_KEY)), finite_float(row.get(error_key))
    if cost is not None and cost > 0 and value is not None:
      pts.append((cost, value if higher_is_better else -value))
  pts_arr = np.unique(np.asarray(pts, np.float64).reshape(-1, 2), axis=0)
  front = pts_arr[pareto_front(pts_arr)]
  values = front[:, 1] if higher_is_better else -front[:, 1]
  return Front(error_key, front[:, 0], values, higher_is_better)


def equal_cost_ratio(row: Mapping[str, Any], front: Front) -> float | None:
  """`row[front.key] / front.at(row['gbops_avg'])`: the setting's error relative to the FQ
  front's at the same average cost (< 1: better than FQ). None outside the front's cost range,
  without an error, or where the front's error is 0."""
  error, reference = finite_float(row.get(front.key)), front.at(row.get(COST_KEY))
  if error is None or reference is None or reference <= 0:
    return None
  return error / reference


def equal_cost_metric_delta(
  row: Mapping[str, Any], front: Front, *, scale: float = 100.0
) -> float | None:
  """`scale * (row[front.key] - front.at(row['gbops_avg']))`: the setting's metric minus the
  FQ front's at the same average cost, in points for fractions (`scale` 100). Build `front`
  with `fq_front(rows, metric, higher_is_better=True)`. None outside the front's cost range."""
  value, reference = finite_float(row.get(front.key)), front.at(row.get(COST_KEY))
  if value is None or reference is None:
    return None
  return scale * (value - reference)
