"""Evaluation results on disk: `results.json` (machine-readable) and `results.md` (a table).

A *row* is one evaluated setting, a flat dict: ``resq_jax.experiment.evaluate.EvalResult.to_row()``
writes them. Recognised keys (all optional except that a row without its metric and
`gbops_avg` shows dashes; rows written before a key existed load and show 'n/a' there):

  name          display name; derived from the fields below when absent (`setting_name`)
  family        'fp' | 'fq' | 'resq' | 'dynamic' or any other string (e.g. the control
                families 'hold', 'skipconv', ...: sorted after the known ones, plotted with
                a marker and colour of their own)
  source        where the weights come from: 'fp' | 'ptq' | 'qat'
  key_bits, residual_bits    (w, a) pairs (or ints, or strings like 'W8A8')
  period        keyframe period K;  ref_mode  'closed' | 'key' | 'prev'
  policy, threshold    dynamic-ResQ policy name and its threshold(s) (ladder)
  policy_step   residual step of the fixed-step policy
  metric_name   the task's headline metric: 'miou' | 'pck' (the Pareto column)
  miou          mean IoU as a fraction in [0, 1] (shown in %); likewise `pck`,
                `pixel_accuracy`
  miou_ci       its 95% bootstrap interval over clips [lo, hi] (likewise `pck_ci`; the older
                `pck_ci95` is read too)
  fidelity_error    the task's fidelity error key: 'rel_l2' (segmentation) | 'kp_dist' (pose)
  agreement, kp_dist, rel_l2    fidelity to the FP model (fraction of pixels with the FP
                argmax; mean joint distance to the FP model's joints in pixels; relative L2 of
                the outputs), each with `<key>_ci` and the per-frame-index curve `<key>_by_t`
  gbops_avg, gbops_peak    1e9 bit operations per frame: clip average and peak
  pct_w8a8      average BOPs in % of W8A8 frame quantization (``quant.cost.pct_of_w8a8``)
  gbops_w8a8    the W8A8 reference itself (also `meta['gbops_w8a8']`)
  state_bytes   memory of the ResQ carry in bytes (shown in KiB)

`write_results` adds the comparison columns to every row (`equal_cost_columns`):
`err_fq_ratio` (err/FQ: the fidelity error over the FQ front's at equal average BOPs,
``pareto.equal_cost_ratio``), `delta_fq_pts` (the metric minus the FQ front's at equal cost,
points) and `pareto` (bool). Table columns: Setting, Family, Source, metric [95% CI],
agreement or kp dist, rel L2, err/FQ, Δmetric vs FQ, GBOPs/frame avg and peak, % of W8A8 FQ,
state (KiB), Pareto.

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

from resq_jax.evaluation.pareto import (
  equal_cost_metric_delta,
  equal_cost_ratio,
  finite_float,
  fq_front,
  pareto_front,
)

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
FORMAT_VERSION = 1
FAMILY_ORDER = ("fp", "fq", "resq", "dynamic")
FAMILY_TITLES = {"fp": "FP32", "fq": "FQ", "resq": "ResQ", "dynamic": "Dynamic ResQ"}
MISSING = "–"
NOT_AVAILABLE = "n/a"  # a new column a row cannot fill (older rows, outside the FQ cost range)

METRIC_LABELS = {"miou": "mIoU", "pck": "PCK@0.2", "pixel_accuracy": "Pixel acc."}
# Fidelity to the FP model: (header, formatter) per key, in column order; each task's error.
FIDELITY_COLUMNS = {
  "agreement": ("Agreement (%)", lambda x: _percent(x)),
  "kp_dist": ("kp dist (px)", lambda x: format_quantity(x)),
  "rel_l2": ("rel L2", lambda x: format_quantity(x)),
}
FIDELITY_OF_METRIC = {"miou": "agreement", "pck": "kp_dist"}  # shown beside rel_l2
ERROR_OF_METRIC = {"miou": "rel_l2", "pck": "kp_dist"}  # tasks' fidelity_error_name


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
  """Writes `results.json` and `results.md` into `workdir`; returns their paths. Each row of
  `results.json` gains the report's comparison columns (`equal_cost_columns`: `err_fq_ratio`,
  `delta_fq_pts`, `pareto`), recomputed from all rows."""
  workdir = os.fspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  meta = dict(meta or {})
  plain = [to_json_compatible(dict(r)) for r in rows]
  payload = {
    "format_version": FORMAT_VERSION,
    "meta": to_json_compatible(meta),
    "rows": [{**r, **extra} for r, extra in zip(plain, equal_cost_columns(plain))],
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


def primary_error(rows: Sequence[Mapping[str, Any]]) -> str | None:
  """The fidelity error of the rows (`fidelity_error` of the first row that has one)."""
  return next((str(r["fidelity_error"]) for r in rows if r.get("fidelity_error")), None)


def equal_cost_columns(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
  """Per row (same order): `err_fq_ratio` (`pareto.equal_cost_ratio` of the fidelity error
  against the PTQ FQ rows' front), `delta_fq_pts` (`pareto.equal_cost_metric_delta` of the task
  metric, in points) and `pareto` (on the front of metric against average GBOPs: no other row
  has a higher metric at lower or equal cost). None where not comparable."""
  metric, error = primary_metric(rows), primary_error(rows)
  metric_front = fq_front(rows, metric, higher_is_better=True)
  error_front = fq_front(rows, error) if error else None
  points = [
    (
      np.nan if finite_float(r.get("gbops_avg")) is None else finite_float(r.get("gbops_avg")),
      np.nan if finite_float(r.get(metric)) is None else finite_float(r.get(metric)),
    )
    for r in rows
  ]
  front = set(pareto_front(points).tolist()) if rows else set()
  return [
    {
      "err_fq_ratio": None if error_front is None else equal_cost_ratio(r, error_front),
      "delta_fq_pts": equal_cost_metric_delta(r, metric_front),
      "pareto": i in front,
    }
    for i, r in enumerate(rows)
  ]


def metric_interval(row: Mapping[str, Any], metric: str) -> tuple[float, float] | None:
  """The row's 95% interval of `metric` (`<metric>_ci`, or the older `<metric>_ci95`)."""
  for key in (f"{metric}_ci", f"{metric}_ci95"):
    ci = row.get(key)
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
      lo, hi = finite_float(ci[0]), finite_float(ci[1])
      if lo is not None and hi is not None:
        return lo, hi
  return None


