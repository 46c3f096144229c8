"""Your own model on your own video: a TFLite file or a flax.linen model, run under float, frame
quantization, static and dynamic ResQ, keyframe hold and adaptive keyframes, and compared at
equal cost by its fidelity to the float model (``python stream.py --model ... --video ...``).

No labels are needed: the float model is the reference. A video becomes windows of ``T``
frames ``[N, T, H, W, 3]`` (scaled to cover the model's input and centre-cropped, RGB in
[0, 1]); the first windows calibrate every quantized candidate (PTQ), the others are evaluated.
Per window, the error of a candidate's outputs against the float model's is measured by the
output's kind (:data:`OUTPUT_KINDS`):

- ``mask``: a one-channel probability map (e.g. person segmentation): ``1 - IoU`` of the masks
  ``p > 0.5`` (a window where both masks are empty counts as IoU 1);
- ``classes``: per-pixel class scores ``[..., K]``: the fraction of pixels whose argmax
  differs;
- ``landmarks``: a flat vector of ``L x D`` values whose first two of each ``D`` are pixel
  coordinates (MediaPipe's pose landmarks: ``D = 5``): the mean distance in pixels;
- ``rel_l2``: ``||y - y_fp|| / ||y_fp||`` over the window, for any output.

``rel_l2`` is always reported beside the kind's own error. Costs are exact BOPs per frame
(``bops_report``) in % of W8A8 frame quantization; the equal-cost verdicts
(:func:`~resq_jax.evaluation.equal_cost.beats_at_equal_cost`) use a paired bootstrap over the
evaluated windows.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import pathlib
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from resq_jax.errors import InvalidConfigError
from resq_jax.evaluation.equal_cost import beats_at_equal_cost
from resq_jax.evaluation.metrics import bootstrap_ci
from resq_jax.interop import import_tflite
from resq_jax.nn.calibrate import calibrate_model
from resq_jax.nn.costs import bops_report, layer_costs
from resq_jax.nn.intercept import init_quantizers, quantize
from resq_jax.nn.runner import run_clip
from resq_jax.quant.dynamic import FixedStepPolicy
from resq_jax.quant.keyframes import KeyframeTrigger
from resq_jax.quant.recipe import (
  LayerRecipe,
  dynamic_recipe,
  float_recipe,
  fq_recipe,
  hold_recipe,
  resq_recipe,
)
from resq_jax.stream.video import read_video

OUTPUT_KINDS = ("mask", "classes", "landmarks", "rel_l2")


@dataclasses.dataclass(frozen=True)
class OwnModel:
  """A float model to quantize: ``module`` (a flax.linen module taking ``[B, H, W, 3]``),
  its ``variables``, its input size ``(H, W)`` and a name for reports."""

  module: object
  variables: dict
  input_hw: tuple[int, int]
  name: str


def load_model(spec: str, *, output: int | None = None) -> OwnModel:
  """``spec``: a ``.tflite`` file (imported by :func:`resq_jax.interop.import_tflite`; ``output``
  picks one of its outputs) or ``package.module:factory``, a function returning ``(module,
  variables, (H, W))``."""
  if spec.endswith(".tflite"):
    if not os.path.exists(spec):
      raise InvalidConfigError(f"--model: {spec} does not exist")
    outputs = None if output is None else (output,)
    module, variables = import_tflite(spec, outputs=outputs)
    hw = module.graph.tensors[module.graph.inputs[0]].shape[1:3]
    return OwnModel(module, variables, tuple(int(v) for v in hw), pathlib.Path(spec).name)
  name, _, factory = spec.partition(":")
  if not name or not factory:
    raise InvalidConfigError(
      f"--model: got {spec!r} (allowed: a .tflite file or package.module:factory)"
    )
  try:
    fn = getattr(importlib.import_module(name), factory)
  except (ImportError, AttributeError) as e:
    raise InvalidConfigError(f"--model: cannot load {spec!r}: {e}") from None
  module, variables, hw = fn()
  return OwnModel(module, variables, tuple(int(v) for v in hw), spec)


def video_windows(path: str | os.PathLike, size: tuple[int, int], window: int) -> np.ndarray:
  """Consecutive non-overlapping windows ``[N, window, H, W, 3]`` of a video, float32 RGB in
  [0, 1]; a last partial window is dropped."""
  if window < 1:
    raise ValueError(f"window must be >= 1, got {window}")
  frames = np.stack(list(read_video(path, size=size)))
  n = len(frames) // window
  if n == 0:
    raise InvalidConfigError(f"--video: {path} has {len(frames)} frames, fewer than one window")
  return frames[: n * window].reshape(n, window, *frames.shape[1:]).astype(np.float32) / 255.0


def window_errors(kind: str, outputs: np.ndarray, reference: np.ndarray) -> dict[str, np.ndarray]:
  """Per window ``[N]`` (and per frame ``[N, T]`` as ``<name>_by_t``) errors of ``outputs``
  against the float ``reference``, both ``[N, T, ...]``: the kind's own error and ``rel_l2``."""
  if kind not in OUTPUT_KINDS:
    raise ValueError(f"output kind must be one of {OUTPUT_KINDS}, got {kind!r}")
  y = outputs.astype(np.float64)
  r = reference.astype(np.float64)
  n, t = y.shape[:2]
  diff = (y - r).reshape(n, t, -1)
  ref = r.reshape(n, t, -1)
  out = {
    "rel_l2": np.linalg.norm(diff, axis=(1, 2))
    / np.maximum(np.linalg.norm(ref, axis=(1, 2)), 1e-30),
    "rel_l2_by_t": np.linalg.norm(diff, axis=2) / np.maximum(np.linalg.norm(ref, axis=2), 1e-30),
  }
  if kind == "mask":
    a, b = y.reshape(n, t, -1) > 0.5, ref > 0.5
    inter, union = (a & b).sum(2), (a | b).sum(2)
    iou_t = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    inter_w, union_w = inter.sum(1), union.sum(1)
    out["mask_err"] = 1.0 - np.where(union_w > 0, inter_w / np.maximum(union_w, 1), 1.0)
    out["mask_err_by_t"] = 1.0 - iou_t
  elif kind == "classes":
    wrong = y.argmax(-1) != r.argmax(-1)
    out["class_err_by_t"] = wrong.reshape(n, t, -1).mean(2)
    out["class_err"] = out["class_err_by_t"].mean(1)
  elif kind == "landmarks":
    per_point = 5 if diff.shape[2] % 5 == 0 else 3 if diff.shape[2] % 3 == 0 else 2
    d = diff.reshape(n, t, -1, per_point)[..., :2]
    out["kp_px_by_t"] = np.linalg.norm(d, axis=-1).mean(-1)
    out["kp_px"] = out["kp_px_by_t"].mean(1)
  return out


