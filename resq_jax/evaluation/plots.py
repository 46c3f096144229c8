"""Report figures as PNG files: the Pareto plot (metric and fidelity vs cost); per-layer
figures: residual variance against activation variance, and the bit maps of dynamic ResQ (bits
per input location).

Rendering uses matplotlib's Agg canvas (no display) through the object-oriented API: figures
are `matplotlib.figure.Figure` objects attached to a `FigureCanvasAgg`, never registered with
pyplot, so plotting neither needs nor changes the global backend and leaks no open figures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from resq_jax.evaluation.pareto import finite_float, fq_front, pareto_front
from resq_jax.evaluation.report import (
  ERROR_OF_METRIC,
  FAMILY_TITLES,
  METRIC_LABELS,
  metric_interval,
  primary_error,
  setting_name,
  short_name,
  w8a8_reference_gbops,
)

DPI = 130

# One marker and colour per family (colour-blind-safe Okabe-Ito colours).
FAMILY_STYLE = {
  "fp": dict(marker="*", color="#000000", s=140),
  "fq": dict(marker="s", color="#0072B2", s=60),
  "resq": dict(marker="^", color="#E69F00", s=70),
  "dynamic": dict(marker="D", color="#009E73", s=55),
}
# Families without a style of their own (control policies: 'hold', 'skipconv', ...) take the
# next colour and marker of these cycles (coprime lengths: 8 x 9 distinct pairs).
_CYCLE_COLORS = (
  "#CC79A7", "#56B4E9", "#D55E00", "#882255", "#44AA99", "#999933", "#999999", "#332288",
)  # fmt: skip
_CYCLE_MARKERS = ("o", "v", "P", "X", "h", "<", ">", "p", "d")


def family_styles(families) -> dict[Any, dict]:
  """A marker style per family: `FAMILY_STYLE` for the known ones; the others, in sorted order
  (so a family keeps its style across figures of the same set), from the cycles."""
  styles = {f: FAMILY_STYLE[f] for f in dict.fromkeys(families) if f in FAMILY_STYLE}
  others = sorted({f for f in families if f not in FAMILY_STYLE}, key=str)
  for i, fam in enumerate(others):
    styles[fam] = dict(
      marker=_CYCLE_MARKERS[i % len(_CYCLE_MARKERS)],
      color=_CYCLE_COLORS[i % len(_CYCLE_COLORS)],
      s=50,
    )
  return styles


# --- Pareto ----------------------------------------------------------------------------------

# Candidate label offsets (points, horizontal and vertical alignment) tried in order; the first
# whose text box overlaps no marker, whisker or earlier label is used (else the first).
_NEAR = ((5, 3), (5, -3), (-5, 3), (-5, -3), (6, 0), (-6, 0), (0, 8), (0, -8))
# Farther rings (with a leader line) for clusters: 8 directions at growing distances.
_FAR = tuple(
  (int(round(rad * np.cos(a))), int(round(rad * np.sin(a))))
  for rad in (16, 26, 38, 52)
  for a in np.deg2rad([30, -30, 150, -150, 90, -90, 0, 180])
)
_LABEL_OFFSETS = tuple(
  (
    dx,
    dy,
    "left" if dx > 0 else "right" if dx < 0 else "center",
    "bottom" if dy > 0 else "top" if dy < 0 else "center",
  )
  for dx, dy in _NEAR + _FAR
)


def _overlaps(box, boxes, margin: float = 1.5) -> bool:
  x0, y0, x1, y1 = box
  return any(
    x0 < b[2] + margin and b[0] - margin < x1 and y0 < b[3] + margin and b[1] - margin < y1
    for b in boxes
  )


def _place_labels(
  ax,
  fig: Figure,
  xy: np.ndarray,
  labels: Sequence[str],
  obstacles: Sequence[tuple[float, float, float, float]] = (),
  legend=None,
  fontsize: float = 7,
  markers=None,
) -> None:
  """Annotates points, choosing per label the first offset whose rendered text box overlaps
  no marker (of `xy` and of the unlabelled points `markers`, data `[M, 2]`), no obstacle
  (data-space boxes `(x0, y0, x1, y1)`), not the legend and no earlier label."""
  renderer = FigureCanvasAgg(fig).get_renderer()
  px_per_pt = fig.dpi / 72.0
  disp = ax.transData.transform(xy) if len(xy) else np.zeros((0, 2))
  others = np.asarray(markers if markers is not None else np.zeros((0, 2)), np.float64)
  others = ax.transData.transform(others.reshape(-1, 2)) if len(others) else others
  r = 4 * px_per_pt  # marker half-size
  taken = [(x - r, y - r, x + r, y + r) for x, y in [*disp, *others]]
  area = ax.get_window_extent(renderer)
  if legend is not None:
    ext = legend.get_window_extent(renderer)
    taken.append((ext.x0, ext.y0, ext.x1, ext.y1))
  for x0, y0, x1, y1 in obstacles:
    (a, b), (c, d) = ax.transData.transform([(x0, y0), (x1, y1)])
    taken.append((min(a, c), min(b, d) - 1, max(a, c), max(b, d) + 1))

  def text_box(text, x, y, offset):
    dx, dy, ha, va = offset
    probe = ax.annotate(
      text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=fontsize
    )
    ext = probe.get_window_extent(renderer)  # text only: the probe has no leader line
    probe.remove()
    return (ext.x0, ext.y0, ext.x1, ext.y1)

  def is_free(box):
    inside = area.x0 <= box[0] and box[2] <= area.x1 and area.y0 <= box[1] and box[3] <= area.y1
    return inside and not _overlaps(box, taken)

  for (x, y), _, text in sorted(zip(xy, disp, labels), key=lambda e: -e[1][1]):
    offset, box = _LABEL_OFFSETS[0], None
    for candidate in _LABEL_OFFSETS:
      candidate_box = text_box(text, x, y, candidate)
      if is_free(candidate_box):
        offset, box = candidate, candidate_box
        break
    if box is None:  # nowhere free: overlap next to the point
      box = text_box(text, x, y, offset)
    taken.append(box)
    dx, dy, ha, va = offset
    ax.annotate(
      text,
      (x, y),
      xytext=(dx, dy),
      textcoords="offset points",
      ha=ha,
      va=va,
      fontsize=fontsize,
      color="0.15",
      arrowprops=dict(arrowstyle="-", color="0.6", lw=0.5, shrinkA=1, shrinkB=4)
      if abs(dx) + abs(dy) > 14
      else None,
    )


def _auto_floor(y: np.ndarray) -> float:
  """Lower y limit that keeps collapsed settings (e.g. W2A2) from squashing the rest.

  Points more than 4 interquartile-like spans (best - 25th percentile, at least 1 point of
  mIoU) below the best are drawn at the floor instead, with their value in the label.
  """
  if len(y) < 4:
    return float(y.min())
  best = float(y.max())
  floor = best - 4.0 * max(best - float(np.percentile(y, 25)), 1.0)
  return float(y.min()) if y.min() >= floor else floor


def point_labels(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  """`short_name` per row; rows whose short names collide get their full `setting_name`."""
  short = [short_name(r) for r in rows]
  counts = {s: short.count(s) for s in short}
  return [s if counts[s] == 1 else setting_name(r) for s, r in zip(short, rows)]


def _cost_pct(row: Mapping[str, Any], reference: float | None) -> float | None:
  """Average BOPs in % of W8A8 FQ: the row's `pct_w8a8`, else from `gbops_avg`."""
  pct = finite_float(row.get("pct_w8a8"))
  cost = finite_float(row.get("gbops_avg"))
  if pct is None and cost is not None and reference:
    pct = 100.0 * cost / reference
  return pct if pct is not None and pct > 0 else None