def _with_interval(row: Mapping[str, Any], metric: str) -> str:
  value = finite_float(row.get(metric))
  ci = metric_interval(row, metric)
  if value is None or ci is None:
    return _percent(value)
  return f"{_percent(value)} [{_percent(ci[0])}, {_percent(ci[1])}]"


def _or_na(text: str) -> str:
  return NOT_AVAILABLE if text == MISSING else text


def _fidelity_columns(rows, metric: str) -> list[tuple[str, str, Any]]:
  """(key, header, formatter): the task's fidelity columns, whatever the rows hold."""
  keys = [k for k in FIDELITY_COLUMNS if k == "rel_l2" or FIDELITY_OF_METRIC.get(metric) == k]
  keys += [
    k
    for k in FIDELITY_COLUMNS
    if k not in keys and any(finite_float(r.get(k)) is not None for r in rows)
  ]
  return [(k, *FIDELITY_COLUMNS[k]) for k in FIDELITY_COLUMNS if k in keys]


def results_markdown(
  rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None = None
) -> str:
  """The Markdown report: a meta line, the table (see module doc) and a note on the columns."""
  meta = dict(meta or {})
  rows = sort_rows(rows)
  reference = w8a8_reference_gbops(rows, meta)
  metric = primary_metric(rows)
  label = METRIC_LABELS.get(metric, metric)
  error = primary_error(rows) or ERROR_OF_METRIC.get(metric, "rel_l2")
  fidelity = _fidelity_columns(rows, metric)
  compared = equal_cost_columns(rows)

  header = (
    ["Setting", "Family", "Source", f"{label} (%) [95% CI]"]
    + [h for _, h, _ in fidelity]
    + ["err/FQ", f"Δ{label} vs FQ (pts)"]
    + ["GBOPs/frame avg", "GBOPs/frame peak", "% of W8A8 FQ", "State (KiB)", "Pareto"]
  )
  lines = ["# Evaluation results", ""]
  if meta:
    lines += [_meta_line(meta), ""]
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|" + "|".join([" --- "] * 3 + [" ---: "] * (len(header) - 4) + [" :-: "]) + "|")
  for row, extra in zip(rows, compared):
    state = finite_float(row.get("state_bytes"))
    pct = finite_float(row.get("pct_w8a8"))
    ratio, delta = extra["err_fq_ratio"], extra["delta_fq_pts"]
    cells = (
      [
        setting_name(row).replace("|", "\\|"),
        str(row.get("family") or MISSING),
        str(row.get("source") or MISSING),
        _with_interval(row, metric),
      ]
      + [_or_na(fmt(finite_float(row.get(k)))) for k, _, fmt in fidelity]
      + [
        NOT_AVAILABLE if ratio is None else f"{ratio:.2f}",
        NOT_AVAILABLE if delta is None else f"{delta:+.2f}",
        format_quantity(finite_float(row.get("gbops_avg"))),
        format_quantity(finite_float(row.get("gbops_peak"))),
        MISSING if pct is None else f"{pct:.1f}",
        MISSING if state is None else f"{state / 1024:.1f}",
        "✓" if extra["pareto"] else "",
      ]
    )
    lines.append("| " + " | ".join(cells) + " |")
  lines += [
    "",
    f"err/FQ: the setting's {error} (fidelity error to FP, lower is better) over the {error} "
    "of PTQ frame quantization at the same average GBOPs (FQ front interpolated linearly in "
    "log GBOPs): < 1 = closer to FP than FQ at equal cost; n/a outside the FQ cost range. "
    f"Δ{label} vs FQ: {label} minus the FQ front's at equal cost (points).",
    "",
    f"{label}: 95% percentile bootstrap interval over clips. GBOPs = 1e9 bit operations "
    "(MACs · b_w · b_a) per frame, clip average and peak; % of W8A8 FQ compares average BOPs "
    "with 8-bit frame quantization"
    + ("" if reference is None else f" ({format_quantity(reference)} GBOPs/frame)")
    + "; state = memory of the ResQ carry; Pareto ✓ = no other setting has higher "
    f"{label} at lower or equal average cost.",
    "",
  ]
  return "\n".join(lines)
