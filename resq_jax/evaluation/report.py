"""Evaluation results on disk: `results.json` (machine-readable) and `results.md` (a table).

A *row* is one evaluated setting, a flat dict: ``resq_jax.eval_lib.EvalResult.to_row()``
writes them. Recognised keys (all optional except that a row without its metric and
`gbops_avg` shows dashes):

  name          display name; derived from the fields below when absent (`setting_name`)
  family        'fp' | 'fq' | 'resq' | 'dynamic' (sort order of the table and plot markers)
  source        where the weights come from: 'fp' | 'ptq' | 'qat'
  key_bits, residual_bits    (w, a) pairs (or ints, or strings like 'W8A8')
  period        keyframe period K;  ref_mode  'closed' | 'key' | 'prev'
  policy, threshold    dynamic-ResQ policy name and its threshold(s) (ladder)
  policy_step   residual step of the fixed-step policy
  metric_name   the task's headline metric: 'miou' | 'pck' (the Pareto column)
  miou          mean IoU as a fraction in [0, 1] (shown in %); likewise `pck`,
                `pixel_accuracy`
  gbops_avg, gbops_peak    1e9 bit operations per frame: clip average and peak
  pct_w8a8      average BOPs in % of W8A8 frame quantization (``quant.cost.pct_of_w8a8``)
  gbops_w8a8    the W8A8 reference itself (also `meta['gbops_w8a8']`)
  state_bytes   memory of the ResQ carry in bytes (shown in KiB)

Any other key is kept in `results.json` untouched. Non-finite floats are written as `null`
(strict JSON), so `load_results` returns `None` where a NaN or inf was written. Both files are
replaced atomically (written to a temporary file in the same directory, then renamed), so a
reader never sees a half-written file; they are readable like the plots (0666 less the
umask, e.g. 0644), not mkstemp's private 0600.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from resq_jax.evaluation.pareto import pareto_front

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
FORMAT_VERSION = 1
FAMILY_ORDER = ("fp", "fq", "resq", "dynamic")
FAMILY_TITLES = {"fp": "FP32", "fq": "FQ", "resq": "ResQ", "dynamic": "Dynamic ResQ"}
MISSING = "–"

# Optional quality columns: (row key, header). mIoU is always shown; the others when present.
METRIC_LABELS = {"miou": "mIoU", "pck": "PCK@0.2", "pixel_accuracy": "Pixel acc."}
_QUALITY_COLUMNS = tuple((k, f"{v} (%)") for k, v in METRIC_LABELS.items())


# --- JSON ------------------------------------------------------------------------------------


def to_json_compatible(value: Any) -> Any:
  """NumPy/JAX scalars and arrays -> Python numbers and lists; NaN and inf -> None."""
  if isinstance(value, Mapping):
    return {str(k): to_json_compatible(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_json_compatible(v) for v in value]
  if isinstance(value, (str, bool)) or value is None:
    return value
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.bool_):
    return bool(value)
  if hasattr(value, "__array__"):  # np.ndarray, jax.Array
    arr = np.asarray(value)
    return to_json_compatible(arr.item() if arr.ndim == 0 else arr.tolist())
  return str(value)


def _atomic_write_text(path: str, text: str) -> None:
  directory = os.path.dirname(path) or "."
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # readable like the PNGs, not mkstemp's 0600
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_results(
  workdir: str | os.PathLike,
  rows: Sequence[Mapping[str, Any]],
  meta: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
  """Writes `results.json` and `results.md` into `workdir`; returns their paths."""
  workdir = os.fspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  meta = dict(meta or {})
  payload = {
    "format_version": FORMAT_VERSION,
    "meta": to_json_compatible(meta),
    "rows": [to_json_compatible(dict(r)) for r in rows],
  }
  json_path = os.path.join(workdir, RESULTS_JSON)
  md_path = os.path.join(workdir, RESULTS_MD)
  _atomic_write_text(json_path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
  _atomic_write_text(md_path, results_markdown(payload["rows"], payload["meta"]))
  return json_path, md_path


def load_results(workdir: str | os.PathLike) -> tuple[list[dict], dict]:
  """(rows, meta) as written by `write_results` (non-finite numbers come back as None)."""
  with open(os.path.join(os.fspath(workdir), RESULTS_JSON), encoding="utf-8") as f:
    payload = json.load(f)
  return payload["rows"], payload["meta"]


# --- Names -----------------------------------------------------------------------------------


def _bits_str(bits: Any) -> str:
  if isinstance(bits, (list, tuple)) and len(bits) == 2:
    return f"W{bits[0]}A{bits[1]}"
  if isinstance(bits, (int, np.integer)):
    return f"{int(bits)}b"
  return str(bits)


def _threshold_str(threshold: Any) -> str:
  if isinstance(threshold, (list, tuple)):
    return ",".join(f"{t:g}" if isinstance(t, (int, float)) else str(t) for t in threshold)
  return f"{threshold:g}" if isinstance(threshold, (int, float)) else str(threshold)


def setting_name(row: Mapping[str, Any]) -> str:
  """`row['name']` if given, else a short name built from the row's fields.

  e.g. 'FP32', 'FQ W8A8', 'ResQ 8b/4b K=4 closed', 'Dyn ladder τ=0.1 K=8', plus ' QAT' for
  quantization-aware training.
  """
  if row.get("name"):
    return str(row["name"])
  family = row.get("family")
  if family == "fp":
    return "FP32"
  parts: list[str] = []
  if family == "fq":
    w, a = _wa(row)
    parts.append(f"FQ W{w}A{a}")
  elif family in ("resq", "dynamic"):
    parts.append("ResQ" if family == "resq" else "Dyn")
    if family == "resq" or "key_bits" in row:
      key = _bits_str(row.get("key_bits", "?"))
      res = _bits_str(row.get("residual_bits", "?"))
      parts.append(f"{key}/{res}" if family == "resq" else f"key {key}")
    if family == "dynamic":
      if row.get("policy"):
        parts.append(str(row["policy"]))
      if row.get("threshold") is not None:
        parts.append(f"τ={_threshold_str(row['threshold'])}")
      if row.get("policy_step") is not None:
        parts.append(f"step={_threshold_str(row['policy_step'])}")
    if row.get("period") is not None:
      parts.append(f"K={row['period']}")
    if row.get("ref_mode"):
      parts.append(str(row["ref_mode"]))
  else:
    parts.append(str(family) if family else "setting")
  if row.get("source") == "qat":
    parts.append("QAT")
  return " ".join(parts)


def _wa(row: Mapping[str, Any]) -> tuple[Any, Any]:
  """(weight bits, activation bits) of a frame-quantized row (from `key_bits`)."""
  bits = row.get("key_bits")
  if isinstance(bits, (list, tuple)) and len(bits) == 2:
    return bits[0], bits[1]
  return "?", "?"


def _compact_number(x: Any) -> str:
  if isinstance(x, (int, float)) and not isinstance(x, bool):
    text = f"{x:g}"
    return text[1:] if text.startswith("0.") else text
  return str(x)


def short_name(row: Mapping[str, Any]) -> str:
  """A plot label: `row['label']` if given, else a compact name from the fields.

  e.g. 'FP32', 'W8A8', 'W4A4 QAT', 'ResQ 8/4 K4' (also for bits (8, 8)/(4, 4)),
  'ResQ 8/4 K8 prev', 'Dyn ladder τ.1/.3 K8'
  (the default reference mode 'closed' is left out; `policy_step` shows as 's2'); rows of
  unknown family use `setting_name`.
  """
  if row.get("label"):
    return str(row["label"])
  family = row.get("family")
  if family not in FAMILY_ORDER:
    return setting_name(row)
  if family == "fp":
    return "FP32"

  def bits(v):  # (8, 8) -> '8', (8, 4) -> 'W8A4'
    if isinstance(v, (list, tuple)) and len(v) == 2:
      return str(v[0]) if v[0] == v[1] else f"W{v[0]}A{v[1]}"
    return str(v)

  if family == "fq":
    parts = ["W{}A{}".format(*_wa(row))]
  elif family == "resq":
    parts = [f"ResQ {bits(row.get('key_bits', '?'))}/{bits(row.get('residual_bits', '?'))}"]
  else:
    parts = ["Dyn" + (f" {row['policy']}" if row.get("policy") else "")]
    thr = row.get("threshold")
    if thr is not None:
      thr = thr if isinstance(thr, (list, tuple)) else [thr]
      parts.append("τ" + "/".join(_compact_number(t) for t in thr))
    if row.get("policy_step") is not None:
      parts.append(f"s{_compact_number(row['policy_step'])}")
  if family in ("resq", "dynamic"):
    if row.get("period") is not None:
      parts.append(f"K{row['period']}")
    if row.get("ref_mode") and row.get("ref_mode") != "closed":
      parts.append(str(row["ref_mode"]))
  if row.get("source") == "qat":
    parts.append("QAT")
  return " ".join(parts)


# --- Markdown --------------------------------------------------------------------------------


def finite_float(value: Any) -> float | None:
  """A finite float, or None for missing / non-numeric / non-finite values."""
  if isinstance(value, bool) or value is None:
    return None
  try:
    x = float(value)
  except (TypeError, ValueError):
    return None
  return x if math.isfinite(x) else None


def format_quantity(x: float | None) -> str:
  """Compact fixed-point: 2 decimals from 1, 1 decimal from 100, 3 below 1, e-notation < 0.01."""
  if x is None:
    return MISSING
  ax = abs(x)
  if ax >= 100:
    return f"{x:.1f}"
  if ax >= 1:
    return f"{x:.2f}"
  if ax >= 0.01 or x == 0:
    return f"{x:.3f}"
  return f"{x:.2e}"


def _percent(x: float | None) -> str:
  return MISSING if x is None else f"{100 * x:.2f}"


def w8a8_reference_gbops(
  rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None = None
) -> float | None:
  """GBOPs/frame of W8A8 frame quantization, as the evaluation measured it
  (``quant.cost.w8a8_bops``): `meta['gbops_w8a8']`, else the first row's `gbops_w8a8`, else
  the first FQ W8A8 row's average; None when nothing tells."""
  if meta and finite_float(meta.get("gbops_w8a8")) is not None:
    return finite_float(meta["gbops_w8a8"])
  for row in rows:
    if finite_float(row.get("gbops_w8a8")) is not None:
      return finite_float(row["gbops_w8a8"])
  for row in rows:
    if (
      row.get("family") == "fq"
      and _wa(row) == (8, 8)
      and finite_float(row.get("gbops_avg")) is not None
    ):
      return finite_float(row["gbops_avg"])
  return None