def error_key(kind: str) -> str:
  return {"mask": "mask_err", "classes": "class_err", "landmarks": "kp_px", "rel_l2": "rel_l2"}[
    kind
  ]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Candidate:
  """One quantization setting of the comparison: every linear op under ``recipe`` (or under
  ``rules``, per layer path, where given; ``recipe`` is then the setting's main recipe),
  keyframes every ``period`` frames or where ``trigger`` fires (then ``period`` is its
  ``max_period``)."""

  name: str
  family: str
  recipe: LayerRecipe
  period: int = 1
  trigger: KeyframeTrigger | None = None
  rules: tuple[tuple[str, LayerRecipe], ...] | None = None


def default_candidates(window: int) -> list[Candidate]:
  """The comparison's settings: FQ W8A8..W4A4; static ResQ (closed loop) with W8A8 and W6A6
  keys over W8A4 / W6A6 / W4A4 residuals at K = 2, 4, ``window``; dynamic ResQ (W8A8 keys,
  fixed-step policy); keyframe hold at K = 2, 4, ``window``; and adaptive keyframes (a
  scene-cut and drift trigger, at most ``window`` frames apart) for hold and static ResQ."""
  periods = sorted({2, 4, window} - {1})
  out = [Candidate(name="FP", family="fp", recipe=float_recipe())]
  out += [Candidate(name=f"FQ W{b}A{b}", family="fq", recipe=fq_recipe(b, b)) for b in (8, 6, 5, 4)]
  for key in ((8, 8), (6, 6)):
    for res in ((8, 4), (6, 6), (4, 4)):
      if res[0] > key[0]:
        continue
      for k in periods:
        out.append(
          Candidate(
            name=f"ResQ K={k} W{key[0]}A{key[1]}/W{res[0]}A{res[1]}",
            family="resq",
            recipe=resq_recipe(key, res),
            period=k,
          )
        )
  for step in (1.0, 2.0):
    for k in periods:
      out.append(
        Candidate(
          name=f"DynResQ K={k} step={step:g}",
          family="dynamic",
          recipe=dynamic_recipe(FixedStepPolicy(step=step)),
          period=k,
        )
      )
  out += [
    Candidate(name=f"hold K={k}", family="hold", recipe=hold_recipe(), period=k) for k in periods
  ]
  trigger = KeyframeTrigger(cut_threshold=0.25, drift_threshold=0.15, max_period=window)
  out += [
    Candidate(name="hold adaptive", family="hold_adaptive", recipe=hold_recipe(), trigger=trigger),
    Candidate(
      name="ResQ adaptive W8A8/W8A4",
      family="resq_adaptive",
      recipe=resq_recipe((8, 8), (8, 4)),
      trigger=trigger,
    ),
  ]
  return out


