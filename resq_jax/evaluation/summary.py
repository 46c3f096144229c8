"""Summaries of a sweep's rows for the results page (benchmarks/comparison.py): where each
family sits per budget band (`front_summary`), the PTQ decision matrix over cells and bands
(`decision_matrix`), and the renaming of rows whose period exceeded the clip length
(`effective_rows`). The verdicts themselves are in claims.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from resq_jax.evaluation.pareto import finite_float
from resq_jax.evaluation.report import primary_error as error_key

Row = Mapping[str, Any]


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