def _interval_bars(values: np.ndarray, intervals: Sequence) -> np.ndarray | None:
  """`[2, N]` (below, above) error-bar lengths; 0 for rows without an interval."""
  bars = np.zeros((2, len(values)))
  for i, (v, ci) in enumerate(zip(values, intervals)):
    if ci is not None:
      bars[:, i] = max(v - ci[0], 0.0), max(ci[1] - v, 0.0)
  return bars if bars.any() else None


def _scatter_families(ax, xy, kept, styles, bars=None, legend=True) -> None:
  for fam, style in styles.items():
    idx = [i for i, r in enumerate(kept) if r.get("family") == fam]
    if not idx:
      continue
    if bars is not None:
      ax.errorbar(
        xy[idx, 0], xy[idx, 1], yerr=bars[:, idx], fmt="none", ecolor=style["color"],
        elinewidth=0.8, alpha=0.55, capsize=0, zorder=3,
      )  # fmt: skip
    ax.scatter(
      xy[idx, 0], xy[idx, 1], marker=style["marker"], s=style["s"], color=style["color"],
      edgecolor="white", linewidth=0.5, zorder=4,
      label=FAMILY_TITLES.get(fam, str(fam)) if legend else None,
    )  # fmt: skip


def _metric_panel(ax, fig, rows, metric, styles, label_points, w8a8_line, min_miou):
  """(a) metric (%) vs % of W8A8 BOPs, CI error bars, Pareto step line, Pareto labels."""
  label = METRIC_LABELS.get(metric, metric)
  kept, pts, cis = [], [], []
  for row in rows:
    pct, q = row.get("_pct"), finite_float(row.get(metric))
    if pct is not None and q is not None:
      ci = metric_interval(row, metric)
      kept.append(row)
      pts.append((pct, 100.0 * q))
      cis.append(None if ci is None else (100.0 * ci[0], 100.0 * ci[1]))
  xy = np.asarray(pts, np.float64).reshape(-1, 2)
  ax.set_xscale("log")
  if not kept:
    ax.text(0.5, 0.5, f"no rows with {label} and BOPs", ha="center", transform=ax.transAxes)
  floor = min_miou if min_miou is not None else _auto_floor(xy[:, 1]) if len(xy) else 0.0
  below = xy[:, 1] < floor
  shown = xy.copy()
  shown[below, 1] = floor
  bars = _interval_bars(xy[:, 1], cis)
  if bars is not None:
    bars[:, below] = 0.0
  if len(xy):  # limits first (see _error_panel)
    ax.set_xlim(xy[:, 0].min() / 1.8, max(xy[:, 0].max(), 100.0) * 2.5)
  _scatter_families(ax, np.where(below[:, None], np.nan, xy), kept, styles, bars)
  for i in np.flatnonzero(below):  # collapsed settings: a down-pointing marker on the floor
    color = styles[kept[i].get("family")]["color"]
    ax.scatter([xy[i, 0]], [floor], marker="v", s=40, color=color, zorder=4, clip_on=False)
  front = pareto_front(xy)
  if len(front):
    fx, fy = xy[front, 0], xy[front, 1]
    ax.step(
      np.append(fx, fx[-1] * 1.6), np.append(fy, fy[-1]), where="post", color="0.2", lw=2.0,
      alpha=0.35, zorder=1, label=f"Pareto front (best {label} at ≤ cost)",
    )  # fmt: skip
  if w8a8_line:
    ax.axvline(100.0, color="#0072B2", ls="--", lw=1.0, alpha=0.8, zorder=0, label="W8A8 FQ")
  if len(xy):
    lo = min([shown[:, 1].min()] + [c[0] for c, b in zip(cis, below) if c and not b])
    hi = max([shown[:, 1].max()] + [c[1] for c in cis if c is not None])
    pad = max(1.0, 0.06 * (hi - lo))
    ax.set_ylim(lo - (0 if below.any() else pad), hi + pad)
  ax.set_xlabel("average BOPs per frame, % of W8A8 FQ (log scale)")
  ax.set_ylabel(f"{label} (%), 95% CI")
  ax.set_title(f"(a) {label} vs. cost")
  named = sorted(set(front.tolist()) | set(np.flatnonzero(below).tolist()))
  if label_points and named:  # the front, and collapsed settings with their value
    labels = point_labels(kept)
    texts = [f"{labels[i]} ({xy[i, 1]:.1f}%)" if below[i] else labels[i] for i in named]
    _place_labels(ax, fig, shown[named], texts, markers=shown)
  return below.any(), floor