def evaluate_candidates(
  own: OwnModel,
  candidates: Sequence[Candidate],
  calibration: np.ndarray,
  windows: np.ndarray,
  *,
  kind: str,
  batch: int = 4,
  progress: Callable[[str], None] | None = None,
) -> list[dict]:
  """One row per candidate: its name, family, period, cost (``gbops_avg``, ``pct_w8a8``), and
  per error name the mean over ``windows``, its 95% bootstrap interval (``<name>_ci``), the
  per-window values (``<name>_per_clip``) and the per-frame means (``<name>_by_t``).

  ``calibration``: windows ``[M, T, H, W, 3]`` that calibrate every quantized candidate (PTQ
  from the float weights, the recipe's keyframes or trigger); ``windows``: the evaluated ones."""
  float_model = quantize(own.module, ((r".*", float_recipe()),))
  frame = jnp.asarray(windows[:1, 0])
  reference = np.concatenate(
    [
      np.asarray(
        run_clip(float_model, own.variables, jnp.asarray(windows[i : i + batch]), period=1).outputs
      )
      for i in range(0, len(windows), batch)
    ]
  )
  rows = []
  for cand in candidates:
    model = quantize(own.module, cand.rules or ((r".*", cand.recipe),))
    period = None if cand.trigger is not None else cand.period
    if cand.recipe.is_quantized:
      variables = init_quantizers(model, own.variables, frame)
      variables = calibrate_model(
        model,
        variables=variables,
        clips=[jnp.asarray(calibration)],
        period=period,
        trigger=cand.trigger,
      )
    else:
      variables = own.variables
    costs = layer_costs(model, variables, frame, warn=False)
    outs, ratios = [], []
    for i in range(0, len(windows), batch):
      clip = jnp.asarray(windows[i : i + batch])
      result = run_clip(model, variables, clip, period=period, trigger=cand.trigger)
      outs.append(np.asarray(result.outputs))
      report = bops_report(result.stats, costs)
      ratios += [report["ratio_w8a8_avg"]] * clip.shape[0]
      w8a8_bops = report["bops_avg"] / report["ratio_w8a8_avg"]
    errors = window_errors(kind, np.concatenate(outs), reference)
    ratio = float(np.mean(ratios))
    row = {
      "name": cand.name,
      "family": cand.family,
      "source": "ptq" if cand.recipe.is_quantized else "fp",
      "period": cand.period if cand.trigger is None else cand.trigger.max_period,
      "adaptive": cand.trigger is not None,
      "gbops_avg": ratio * w8a8_bops / 1e9,
      "pct_w8a8": 100.0 * ratio,
    }
    for name, values in errors.items():
      if name.endswith("_by_t"):
        row[name] = values.mean(0).tolist()
        continue
      row[name] = float(values.mean())
      row[f"{name}_ci"] = (
        list(bootstrap_ci(values, np.mean)) if len(values) > 1 else [row[name]] * 2
      )
      row[f"{name}_per_clip"] = values.tolist()
    rows.append(row)
    if progress is not None:
      key = error_key(kind)
      progress(
        f"{cand.name}: {key} {row[key]:.4f}, rel_l2 {row['rel_l2']:.4f}, "
        f"{row['pct_w8a8']:.1f}% of W8A8"
      )
  return rows


COMPARISONS = (
  # (what, family group A, family group B)
  ("static ResQ vs FQ", ("resq",), ("fq",)),
  ("static ResQ vs keyframe hold", ("resq",), ("hold",)),
  ("dynamic ResQ vs static ResQ", ("dynamic",), ("resq",)),
  ("dynamic ResQ vs keyframe hold", ("dynamic",), ("hold",)),
  (
    "ResQ (any) vs best of hold and FQ",
    ("resq", "dynamic", "resq_adaptive"),
    ("hold", "fq", "hold_adaptive"),
  ),
  ("adaptive hold vs fixed hold", ("hold_adaptive",), ("hold",)),
)


def verdicts(rows: Sequence[dict], key: str) -> list[tuple[str, object]]:
  """``(what, Verdict)`` of each comparison of :data:`COMPARISONS` on ``key``."""
  out = []
  for what, a, b in COMPARISONS:
    ra = [r for r in rows if r["family"] in a]
    rb = [r for r in rows if r["family"] in b]
    out.append((what, beats_at_equal_cost(ra, rb, key, what=what)))
  return out