def primary_metric(rows: Sequence[Mapping[str, Any]]) -> str:
  """The task metric of the rows (`metric_name` of the first row that has one; 'miou')."""
  return next((str(r["metric_name"]) for r in rows if r.get("metric_name")), "miou")


def sort_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
  """By family (FP, FQ, ResQ, dynamic, others), then ascending average cost, then name."""

  def key(row):
    family = row.get("family")
    rank = FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)
    cost = finite_float(row.get("gbops_avg"))
    return (rank, str(family or ""), math.inf if cost is None else cost, setting_name(row))

  return sorted(rows, key=key)


def _meta_line(meta: Mapping[str, Any]) -> str:
  items = [
    f"{k}: {v}" for k, v in meta.items() if isinstance(v, (str, int, float, bool)) or v is None
  ]
  return " · ".join(items)


def results_markdown(
  rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None = None
) -> str:
  """The Markdown report: a meta line, the table (see module doc) and a note on units."""
  meta = dict(meta or {})
  rows = sort_rows(rows)
  reference = w8a8_reference_gbops(rows, meta)
  metric = primary_metric(rows)
  quality = [
    (k, h)
    for k, h in _QUALITY_COLUMNS
    if k == metric or any(finite_float(r.get(k)) is not None for r in rows)
  ]
  points = [(finite_float(r.get("gbops_avg")), finite_float(r.get(metric))) for r in rows]
  front = (
    set(
      pareto_front(
        [(np.nan if c is None else c, np.nan if q is None else q) for c, q in points]
      ).tolist()
    )
    if rows
    else set()
  )

  header = (
    ["Setting", "Family", "Source"]
    + [h for _, h in quality]
    + ["GBOPs/frame avg", "GBOPs/frame peak", "% of W8A8 FQ", "State (KiB)", "Pareto"]
  )
  lines = ["# Evaluation results", ""]
  if meta:
    lines += [_meta_line(meta), ""]
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|" + "|".join([" --- "] * 3 + [" ---: "] * (len(header) - 4) + [" :-: "]) + "|")
  for i, row in enumerate(rows):
    state = finite_float(row.get("state_bytes"))
    pct = finite_float(row.get("pct_w8a8"))
    cells = (
      [
        setting_name(row).replace("|", "\\|"),
        str(row.get("family") or MISSING),
        str(row.get("source") or MISSING),
      ]
      + [_percent(finite_float(row.get(k))) for k, _ in quality]
      + [
        format_quantity(finite_float(row.get("gbops_avg"))),
        format_quantity(finite_float(row.get("gbops_peak"))),
        MISSING if pct is None else f"{pct:.1f}",
        MISSING if state is None else f"{state / 1024:.1f}",
        "✓" if i in front else "",
      ]
    )
    lines.append("| " + " | ".join(cells) + " |")
  lines += [
    "",
    "GBOPs = 1e9 bit operations (MACs · b_w · b_a) per frame, clip average and "
    "peak; % of W8A8 FQ compares average BOPs with 8-bit frame quantization"
    + ("" if reference is None else f" ({format_quantity(reference)} GBOPs/frame)")
    + "; state = memory of the ResQ carry; Pareto ✓ = no other setting has higher "
    f"{METRIC_LABELS.get(metric, metric)} at lower or equal average cost.",
    "",
  ]
  return "\n".join(lines)