def _error_panel(ax, fig, rows, error, styles, label_points, w8a8_line, pct_per_gbops):
  """(b) fidelity error vs % of W8A8 BOPs (log-log) with the FQ front's interpolation."""
  kept, pts, cis = [], [], []
  for row in rows:
    pct, e = row.get("_pct"), finite_float(row.get(error)) if error else None
    if pct is not None and e is not None and e > 0:  # FP itself (error 0) has no log
      ci = row.get(f"{error}_ci")
      ok = isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci
      kept.append(row)
      pts.append((pct, e))
      cis.append((max(float(ci[0]), e * 1e-3), float(ci[1])) if ok else None)
  xy = np.asarray(pts, np.float64).reshape(-1, 2)
  ax.set_xscale("log")
  ax.set_yscale("log")
  if not kept:
    ax.text(
      0.5, 0.5, "no fidelity values\n(rows evaluated without the FP reference)", ha="center",
      va="center", transform=ax.transAxes,
    )  # fmt: skip
    ax.set_title("(b) fidelity error vs. cost")
    ax.set_axis_off()
    return
  # Limits first: autoscaling a log axis on a family's single point warns of a singular range.
  ax.set_xlim(xy[:, 0].min() / 1.8, max(xy[:, 0].max(), 100.0) * 2.5)
  _scatter_families(ax, xy, kept, styles, _interval_bars(xy[:, 1], cis), legend=False)
  front = fq_front(rows, error)
  if len(front) > 1 and pct_per_gbops:
    # The interpolation err/FQ uses (linear in log GBOPs), sampled densely.
    grid = np.geomspace(front.gbops[0], front.gbops[-1], 200)
    ax.plot(
      grid * pct_per_gbops, [front.at(g) for g in grid], color=FAMILY_STYLE["fq"]["color"],
      lw=1.5, alpha=0.7, zorder=2, label="FQ front (err/FQ reference)",
    )  # fmt: skip
  if w8a8_line:
    ax.axvline(100.0, color="#0072B2", ls="--", lw=1.0, alpha=0.8, zorder=0)
  name = {"rel_l2": "relative L2 to FP outputs", "kp_dist": "joint distance to FP (px)"}
  ax.set_xlabel("average BOPs per frame, % of W8A8 FQ (log scale)")
  ax.set_ylabel(f"{name.get(error, error)} (log scale)")
  ax.set_title(f"(b) fidelity to FP ({error}, lower is better) vs. cost")
  best = pareto_front(np.stack([xy[:, 0], -xy[:, 1]], axis=1))
  if label_points and len(best):
    labels = point_labels(kept)
    _place_labels(ax, fig, xy[best], [labels[i] for i in best], markers=xy)