FAMILY_COLORS = {
  "fq": "#0072B2",
  "resq": "#D55E00",
  "dynamic": "#009E73",
  "hold": "#CC79A7",
  "hold_adaptive": "#E69F00",
  "resq_adaptive": "#56B4E9",
}


def plot_fronts(rows: Sequence[dict], key: str, path: str | os.PathLike, title: str) -> str:
  """Error against % of W8A8 BOPs (log-log), one colour per family, each family's front as a
  step line, 95% intervals as bars."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(7.5, 4.8))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  for family, color in FAMILY_COLORS.items():
    pts = sorted(
      (r["pct_w8a8"], r[key], *r[f"{key}_ci"]) for r in rows if r["family"] == family and r[key] > 0
    )
    if not pts:
      continue
    x, y, lo, hi = (np.asarray(v) for v in zip(*pts))
    ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="o", color=color, ms=4, lw=0.8, label=family)
    best, fx, fy = math.inf, [], []
    for xi, yi in zip(x, y):
      if yi < best:
        best = yi
        fx.append(xi)
        fy.append(yi)
    ax.step(fx, fy, where="post", color=color, lw=1, alpha=0.7)
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("average BOPs per frame, % of W8A8 frame quantization")
  ax.set_ylabel(f"{key} to the float model (lower is better)")
  ax.set_title(title, fontsize=10)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.savefig(path, dpi=130, bbox_inches="tight")
  return os.fspath(path)


def report_markdown(rows: Sequence[dict], kind: str, title: str) -> str:
  """The rows as a table sorted by cost, and the verdicts of :data:`COMPARISONS`."""
  key = error_key(kind)
  lines = [f"## {title}", "", f"| setting | family | % of W8A8 | {key} [95% CI] | rel_l2 |"]
  lines.append("| --- | --- | ---: | --- | ---: |")
  for r in sorted(rows, key=lambda r: (r["pct_w8a8"], r[key])):
    lo, hi = r[f"{key}_ci"]
    lines.append(
      f"| {r['name']} | {r['family']} | {r['pct_w8a8']:.1f} | {r[key]:.4f} [{lo:.4f}, {hi:.4f}] "
      f"| {r['rel_l2']:.4f} |"
    )
  lines += ["", "Equal-cost verdicts (paired bootstrap over windows):", ""]
  for what, v in verdicts(rows, key):
    lines.append(f"- **{what}**: {v.verdict}. {v.summary}")
  return "\n".join(lines) + "\n"


def compare_own_model(
  model: str,
  video: str | os.PathLike,
  out: str | os.PathLike,
  *,
  kind: str,
  output: int | None = None,
  window: int = 8,
  calibration_windows: int = 2,
  candidates: Sequence[Candidate] | None = None,
  progress: Callable[[str], None] | None = None,
) -> dict:
  """``stream.py --model``: load ``model`` (:func:`load_model`), cut ``video`` into windows,
  calibrate on the first ``calibration_windows``, evaluate every candidate (default
  :func:`default_candidates`) on the rest and write ``results.json``, ``results.md`` and
  ``fronts.png`` into ``out``. Returns ``{'rows', 'verdicts', 'windows', 'out'}``."""
  import json

  if kind not in OUTPUT_KINDS:
    raise InvalidConfigError(f"--output_kind: got {kind!r} (allowed: {' | '.join(OUTPUT_KINDS)})")
  if not os.path.exists(video):
    raise InvalidConfigError(f"--video: {video} does not exist")
  own = load_model(model, output=output)
  windows = video_windows(video, own.input_hw, window)
  if len(windows) <= calibration_windows:
    raise InvalidConfigError(
      f"--video: {len(windows)} windows of {window} frames, but {calibration_windows} calibrate "
      "and at least one more is needed to evaluate"
    )
  candidates = default_candidates(window) if candidates is None else candidates
  rows = evaluate_candidates(
    own,
    candidates,
    windows[:calibration_windows],
    windows[calibration_windows:],
    kind=kind,
    progress=progress,
  )
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  title = f"{own.name} on {pathlib.Path(video).name}: {len(windows) - calibration_windows} windows"
  (out / "results.json").write_text(json.dumps({"model": own.name, "rows": rows}, indent=1))
  (out / "results.md").write_text(report_markdown(rows, kind, title))
  plot_fronts(rows, error_key(kind), out / "fronts.png", title)
  found = verdicts(rows, error_key(kind))
  return {"rows": rows, "verdicts": found, "windows": len(windows), "out": str(out)}
