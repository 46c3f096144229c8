"""Equal-cost comparison of two groups of settings, for the claims table (claims.py).

Equal-cost claims ("A beats B at equal BOPs") compare two fronts (the settings of a group that
no other setting of the group beats on both cost and fidelity error) at equal *budget*: at every
budget where one of them has a point, above both fronts' cheapest points and inside the claim's
budget band, each group is represented by what it reaches within the budget (interpolated
linearly in log BOPs between its front points, ``resq_jax.evaluation.pareto.Front``; above its
dearest point, that point's error: it fits the budget).

Whether a budget counts as better, worse or a tie is decided by a *paired* bootstrap over clips
when both rows carry their per-clip errors (``<key>_per_clip``, written by
``resq_jax.experiment.evaluate``): every setting of a sweep is evaluated on the same clips in
the same order, so the two groups' per-clip errors at the budget (interpolated clip by clip with the
front's weights, so that their mean is the front's error) are resampled with the same clip
indices, and the 95% percentile interval of the mean difference A - B decides (`paired_diff_ci`:
better when it lies below 0, worse above 0, else a tie). Pairing removes the variation between
clips that both settings share (hard clips are hard for both), so it separates far closer
fronts than comparing the two unpaired intervals. Rows without per-clip values (results.json
files written before they existed) fall back to the conservative unpaired test: better (worse)
only when the two points' 95% intervals (interpolated like the error) do not overlap. Each
budget's detail line names the test it used and prints its interval.

A verdict (:class:`Verdict`) is one of ``VERDICTS``; ``_verdict`` turns per-budget signs into it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from resq_jax.evaluation.metrics import PER_CLIP, bootstrap_ci
from resq_jax.evaluation.pareto import Front, finite_float, fq_front

Row = Mapping[str, Any]
VERDICTS = ("holds", "does not hold", "depends", "tie", "n/a")


@dataclasses.dataclass(frozen=True)
class Verdict:
  """A claim on one cell: ``verdict`` (one of VERDICTS), a one-line ``summary`` with the
  numbers, and ``details`` (one line per compared point)."""

  verdict: str
  summary: str
  details: tuple[str, ...] = ()

  def __post_init__(self):
    if self.verdict not in VERDICTS:
      raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


NA = Verdict("n/a", "not evaluated in this cell")


def _verdict(signs: list[int], what: str, summary: str, details) -> Verdict:
  if not signs:
    return Verdict("n/a", f"no {what} point inside the compared cost range", tuple(details))
  if all(s > 0 for s in signs):
    return Verdict("holds", summary, tuple(details))
  if all(s < 0 for s in signs):
    return Verdict("does not hold", summary, tuple(details))
  if any(s > 0 for s in signs) and any(s < 0 for s in signs):
    return Verdict("depends", summary, tuple(details))
  if any(s > 0 for s in signs):
    return Verdict("depends", summary + " (elsewhere a tie)", tuple(details))
  if any(s < 0 for s in signs):
    return Verdict("does not hold", summary + " (elsewhere a tie)", tuple(details))
  return Verdict("tie", summary, tuple(details))


def _front_rows(rows: Sequence[Row], key: str) -> list[Row]:
  """The rows of ``rows`` (any families) on their lower front of ``key`` against cost, by
  ascending cost."""
  tagged = [dict(r, family="_group", source="_group") for r in rows]
  front = fq_front(tagged, key, family="_group", source="_group")
  out = []
  for cost, value in zip(front.gbops, front.values):
    for r in rows:
      if finite_float(r.get("gbops_avg")) == cost and finite_float(r.get(key)) == value:
        out.append(r)
        break
  return out


def _interval_fronts(rows: Sequence[Row], key: str) -> tuple[Front, Front, Front, list[Row]]:
  """The front of ``rows`` as three interpolated curves (error, interval low, interval high)."""
  pts = _front_rows(rows, key)
  cost = np.asarray([float(r["gbops_avg"]) for r in pts])
  err = np.asarray([float(r[key]) for r in pts])
  ci = np.asarray([(r.get(f"{key}_ci") or [r[key], r[key]])[:2] for r in pts], float)
  ci = ci.reshape(-1, 2)
  return Front(key, cost, err), Front(key, cost, ci[:, 0]), Front(key, cost, ci[:, 1]), pts


def _best_within(front: Front, gbops: float) -> float | None:
  """The front's value at ``gbops``: interpolated inside its range, its last (best) value above
  it (a budget above the dearest front point can run that setting); None below its range."""
  if not len(front) or gbops < front.gbops[0]:
    return None
  return front.at(min(gbops, float(front.gbops[-1])))


def paired_diff_ci(
  a, b, *, num_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
  """Paired percentile bootstrap interval of ``mean(a) - mean(b)`` over clips.

  ``a``, ``b``: ``[N]`` per-clip errors of two settings on the same N clips, in the same order.
  Every resample draws N clip indices with replacement and uses them for both settings: this is
  ``bootstrap_ci`` of the per-clip differences ``a - b`` (whose mean is the difference of the
  means), with its fixed seed. The mean difference rather than the ratio of means: it is linear
  in the per-clip values (the interpolated fronts' difference on a resample is exactly the
  difference of the resampled interpolated fronts) and never divides by a resampled mean that
  can be 0; its sign in a resample is the sign of ``ratio - 1``, so both would reach the same
  verdicts up to the percentiles' interpolation. ``(nan, nan)`` with fewer than 2 clips."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.ndim != 1 or a.shape != b.shape:
    raise ValueError(f"per-clip values must be two [N] arrays, got {a.shape} and {b.shape}")
  return bootstrap_ci(a - b, np.mean, num_resamples, level, seed)