def plot_pareto(
  rows: Sequence[Mapping[str, Any]],
  path: str | os.PathLike,
  *,
  title: str | None = None,
  metric: str = "miou",
  error: str | None = None,
  label_points: bool = True,
  w8a8_gbops: float | None = None,
  min_miou: float | None = None,
) -> str:
  """Two panels against average BOPs per frame in % of W8A8 FQ (log x), one marker and colour
  per family (`family_styles`: unknown families get their own from a cycle):

  (a) the task metric (%; `metric`: 'miou' or 'pck') with its 95% bootstrap interval as an
  error bar (`<metric>_ci`), the Pareto front (best metric reachable at a given cost) as a step
  line; settings with a metric below `min_miou` (%; default `_auto_floor`: far below the rest,
  e.g. a collapsed W2A2) sit on the lower edge as down-pointing markers with their value in the
  label, so that they do not squash the interesting range.
  (b) the fidelity error (`error`, default the rows' `fidelity_error`: rel_l2 or kp_dist),
  log-log, with error bars and the FQ front (PTQ FQ rows, interpolated as err/FQ is) as a
  line; rows with error 0 (FP itself) or none are left out.

  Rows are `results.json` rows (see `report`); the cost is `pct_w8a8`, else `gbops_avg` over
  the W8A8 reference (`w8a8_gbops`, else `report.w8a8_reference_gbops`). Only each panel's
  Pareto points (and collapsed settings) are labelled (`point_labels`), so ~100 settings stay
  readable; a dashed vertical line marks W8A8 FQ (100%).
  """
  label = METRIC_LABELS.get(metric, metric)
  reference = w8a8_gbops if w8a8_gbops is not None else w8a8_reference_gbops(rows)
  rows = [{**r, "_pct": _cost_pct(r, reference)} for r in rows]
  error = error or primary_error(rows) or ERROR_OF_METRIC.get(metric)
  styles = family_styles([r.get("family") for r in rows])
  fig = Figure(figsize=(15.0, 6.4))
  ax_a, ax_b = fig.subplots(1, 2)
  w8a8_line = any(r["_pct"] is not None for r in rows)
  below, floor = _metric_panel(ax_a, fig, rows, metric, styles, label_points, w8a8_line, min_miou)
  ratios = [r["_pct"] / g for r in rows if r["_pct"] and (g := finite_float(r.get("gbops_avg")))]
  pct_per_gbops = float(np.median(ratios)) if ratios else None  # pct is proportional to BOPs
  _error_panel(ax_b, fig, rows, error, styles, label_points, w8a8_line, pct_per_gbops)
  for ax in (ax_a, ax_b):
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
  handles, labels = [], []
  for ax in (ax_a, ax_b):
    for h, t in zip(*ax.get_legend_handles_labels()):
      if t not in labels:
        handles.append(h)
        labels.append(t)
  if below:
    handles.append(Line2D([], [], ls="", marker="v", color="0.4", ms=6))
    labels.append(f"{label} below {floor:.1f}% (value in label)")
  if handles:
    fig.legend(handles, labels, loc="lower center", ncol=min(len(handles), 6), fontsize=8)
  fig.suptitle(title or f"{label} and fidelity to FP vs. cost per frame", fontsize=11)
  fig.subplots_adjust(bottom=0.1 + 0.035 * math.ceil(len(handles) / 6), top=0.9, wspace=0.18)
  return _save(fig, path)


