"""The claims table of docs/results.md: each claim of the ResQ paper checked on evaluated sweeps.

A *cell* is one evaluated sweep (a task on one motion regime): the rows of its
``report/results.json`` (``EvalResult.to_row()``) and its metadata. Every claim is a pure
function of a cell's rows that returns a :class:`Verdict`: 'holds', 'does not hold', 'depends'
(significant in both directions at different budgets), 'tie' (no significant difference at
any budget) or 'n/a' (the cell lacks the rows), with the numbers behind it.

How two groups are compared at equal cost (fronts, budgets, the paired bootstrap over clips):
resq_jax/evaluation/equal_cost.py.

Summaries of a sweep's rows for the results page (benchmarks/comparison.py): where each
family sits per budget band (`front_summary`), the PTQ decision matrix over cells and bands
(`decision_matrix`), and the renaming of rows whose period exceeded the clip length
(`effective_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from resq_jax.evaluation.equal_cost import (
  NA,
  Verdict,
  _paired_ci,
  _per_clip,
  _sign,
  _unpaired_sign,
  _verdict,
  beats_at_equal_cost,
)
from resq_jax.evaluation.pareto import finite_float
from resq_jax.evaluation.report import primary_error as error_key

Row = Mapping[str, Any]


def _select(rows, family: str, source: str = "ptq", where: Callable[[Row], bool] | None = None):
  return [
    r
    for r in rows
    if r.get("family") == family and r.get("source") == source and (where is None or where(r))
  ]


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
  "claims_markdown",
  "effective_rows",
  "evaluate_claims",
  "front_summary",
  "decision_matrix",
]


def effective_rows(rows: list[Row], num_frames: int) -> list[Row]:
  """Rows of sweeps evaluated before periods were capped at the clip length: a period K > T
  runs exactly as K = T (one keyframe per clip), so such a row is renamed to K = T and dropped
  when the sweep also holds that setting (the same computation)."""
  out, seen = [], set()
  for row in rows:
    period = row.get("period") or 1
    if period > num_frames:
      row = dict(row, name=row["name"].replace(f"K={period}", f"K={num_frames}"))
      row["period"] = num_frames
    key = (row["name"], row.get("source"))
    if key not in seen:
      seen.add(key)
      out.append(row)
  return out


BANDS = ((0.0, 12.5), (12.5, 25.0), (25.0, 50.0), (50.0, 100.0))


def front_summary(rows: Sequence[Row], bands=BANDS) -> list[str]:
  """Where each family sits: per budget band (% of W8A8 BOPs), the setting with the lowest
  fidelity error and the best setting of every other family there, with their metric
  intervals. One line per band."""
  key = error_key(rows)
  if key is None:
    return []
  lines = []
  for lo, hi in bands:
    inside = [r for r in rows if r.get("family") != "fp" and _in_band(r, key, (lo, hi))]
    if not inside:
      continue
    best = {}
    for r in inside:
      tag = f"{r['family']} ({r['source']})"
      if tag not in best or r[key] < best[tag][key]:
        best[tag] = r
    ranked = sorted(best.items(), key=lambda kv: kv[1][key])
    parts = []
    for tag, r in ranked:
      ci = r.get("metric_ci") or r.get(f"{r.get('metric_name', '')}_ci")
      ci_text = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""
      parts.append(
        f"{tag}: {r['name']} {key} {r[key]:.3f}, metric {100 * r['metric']:.1f}{ci_text}"
        f" at {r['pct_w8a8']:.0f}%"
      )
    lines.append(f"- {lo:g}-{hi:g}% of W8A8: " + "; ".join(parts))
  return lines


def _in_band(row: Row, key: str, band: tuple[float, float]) -> bool:
  pct = finite_float(row.get("pct_w8a8"))
  return pct is not None and band[0] < pct <= band[1] and finite_float(row.get(key)) is not None


def decision_matrix(cells: Sequence[tuple[str, Sequence[Row]]], bands=BANDS) -> list[str]:
  """Markdown table lines, PTQ at a glance: per cell (a row of the table) and budget band
  (a column, % of W8A8 BOPs), the family whose setting is closest to float (lowest fidelity
  error in the band) and ResQ's best err/FQ there (static or dynamic, ``err_fq_ratio`` of the
  report; bold below 1: ResQ beats frame quantization at equal cost somewhere in the band)."""
  lines = [
    "| Cell | " + " | ".join(f"{lo:g}-{hi:g}% of W8A8" for lo, hi in bands) + " |",
    "| --- |" + " --- |" * len(bands),
  ]
  for label, rows in cells:
    key, entries = error_key(rows), []
    for band in bands:
      inside = [
        r
        for r in rows
        if key is not None
        and r.get("source") == "ptq"
        and r.get("family") != "fp"
        and _in_band(r, key, band)
      ]
      if not inside:
        entries.append("-")
        continue
      best = min(inside, key=lambda r: float(r[key]))
      ratios = [
        x
        for r, x in ((r, finite_float(r.get("err_fq_ratio"))) for r in inside)
        if x is not None and r.get("family") in ("resq", "dynamic")
      ]
      resq = "no ResQ" if not ratios else f"ResQ {min(ratios):.2f}x"
      entries.append(
        f"{best['family']}; " + (f"**{resq}**" if ratios and min(ratios) < 1 else resq)
      )
    lines.append(f"| {label} | " + " | ".join(entries) + " |")
  return lines