def _sign(lo: float, hi: float) -> int:
  """+1 when an interval of A - B lies below 0 (A lower), -1 above, 0 when it holds 0."""
  return 1 if hi < 0 else (-1 if lo > 0 else 0)


def _unpaired_sign(a_lo: float, a_hi: float, b_lo: float, b_hi: float) -> int:
  """The sign of two intervals that do not overlap (0 when they do)."""
  return _sign(a_lo - b_hi, a_hi - b_lo)


def _paired_ci(ca, cb) -> tuple[float, float] | None:
  """``paired_diff_ci`` of two per-clip arrays, or None when either is missing or they differ
  in length."""
  return None if ca is None or cb is None or len(ca) != len(cb) else paired_diff_ci(ca, cb)


def _per_clip(row: Row, key: str) -> np.ndarray | None:
  """The row's per-clip ``key`` errors ``[N]`` (float64), or None when absent (older
  results.json), fewer than 2 or not all finite (non-finite values were written as null)."""
  values = row.get(f"{key}{PER_CLIP}")
  if not isinstance(values, (list, tuple)) or len(values) < 2:
    return None
  arr = np.asarray([math.nan if v is None else v for v in values], np.float64)
  return arr if np.isfinite(arr).all() else None


def _clips_within(pts: Sequence[Row], key: str, gbops: float) -> np.ndarray | None:
  """The front's per-clip errors ``[N]`` at budget ``gbops`` (at least its cheapest point's
  cost), interpolated clip by clip exactly like its error (``_best_within``: linear in log BOPs
  between the two bracketing front points ``pts``, the dearest point above them); None when a
  point with a nonzero weight has no per-clip values or two of them differ in length."""
  cost = np.log([float(r["gbops_avg"]) for r in pts])
  at = math.log(min(gbops, float(pts[-1]["gbops_avg"])))
  weights = [float(np.interp(at, cost, np.eye(len(pts))[i])) for i in range(len(pts))]
  used = [(w, _per_clip(r, key)) for w, r in zip(weights, pts) if w > 0]
  if not used or any(v is None for _, v in used) or len({len(v) for _, v in used}) != 1:
    return None
  return sum(w * v for w, v in used)


def beats_at_equal_cost(
  a_rows: Sequence[Row],
  b_rows: Sequence[Row],
  key: str,
  *,
  band: tuple[float, float] = (0.0, math.inf),
  what: str = "",
) -> Verdict:
  """Whether the front of ``a_rows`` has a lower ``key`` error than the front of ``b_rows`` at
  equal average BOPs, at every budget (% of W8A8 in ``band``) where either front has a point
  and both are defined.

  A budget is better / worse by the paired bootstrap of the mean per-clip difference
  (``paired_diff_ci``) when both fronts have per-clip values of equal length there, else by the
  non-overlap of the two 95% intervals (module docstring). Each detail line gives both errors
  with their intervals, the ratio, the outcome and the test with its interval; the summary says
  which test decided how many budgets."""
  if not a_rows or not b_rows:
    return NA
  a, a_lo, a_hi, a_pts = _interval_fronts(a_rows, key)
  b, b_lo, b_hi, b_pts = _interval_fronts(b_rows, key)
  budgets = {}
  for r in a_pts + b_pts:
    budgets.setdefault(float(r["gbops_avg"]), float(r["pct_w8a8"]))
  signs, ratios, details, paired_clips = [], [], [], []
  for gbops, pct in sorted(budgets.items()):
    ea, eb = _best_within(a, gbops), _best_within(b, gbops)
    if not band[0] <= pct <= band[1] or ea is None or eb is None or eb <= 0:
      continue
    la, ha, lb, hb = (_best_within(f, gbops) for f in (a_lo, a_hi, b_lo, b_hi))
    ca = _clips_within(a_pts, key, gbops)
    ci = _paired_ci(ca, _clips_within(b_pts, key, gbops))
    if ci is not None:
      sign = _sign(*ci)
      test = f"paired bootstrap over {len(ca)} clips: diff [{ci[0]:+.4f}, {ci[1]:+.4f}]"
      paired_clips.append(len(ca))
    else:
      sign = _unpaired_sign(la, ha, lb, hb)
      test = f"unpaired: intervals {'overlap' if sign == 0 else 'do not overlap'}"
    signs.append(sign)
    ratios.append(ea / eb)
    mark = {1: "better", -1: "worse", 0: "tie"}[sign]
    details.append(
      f"{pct:.1f}% of W8A8: {key} {ea:.4f} [{la:.4f}, {ha:.4f}] vs {eb:.4f} "
      f"[{lb:.4f}, {hb:.4f}] ({ea / eb:.2f}x, {mark}; {test})"
    )
  if not ratios:
    return Verdict("n/a", f"the {what or 'compared'} fronts share no cost range")
  summary = (
    f"err ratio {min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} budgets"
    f" ({sum(s > 0 for s in signs)} better, {sum(s < 0 for s in signs)} worse;"
    f" {_tests_used(paired_clips, len(ratios))})"
  )
  return _verdict(signs, what, summary, details)


def _tests_used(paired_clips: list[int], budgets: int) -> str:
  """'paired over 240 clips', 'unpaired intervals' or 'paired at 3 of 4 budgets'."""
  if not paired_clips:
    return "unpaired intervals"
  clips = f"{min(paired_clips)}" + (
    f"-{max(paired_clips)}" if max(paired_clips) != min(paired_clips) else ""
  )
  if len(paired_clips) == budgets:
    return f"paired over {clips} clips"
  return f"paired over {clips} clips at {len(paired_clips)} of {budgets} budgets"