# --- Per-layer figures ------------------------------------------------------------------------


def _save(fig: Figure, path: str | os.PathLike) -> str:
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  FigureCanvasAgg(fig)  # render with Agg whatever pyplot's backend is
  fig.savefig(path, dpi=DPI, bbox_inches="tight")
  return path


# --- Residual variance -----------------------------------------------------------------------


def variance_ratio_pct(act_var, res_var) -> np.ndarray:
  """`100 * res_var / act_var` per layer; NaN where the activation variance is 0."""
  act = np.asarray(act_var, np.float64)
  res = np.asarray(res_var, np.float64)
  if act.shape != res.shape or act.ndim != 1:
    raise ValueError(f"act_var {act.shape} and res_var {res.shape} must be equal 1-D")
  out = np.full(act.shape, np.nan)
  np.divide(100.0 * res, act, out=out, where=act > 0)
  return out


def plot_variance(
  layer_names: Sequence[str],
  act_var,
  res_var,
  path: str | os.PathLike,
  *,
  title: str = "Residual variance relative to activation variance",
) -> str:
  """Bar per layer of `Var(residual) / Var(activation)` in %, with the mean ratio annotated.

  The mean is the unweighted mean of the per-layer ratios (layers with zero activation
  variance are left out and shown as 'n/a').
  """
  ratio = variance_ratio_pct(act_var, res_var)
  names = [str(n) for n in layer_names]
  if len(names) != len(ratio):
    raise ValueError(f"{len(names)} layer names for {len(ratio)} variances")
  fig = Figure(figsize=(max(5.5, 0.55 * len(names) + 2.0), 4.2))
  ax = fig.add_subplot()
  x = np.arange(len(names))
  ax.bar(x, np.nan_to_num(ratio), color="#E69F00", edgecolor="0.3", lw=0.5, width=0.7)
  top = float(np.nanmax(ratio)) if np.isfinite(ratio).any() else 1.0
  for xi, r in zip(x, ratio):
    ax.text(
      xi,
      (r if np.isfinite(r) else 0) + 0.01 * top,
      f"{r:.1f}" if np.isfinite(r) else "n/a",
      ha="center",
      va="bottom",
      fontsize=7,
    )
  if np.isfinite(ratio).any():
    mean = float(np.nanmean(ratio))
    ax.axhline(mean, color="#0072B2", ls="--", lw=1.2, label=f"mean over layers: {mean:.1f}%")
    ax.legend(loc="upper left", fontsize=8)
  ax.set_xticks(x)
  ax.set_xticklabels(
    names,
    rotation=45 if len(names) > 4 else 0,
    ha="right" if len(names) > 4 else "center",
    fontsize=8,
  )
  ax.set_ylim(0, top * 1.18)
  ax.set_xlabel("layer (input of the quantized linear layer)")
  ax.set_ylabel("Var(residual) / Var(activation) (%)")
  ax.set_title(title)
  ax.grid(True, axis="y", alpha=0.3)
  ax.set_axisbelow(True)
  return _save(fig, path)


# --- Dynamic bit maps ------------------------------------------------------------------------


def _levels(bit_maps: np.ndarray, candidates: Sequence[int]) -> list[int]:
  """Candidate bit-widths plus any other value found in the maps (e.g. key bits), sorted."""
  return sorted({int(c) for c in candidates} | {int(v) for v in np.unique(bit_maps)})


def bit_map_colors(levels: Sequence[int]) -> mcolors.ListedColormap:
  """Light grey for 0 bits (skip), a sequential ramp for the others."""
  nonzero = [b for b in levels if b != 0]
  ramp = matplotlib.colormaps["plasma"](np.linspace(0.05, 0.9, max(1, len(nonzero))))
  cols, k = [], 0
  for b in levels:
    if b == 0:
      cols.append((0.88, 0.88, 0.88, 1.0))
    else:
      cols.append(tuple(ramp[k]))
      k += 1
  return mcolors.ListedColormap(cols)


