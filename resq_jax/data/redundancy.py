"""Temporal redundancy of each SynthRes regime: how much of a frame changes to the next.

ResQ's residual frames cost little when consecutive frames are similar. Per regime we report
  ratio            mean |x_t - x_{t-1}| / mean_t std(x_t)   (pixel values, all channels)
  residual_energy  mean (x_t - x_{t-1})^2 / var(x)          (the variance a residual carries,
                                                             relative to the frame's)
averaged over clips; low values mean high redundancy.

Command line (prints a Markdown table): python -m resq_jax.data.stats --n_clips 64
"""

from __future__ import annotations

import numpy as np

from resq_jax.data import render, spec


def clip_redundancy(frames: np.ndarray) -> dict[str, float]:
  """Statistics of one clip, frames uint8 [T, H, W, C] with T >= 2."""
  x = frames.astype(np.float32)
  if x.shape[0] < 2:
    raise ValueError(f"need at least 2 frames to measure redundancy, got {x.shape[0]}")
  diff = x[1:] - x[:-1]
  mad = float(np.abs(diff).mean())
  frame_std = float(x.reshape(x.shape[0], -1).std(axis=1).mean())
  var = float(x.var())
  return {
    "mean_abs_diff": mad,
    "frame_std": frame_std,
    "ratio": mad / max(frame_std, 1e-6),
    "residual_energy": float((diff * diff).mean()) / max(var, 1e-6),
  }


def temporal_redundancy(
  regime: str,
  n_clips: int = 32,
  *,
  split: str = "validation",
  height: int = spec.DEFAULT_HEIGHT,
  width: int = spec.DEFAULT_WIDTH,
  num_frames: int = spec.DEFAULT_NUM_FRAMES,
) -> dict:
  """Mean per-clip statistics (see module doc) over clips 0..n_clips-1 of `split`.

  Clips are generated directly (no build needed); clip i shows the same scene in every
  regime, so regimes are compared on paired content. Returns a dict with keys regime,
  n_clips, mean_abs_diff, frame_std, ratio, ratio_sem (standard error of the ratio over
  clips) and residual_energy.
  """
  spec.validate_regime(regime)
  if isinstance(n_clips, bool) or not isinstance(n_clips, int) or n_clips <= 0:
    raise ValueError(f"n_clips must be a positive int, got {n_clips!r}")
  rows = [
    clip_redundancy(
      render.generate_clip(regime, split, i, height=height, width=width, num_frames=num_frames)[
        "frames"
      ]
    )
    for i in range(n_clips)
  ]
  out = {"regime": regime, "n_clips": n_clips}
  for key in ("mean_abs_diff", "frame_std", "ratio", "residual_energy"):
    out[key] = float(np.mean([r[key] for r in rows]))
  ratios = np.array([r["ratio"] for r in rows])
  out["ratio_sem"] = float(ratios.std(ddof=1) / np.sqrt(n_clips)) if n_clips > 1 else 0.0
  return out


def markdown_table(results: list[dict]) -> str:
  """Formats `temporal_redundancy` results as a Markdown table."""
  lines = [
    "| regime | clips | mean abs diff | frame std | ratio (diff/std) | residual energy |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
  ]
  for r in results:
    lines.append(
      f"| {r['regime']} | {r['n_clips']} | {r['mean_abs_diff']:.2f} | "
      f"{r['frame_std']:.2f} | {r['ratio']:.3f} +- {r['ratio_sem']:.3f} | "
      f"{r['residual_energy']:.3f} |"
    )
  return "\n".join(lines)
