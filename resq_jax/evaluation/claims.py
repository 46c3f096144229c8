"""The claims table of docs/results.md: each claim of the ResQ paper checked on evaluated sweeps.

A *cell* is one evaluated sweep (a task on one motion regime): the rows of its
``report/results.json`` (``EvalResult.to_row()``) and its metadata. Every claim is a pure
function of a cell's rows that returns a :class:`Verdict`: 'holds', 'does not hold', 'depends'
(significant in both directions at different budgets), 'tie' (no significant difference at
any budget) or 'n/a' (the cell lacks the rows), with the numbers behind it.

Equal-cost claims ("A beats B at equal BOPs") compare two fronts (the settings of a group that
no other setting of the group beats on both cost and fidelity error) at equal *budget*: at every
budget where one of them has a point, above both fronts' cheapest points and inside the claim's
budget band, each group is represented by what it reaches within the budget (interpolated
linearly in log BOPs between its front points, ``resq_jax.evaluation.pareto.Front``; above its
dearest point, that point's error: it fits the budget).

Whether a budget counts as better, worse or a tie is decided by a *paired* bootstrap over clips
when both rows carry their per-clip errors (``<key>_per_clip``, written by
``resq_jax.eval_lib``): every setting of a sweep is evaluated on the same clips in the same
order, so the two groups' per-clip errors at the budget (interpolated clip by clip with the
front's weights, so that their mean is the front's error) are resampled with the same clip
indices, and the 95% percentile interval of the mean difference A - B decides (`paired_diff_ci`:
better when it lies below 0, worse above 0, else a tie). Pairing removes the variation between
clips that both settings share (hard clips are hard for both), so it separates far closer
fronts than comparing the two unpaired intervals. Rows without per-clip values (results.json
files written before they existed) fall back to the conservative unpaired test: better (worse)
only when the two points' 95% intervals (interpolated like the error) do not overlap. Each
budget's detail line names the test it used and prints its interval.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from resq_jax.evaluation.metrics import PER_CLIP, bootstrap_ci
from resq_jax.evaluation.pareto import Front, finite_float, fq_front

# The fidelity error the rows were compared by (``fidelity_error``: rel_l2 / kp_dist).
from resq_jax.evaluation.report import primary_error as error_key

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


def _select(rows, family: str, source: str = "ptq", where: Callable[[Row], bool] | None = None):
  return [
    r
    for r in rows
    if r.get("family") == family and r.get("source") == source and (where is None or where(r))
  ]


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


def _static(rows, source="ptq", ref_mode="closed"):
  return _select(rows, "resq", source, lambda r: r.get("ref_mode") == ref_mode)


def _named(rows, name: str) -> Row | None:
  return next((r for r in rows if r.get("name") == name), None)


def residual_variance(rows: Sequence[Row], meta: Mapping[str, Any]) -> Verdict:
  """Residuals (x_t - x_{t-1}) have a lower variance than activations, per layer."""
  v = (meta or {}).get("variances") or {}
  ratios = [x for x in (v.get("ratio_pct") or []) if finite_float(x) is not None]
  if not ratios:
    return NA
  med = sorted(ratios)[len(ratios) // 2]
  below = sum(x < 100 for x in ratios)
  verdict = "holds" if below == len(ratios) else ("does not hold" if not below else "depends")
  return Verdict(
    verdict,
    f"residual variance {min(ratios):.0f}-{max(ratios):.0f}% of the activation's "
    f"(median {med:.0f}%, {below}/{len(ratios)} layers below 100%)",
  )


def residuals_quantize_better(rows: Sequence[Row], meta=None) -> Verdict:
  """W4A4 residuals (static ResQ with W8A8 keys at the longest period evaluated, so most frames
  are residuals) stay closer to float than W4A4 frames."""
  key = error_key(rows)
  res = None
  for k in (64, 32, 16, 8, 4, 2):
    res = res or _named(rows, f"ResQ K={k} closed W8A8/W4A4")
  fq = _named(rows, "FQ W4A4")
  if key is None or res is None or fq is None or finite_float(fq.get(key)) in (None, 0.0):
    return NA
  err, ref = float(res[key]), float(fq[key])
  lo, hi = res.get(f"{key}_ci") or [err, err]
  flo, fhi = fq.get(f"{key}_ci") or [ref, ref]
  ci = _paired_ci(_per_clip(res, key), _per_clip(fq, key))
  if ci is not None:
    sign, test = _sign(*ci), f"; paired diff [{ci[0]:+.4f}, {ci[1]:+.4f}]"
  else:
    sign, test = _unpaired_sign(lo, hi, flo, fhi), "; unpaired intervals"
  return _verdict(
    [sign],
    "",
    f"{res['name']}: {key} {err:.4f} [{lo:.4f}, {hi:.4f}] vs FQ W4A4 {ref:.4f} "
    f"[{flo:.4f}, {fhi:.4f}] ({err / ref:.2f}x{test})",
    (),
  )


def _band_claim(a, b, rows, band=(0.0, math.inf), what=""):
  key = error_key(rows)
  return NA if key is None else beats_at_equal_cost(a, b, key, band=band, what=what)


def resq_beats_fq_ptq(rows, meta=None) -> Verdict:
  return _band_claim(_static(rows), _select(rows, "fq"), rows, what="static ResQ")


def resq_beats_fq_ptq_band(rows, meta=None) -> Verdict:
  return _band_claim(_static(rows), _select(rows, "fq"), rows, (25.0, 50.0), "static ResQ")


def resq_beats_fq_qat(rows, meta=None) -> Verdict:
  a = _select(rows, "resq", "qat") + _select(rows, "dynamic", "qat")
  return _band_claim(a, _select(rows, "fq", "qat"), rows, what="QAT ResQ")


def resq_beats_hold(rows, meta=None) -> Verdict:
  return _band_claim(_static(rows), _select(rows, "hold"), rows, what="static ResQ")


def dynamic_beats_hold(rows, meta=None) -> Verdict:
  return _band_claim(_select(rows, "dynamic"), _select(rows, "hold"), rows, what="dynamic ResQ")


def dynamic_beats_static(rows, meta=None) -> Verdict:
  return _band_claim(_select(rows, "dynamic"), _static(rows), rows, what="dynamic ResQ")


def _peer_claim(peer: str):
  def claim(rows, meta=None) -> Verdict:
    resq = _static(rows) + _select(rows, "dynamic")
    return _band_claim(resq, _select(rows, peer), rows, what="ResQ")

  claim.__name__ = f"resq_beats_{peer}"
  return claim


def interval_trend(rows, meta=None) -> Verdict:
  """Longer keyframe intervals cost less and err more (W8A8 keys, W4A4 residuals, closed; the
  periods the cell evaluated, at least two)."""
  key = error_key(rows)
  points = [(k, _named(rows, f"ResQ K={k} closed W8A8/W4A4")) for k in (2, 4, 8, 16, 32, 64)]
  points = [(k, p) for k, p in points if p is not None]
  if key is None or len(points) < 2:
    return NA
  errs = [float(p[key]) for _, p in points]
  pcts = [float(p["pct_w8a8"]) for _, p in points]
  rising = all(a < b for a, b in zip(errs, errs[1:]))
  summary = ", ".join(f"K={k}: {e:.4f} at {c:.0f}%" for (k, _), e, c in zip(points, errs, pcts))
  falling = all(a > b for a, b in zip(errs, errs[1:]))
  return Verdict("holds" if rising else ("does not hold" if falling else "depends"), summary)


def ref_mode_order(rows, meta=None) -> Verdict:
  """closed >= key >= prev in fidelity (lower error), at K = 4 and 16 with W4A4 residuals."""
  key = error_key(rows)
  if key is None:
    return NA
  parts, ok = [], []
  for k in (4, 16):
    errs = [_named(rows, f"ResQ K={k} {m} W8A8/W4A4") for m in ("closed", "key", "prev")]
    if any(e is None for e in errs):
      continue
    e = [float(x[key]) for x in errs]
    ok.append(e[0] <= e[1] <= e[2])
    parts.append(f"K={k}: closed {e[0]:.4f}, key {e[1]:.4f}, prev {e[2]:.4f}")
  if not ok:
    return NA
  verdict = "holds" if all(ok) else ("does not hold" if not any(ok) else "depends")
  return Verdict(verdict, "; ".join(parts))


def dynamic_goal(rows, meta=None) -> Verdict:
  """Goal: dynamic ResQ within 1 point of float at <= 25% of W8A8 BOPs."""
  fp = next((r for r in rows if r.get("family") == "fp"), None)
  cand = [
    r
    for r in _select(rows, "dynamic") + _select(rows, "dynamic", "qat")
    if finite_float(r.get("pct_w8a8")) is not None and r["pct_w8a8"] <= 25.0
  ]
  if fp is None or not cand:
    return NA
  best = max(cand, key=lambda r: r["metric"])
  gap = 100 * (fp["metric"] - best["metric"])
  return Verdict(
    "holds" if gap <= 1.0 else "does not hold",
    f"best {best['name']} ({best['source']}) at {best['pct_w8a8']:.1f}%: "
    f"{100 * best['metric']:.1f} vs float {100 * fp['metric']:.1f} "
    f"({abs(gap):.1f} pts {'below' if gap >= 0 else 'above'} float)",
  )


TWIN_KEYS = ("family", "key_bits", "residual_bits", "period", "ref_mode", "policy_step")


def _twin_key(row: Row) -> tuple:
  return tuple(tuple(v) if isinstance(v, list) else v for v in (row.get(k) for k in TWIN_KEYS))


def _paired_fidelity(a: Row, b: Row, key: str | None) -> tuple[str, tuple[float, float] | None]:
  """(``' (rel_l2 0.1100 vs 0.1200, paired diff [-0.0150, -0.0050])'``, the interval), or
  ('', None) without per-clip errors on both rows."""
  ci = None if key is None else _paired_ci(_per_clip(a, key), _per_clip(b, key))
  if ci is None:
    return "", None
  lo, hi = ci
  text = f" ({key} {float(a[key]):.4f} vs {float(b[key]):.4f}, paired diff [{lo:+.4f}, {hi:+.4f}])"
  return text, (lo, hi)


def qat_at_least_ptq(rows, meta=None) -> Verdict:
  """Every QAT run matches or beats its PTQ twin (same family, grids, period, reference mode
  and policy step). A run beats it with a task metric at least its twin's (point estimates);
  it matches it when its metric is lower but its fidelity error is not significantly higher
  (the paired 95% interval over clips of QAT - PTQ reaches 0 or below): a lower metric that
  the clips cannot tell from noise on the error QAT optimises. It falls short when its metric
  is lower and it is significantly further from float, or its metric is lower and the rows
  have no per-clip errors to tell."""
  ptq = {_twin_key(r): r for r in rows if r.get("source") == "ptq"}
  pairs = [(r, ptq.get(_twin_key(r))) for r in rows if r.get("source") == "qat"]
  pairs = [(q, p) for q, p in pairs if p is not None]
  if not pairs:
    return NA
  deltas, signs, details, key = [], [], [], error_key(rows)
  for q, p in pairs:
    d = 100 * (q["metric"] - p["metric"])
    text, ci = _paired_fidelity(q, p, key)
    sign = 1 if d >= 0 else (0 if ci is not None and ci[0] <= 0 else -1)
    deltas.append(d)
    signs.append(sign)
    mark = {1: "beats", 0: "matches", -1: "falls short"}[sign]
    details.append(
      f"{q['name']} {100 * q['metric']:.1f} vs PTQ {p['name']} {100 * p['metric']:.1f}"
      f"{text}: {mark}"
    )
  beats, short = sum(s > 0 for s in signs), sum(s < 0 for s in signs)
  verdict = "holds" if not short else ("does not hold" if short == len(signs) else "depends")
  summary = (
    f"{beats}/{len(signs)} QAT runs >= their PTQ twin, {len(signs) - beats - short} match "
    f"(lower metric, fidelity not significantly worse), {short} fall short (delta "
    f"{min(deltas):+.1f} to {max(deltas):+.1f} pts): " + "; ".join(details)
  )
  return Verdict(verdict, summary, tuple(details))


# (id, claim text, function): the rows of the claims table, in order.
CLAIMS: tuple[tuple[str, str, Callable], ...] = (
  ("variance", "Residuals have lower variance than activations (per layer)", residual_variance),
  (
    "quantize",
    "W4A4 residuals (longest K) stay closer to float than W4A4 frames",
    residuals_quantize_better,
  ),
  ("fq_ptq", "Static ResQ beats FQ at equal BOPs (PTQ, all budgets)", resq_beats_fq_ptq),
  ("fq_ptq_band", "Static ResQ beats FQ at equal BOPs, 25-50% W8A8 (PTQ)", resq_beats_fq_ptq_band),
  ("fq_qat", "ResQ beats FQ at equal BOPs under QAT", resq_beats_fq_qat),
  ("qat_ptq", "QAT matches or beats PTQ for every family", qat_at_least_ptq),
  ("hold", "Static ResQ beats keyframe hold at equal BOPs", resq_beats_hold),
  ("dyn_hold", "Dynamic ResQ beats keyframe hold at equal BOPs", dynamic_beats_hold),
  ("dyn_static", "Dynamic ResQ beats static ResQ at equal BOPs", dynamic_beats_static),
  ("skipconv", "ResQ beats Skip-Conv-style gating at equal BOPs", _peer_claim("skipconv")),
  ("deltacnn", "ResQ beats DeltaCNN-style updates at equal BOPs", _peer_claim("deltacnn")),
  ("videoiq", "ResQ beats VideoIQ-style per-frame precision at equal BOPs", _peer_claim("videoiq")),
  ("trend", "Longer keyframe interval: fewer BOPs, more error", interval_trend),
  ("ref_modes", "closed >= key >= prev (fidelity)", ref_mode_order),
  ("goal_dynamic", "Goal: dynamic ResQ within 1 pt of float at <= 25% W8A8", dynamic_goal),
)


def evaluate_claims(rows: Sequence[Row], meta: Mapping[str, Any] | None = None) -> dict:
  """``{claim id: Verdict}`` for one cell."""
  return {cid: fn(rows, meta or {}) for cid, _, fn in CLAIMS}


def claims_markdown(cells: Sequence[tuple[str, Sequence[Row], Mapping[str, Any]]]) -> str:
  """The claims table (claims x cells: the verdict) and, per claim, the numbers of each cell.
  ``cells``: ``(label, rows, meta)`` per evaluated sweep, e.g. ``('segmentation / slow_pan',
  rows, meta)``."""
  results = [(label, evaluate_claims(rows, meta)) for label, rows, meta in cells]
  head = "| Claim | " + " | ".join(label for label, _ in results) + " |"
  lines = [head, "| --- |" + " :-: |" * len(results)]
  for cid, text, _ in CLAIMS:
    lines.append(f"| {text} | " + " | ".join(v[cid].verdict for _, v in results) + " |")
  lines.append("")
  for cid, text, _ in CLAIMS:
    lines += [f"**{text}**", ""]
    for label, verdicts in results:
      v = verdicts[cid]
      lines.append(f"- {label}: **{v.verdict}**. {v.summary}")
    lines.append("")
  return "\n".join(lines)


__all__ = [
  "CLAIMS",
  "VERDICTS",
  "Verdict",
  "beats_at_equal_cost",
  "claims_markdown",
  "error_key",
  "effective_rows",
  "evaluate_claims",
  "front_summary",
  "decision_matrix",
  "paired_diff_ci",
]


# The summaries of a results page live in summary.py; re-exported for existing callers.
from resq_jax.evaluation.summary import (  # noqa: E402
  decision_matrix,
  effective_rows,
  front_summary,
)