def is_keyframe_map(bit_map) -> bool:
  """A frame whose bit map is one non-zero value everywhere (the keyframe precision)."""
  m = np.asarray(bit_map)
  return m.size > 0 and bool((m == m.flat[0]).all()) and int(m.flat[0]) != 0


def plot_bit_map(
  frames,
  bit_maps,
  path: str | os.PathLike,
  candidates=(0, 2, 4, 8),
  *,
  keyframes=None,
  max_cols: int = 8,
  title: str = "Dynamic ResQ: residual bit-width per location",
) -> str:
  """Frames (top) and their per-location bit-width maps (below), column by column.

  Args:
    frames: uint8 `[T, H, W, 3]`.
    bit_maps: int `[T, h, w]` (a layer's resolution; drawn stretched over the frame).
    candidates: bit-widths of the policy; 0 = skip. Values in the maps outside this set
      (e.g. the keyframe's 8 or 16 bits) are added to the colour scale.
    keyframes: bool `[T]` marking keyframes; by default a frame whose map is one non-zero
      value everywhere (`is_keyframe_map`) is taken as a keyframe and titled 'key'.
    max_cols: frames per row pair; longer clips wrap.
  Each column is titled with the frame index, the mean bits per location and the % skipped.
  """
  frames = np.asarray(frames)
  maps = np.asarray(bit_maps)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be [T, H, W, 3], got {frames.shape}")
  if maps.ndim != 3 or maps.shape[0] != frames.shape[0]:
    raise ValueError(f"bit_maps must be [T, h, w] with T={frames.shape[0]}, got {maps.shape}")
  t_len, height, width = frames.shape[:3]
  if keyframes is None:
    keyframes = [is_keyframe_map(m) for m in maps]
  keyframes = np.asarray(keyframes, bool).reshape(t_len)
  levels = _levels(maps, candidates)
  cmap = bit_map_colors(levels)
  norm = mcolors.BoundaryNorm(np.arange(len(levels) + 1) - 0.5, len(levels))
  index_maps = np.searchsorted(levels, maps)  # bit-width -> colour index

  cols = max(1, min(t_len, max_cols))
  n_pairs = math.ceil(t_len / cols)
  panel = 1.9
  fig = Figure(
    figsize=(panel * cols + 1.2, 2 * panel * n_pairs * height / width + 0.9), layout="compressed"
  )
  axes = fig.subplots(2 * n_pairs, cols, squeeze=False)
  extent = (-0.5, width - 0.5, height - 0.5, -0.5)  # bit map stretched over the frame
  image = None
  for t in range(n_pairs * cols):
    pair, col = divmod(t, cols)
    ax_f, ax_b = axes[2 * pair, col], axes[2 * pair + 1, col]
    for ax in (ax_f, ax_b):
      ax.set_xticks([])
      ax.set_yticks([])
    if t >= t_len:
      ax_f.set_axis_off()
      ax_b.set_axis_off()
      continue
    ax_f.imshow(frames[t], interpolation="nearest")
    image = ax_b.imshow(index_maps[t], cmap=cmap, norm=norm, interpolation="nearest", extent=extent)
    mean_bits = float(maps[t].mean())
    skipped = 100.0 * float((maps[t] == 0).mean())
    if keyframes[t]:
      ax_f.set_title(f"t={t} key", fontsize=8, fontweight="bold")
      ax_b.set_title(f"key: {mean_bits:.3g} b", fontsize=8)
    else:
      ax_f.set_title(f"t={t}", fontsize=8)
      ax_b.set_title(f"{mean_bits:.2f} b, {skipped:.0f}% skip", fontsize=8)
    if col == 0:
      ax_f.set_ylabel("frame", fontsize=8)
      ax_b.set_ylabel("bits / location", fontsize=8)
  if image is not None:
    bar = fig.colorbar(
      image, ax=axes.ravel().tolist(), ticks=np.arange(len(levels)), shrink=0.8, aspect=25, pad=0.02
    )
    bar.ax.set_yticklabels([f"{b} (skip)" if b == 0 else str(b) for b in levels], fontsize=8)
    bar.set_label("bit-width per location (bits)", fontsize=8)
  fig.suptitle(title, fontsize=10)
  return _save(fig, path)
