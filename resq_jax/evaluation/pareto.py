"""Pareto front of (cost, quality) points: the settings no other setting beats on both axes.

Pure NumPy, shared by the Markdown report (marks front rows) and the Pareto plot.
"""

from __future__ import annotations

import numpy as np


def pareto_front(points) -> np.ndarray:
  """Indices of the non-dominated points of `[N, 2]` `(cost, quality)`, by ascending cost.

  Point j dominates i when `cost_j <= cost_i` and `quality_j >= quality_i` with at least one
  strict inequality. Exact duplicates do not dominate each other, so both stay on the front.
  Points with a non-finite coordinate are never on the front.
  """
  pts = np.asarray(points, np.float64).reshape(-1, 2)
  finite = np.isfinite(pts).all(axis=1)
  cost, quality = pts[:, 0], pts[:, 1]
  # dominated[i, j]: j dominates i (N is a few dozen settings, so O(N^2) is fine).
  no_worse = (cost[None, :] <= cost[:, None]) & (quality[None, :] >= quality[:, None])
  better = (cost[None, :] < cost[:, None]) | (quality[None, :] > quality[:, None])
  dominated = (no_worse & better & finite[None, :]).any(axis=1)
  front = np.flatnonzero(finite & ~dominated)
  order = np.lexsort((-quality[front], cost[front]))
  return front[order]
