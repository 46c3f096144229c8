"""Per-layer report figures as PNG files: residual variance against activation variance, and
the bit maps of dynamic ResQ (bits per input location). The Pareto plot is in plots.py, which
re-exports these.

Rendering uses matplotlib's Agg canvas (no display) through the object-oriented API, as in
plots.py: figures are never registered with pyplot.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 130


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
