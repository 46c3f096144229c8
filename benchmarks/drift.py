"""Drift of ResQ's output with the distance from the keyframe, and adaptive keyframes on cuts.

A trained float SegNet (an FP run's workdir) is quantized post-training (W8A8 keyframes,
residual grids W4A4 or W8A4: 8-bit residual weights) and compared with its own float outputs,
frame by frame (relative L2 error of the logits, pixel agreement of the argmax):

A. error against the distance d from the keyframe, for ref modes closed / key / prev, the two
   residual grids and K in {4, 16, 64}, on 64-frame SynthRes slow_pan test clips;
B. 1000-frame streams through ``stream_step`` (batch 2, K = 64): does the error return to the
   keyframe level at every keyframe, or creep up over the stream?
C. SynthRes 'cuts' test clips (slow_pan plus hard scene cuts): fixed K in {4, 8, 16} against
   ``KeyframeTrigger`` settings, error against average BOPs (% of W8A8 frame quantization),
   with the trigger's own arithmetic reported beside the BOPs.

Quantizers are calibrated with ``calibrate_model`` on slow_pan training clips as
``eval_lib`` does (the run's calibration methods, ``calibration_period``). Prints Markdown
tables and writes the plots ``drift_curves.png``, ``drift_stream.png`` and
``drift_adaptive.png`` into ``--out``.

  python benchmarks/drift.py --workdir /work/exp/fp_a --out docs     # ~10 min on 2 cores
  python benchmarks/drift.py --workdir /work/exp/fp_a --quick --out /tmp/drift
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import harness  # noqa: E402  (benchmarks/harness.py)

from resq_jax.data import generate_clip  # noqa: E402
from resq_jax.data.scene import cut_frames  # noqa: E402
from resq_jax.experiment import runs  # noqa: E402
from resq_jax.experiment.models import init_from_fp  # noqa: E402
from resq_jax.experiment.spec import calibration_period  # noqa: E402
from resq_jax.nn import (  # noqa: E402
  KeyframeTrigger,
  bops_report,
  calibrate_model,
  layer_costs,
  observe,
  run_clip,
  stream_init,
  stream_step,
  trigger_ops,
)
from resq_jax.quant.recipe import resq_recipe  # noqa: E402
from resq_jax.stream.options import run_experiment  # noqa: E402
from resq_jax.tasks import normalise_frames  # noqa: E402

KEY_BITS = (8, 8)
MODES = ("closed", "key", "prev")
RES_BITS = ((4, 4), (8, 4))
PERIODS = (4, 16, 64)
FIXED = (4, 8, 16, 32, 64)
# Thresholds in normalised input units ((x / 255 - 0.5) / 0.25): on SynthRes a hard cut moves
# mean |x_t - x_key| by 0.5-1.1, a slow pan by about 0.25 over 10 frames and 0.4 over 60, and
# sensor noise adds about 0.055 per frame to the accumulated |x_t - x_{t-1}|.
TRIGGERS = (
  KeyframeTrigger(cut_threshold=0.45),
  KeyframeTrigger(cut_threshold=0.45, max_period=16),
  KeyframeTrigger(cut_threshold=0.3),
  KeyframeTrigger(cut_threshold=0.2),
  KeyframeTrigger(cut_threshold=0.45, drift_threshold=1.0),
  KeyframeTrigger(cut_threshold=0.45, drift_threshold=2.0),
)


def clips(regime: str, split: str, indices, num_frames: int) -> jax.Array:
  """Normalised SynthRes clips ``[B, T, 64, 64, 3]`` rendered directly (no dataset build)."""
  return jnp.stack(
    [
      normalise_frames(generate_clip(regime, split, i, num_frames=num_frames)["frames"])
      for i in indices
    ]
  )


def frame_errors(y, ref) -> tuple[np.ndarray, np.ndarray]:
  """Per clip and frame: relative L2 error of the logits and argmax agreement, ``[B, T]``."""
  y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
  axes = tuple(range(2, y.ndim))
  rel = np.sqrt(((y - ref) ** 2).sum(axis=axes) / (ref**2).sum(axis=axes))
  agree = (y.argmax(-1) == ref.argmax(-1)).mean(axis=axes[:-1])
  return rel, agree


def distance_from_key(keyframes) -> np.ndarray:
  """``[B, T]`` frames since the last keyframe (0 at keyframes)."""
  keys = np.asarray(keyframes, bool)
  idx = np.where(keys, np.arange(keys.shape[1]), -1)
  return np.arange(keys.shape[1]) - np.maximum.accumulate(idx, axis=1)


def by_distance(values, dist, max_d: int) -> np.ndarray:
  return np.array([values[dist == d].mean() for d in range(max_d)])


class Setup:
  """The float model, its variables, the run's Experiment and calibration observations."""

  def __init__(self, workdir: str, calib_clips: int, calib_frames: int):
    self.experiment = run_experiment(workdir)
    self.fp_model, self.fp_vars = runs.load_fp(self.experiment, workdir)
    calib = clips("slow_pan", "train", range(calib_clips), calib_frames)
    self.observations = observe(self.fp_model, self.fp_vars, [calib])
    self._cache = {}

  def quantized(self, ref_mode: str, res_bits, period: int):
    """The model of a closed / key / prev ResQ recipe, calibrated as eval_lib does. Only
    'key' residuals depend on the period (x_t - x_key); the others are calibrated once."""
    cal_period = calibration_period(period if ref_mode == "key" else 16)
    name = (ref_mode, tuple(res_bits), cal_period)
    if name not in self._cache:
      model = self.fp_model.clone(recipe=resq_recipe(KEY_BITS, tuple(res_bits), ref_mode))
      v = init_from_fp(model, self.fp_vars, self.experiment.data.frame_shape)
      v = calibrate_model(
        model,
        float_model=self.fp_model,
        variables=v,
        period=cal_period,
        methods=self.experiment.quant.calibration,
        observations=self.observations,
      )
      self._cache[name] = (model, v)
    return self._cache[name]

  def float_outputs(self, x, chunk: int = 64) -> np.ndarray:
    parts = [
      np.asarray(run_clip(self.fp_model, self.fp_vars, x[:, i : i + chunk], period=1).outputs)
      for i in range(0, x.shape[1], chunk)
    ]
    return np.concatenate(parts, axis=1)


def part_a(s: Setup, args) -> list[dict]:
  """Error against the distance from the keyframe (fixed K), slow_pan test clips."""
  x = clips("slow_pan", "test", range(args.clips), args.frames)
  ref = s.float_outputs(x)
  rows = []
  for mode in args.modes:
    for bits in args.res_bits:
      for k in args.periods:
        model, v = s.quantized(mode, bits, k)
        result = run_clip(model, v, x, period=k)
        rel, agree = frame_errors(result.outputs, ref)
        dist = distance_from_key(result.keyframes)
        costs = layer_costs(model, v, x[:, 0], warn=False)
        top = min(k, args.frames)
        rows.append(
          dict(
            mode=mode,
            bits=bits,
            k=k,
            rel_d=by_distance(rel, dist, top),
            agree_d=by_distance(agree, dist, top),
            rel=rel.mean(),
            agree=agree.mean(),
            pct=100 * bops_report(result.stats, costs)["ratio_w8a8_avg"],
          )
        )
        print(f"  A {mode} W{bits[0]}A{bits[1]} K={k}: rel {rows[-1]['rel']:.4f}", flush=True)
  return rows


def part_b(s: Setup, args) -> list[dict]:
  """Long streams through stream_step (batch args.streams, K = the largest period)."""
  k = max(args.periods)
  x = clips("slow_pan", "test", range(100, 100 + args.streams), args.stream_frames)
  ref = s.float_outputs(x, chunk=100)
  rows = []
  for mode, bits in args.stream_configs:
    model, v = s.quantized(mode, bits, k)
    # Compile first (two steps: a step's output state is committed to the device, stream_init's
    # is not), so that the timing below is of the steps alone.
    _, _, warm = stream_step(model, v, stream_init(model, v, x[:, 0]), x[:, 0], period=k)
    jax.block_until_ready(stream_step(model, v, warm, x[:, 1], period=k))
    state = stream_init(model, v, x[:, 0])
    outs, keys = [], []
    start = time.perf_counter()
    for t in range(x.shape[1]):
      y, _, state = stream_step(model, v, state, x[:, t], period=k)
      outs.append(np.asarray(y))
      keys.append(bool(state.is_keyframe))
    seconds = time.perf_counter() - start
    rel, agree = frame_errors(np.stack(outs, 1), ref)
    keyframes = np.broadcast_to(np.asarray(keys), rel.shape)
    dist = distance_from_key(keyframes)
    period_index = np.arange(x.shape[1]) // k
    full = x.shape[1] // k
    rows.append(
      dict(
        mode=mode,
        bits=bits,
        k=k,
        rel_t=rel.mean(0),
        agree_t=agree.mean(0),
        rel=rel.mean(),
        agree=agree.mean(),
        rel_last_d=[rel[:, (period_index == p) & (dist[0] == k - 1)].mean() for p in range(full)],
        rel_d1=[rel[:, (period_index == p) & (dist[0] == 1)].mean() for p in range(full)],
        seconds=seconds,
      )
    )
    print(f"  B {mode} W{bits[0]}A{bits[1]} K={k}: rel {rows[-1]['rel']:.4f}", flush=True)
  return rows


def part_c(s: Setup, args) -> list[dict]:
  """Fixed K against keyframe triggers on 'cuts' test clips (closed W4A4)."""
  groups = [args.cut_clips[b : b + args.clips] for b in range(0, len(args.cut_clips), args.clips)]
  batches = [clips("cuts", "test", g, args.frames) for g in groups]
  refs = [s.float_outputs(x) for x in batches]
  cuts = [[cut_frames("cuts", "test", i, args.frames) for i in g] for g in groups]
  settings = [(f"fixed K={k}", k, None) for k in args.fixed] + [
    (_trigger_name(t), 64, t) for t in args.triggers
  ]
  model, v = s.quantized("closed", (4, 4), 16)
  costs = layer_costs(model, v, batches[0][:, 0], warn=False)
  macs = sum(c.macs for c in costs.values())
  rows = []
  for name, period, trigger in settings:
    rel, agree, pct, keys, after, caught, mixed = [], [], [], [], [], [], []
    for x, ref, clip_cuts in zip(batches, refs, cuts):
      result = run_clip(model, v, x, period=None if trigger else period, trigger=trigger)
      r, a = frame_errors(result.outputs, ref)
      rel.append(r)
      agree.append(a)
      pct.append(100 * bops_report(result.stats, costs)["ratio_w8a8_avg"])
      keys.append(np.asarray(result.keyframes))
      per_frame = keys[-1].sum(axis=0)  # frames where only some clips are keys run both branches
      mixed.append((per_frame > 0) & (per_frame < x.shape[0]))
      for b, frames in enumerate(clip_cuts):  # the 4 frames from each cut on
        after += [r[b, c : c + 4].mean() for c in frames]
        caught += [bool(keys[-1][b, c]) for c in frames]
    rel, agree, keys = np.concatenate(rel), np.concatenate(agree), np.concatenate(keys)
    ops = trigger_ops(trigger, x.shape[2:]) if trigger is not None else 0
    rows.append(
      dict(
        name=name,
        rel=rel.mean(),
        agree=agree.mean(),
        pct=float(np.mean(pct)),
        key_fraction=keys.mean(),
        rel_after_cut=float(np.mean(after)) if after else float("nan"),
        caught=f"{sum(caught)}/{len(caught)}",
        mixed=float(np.mean(mixed)),
        trigger_ops=ops,
        ops_per_mac=ops / macs,
        fixed=trigger is None,
      )
    )
    print(f"  C {name}: rel {rows[-1]['rel']:.4f} at {rows[-1]['pct']:.1f}% W8A8", flush=True)
  return rows


def _trigger_name(t: KeyframeTrigger) -> str:
  parts = []
  if t.cut_threshold is not None:
    parts.append(f"cut>{t.cut_threshold:g}")
  if t.drift_threshold is not None:
    parts.append(f"drift>{t.drift_threshold:g}")
  parts.append(f"max {t.max_period}")
  return "trigger " + ", ".join(parts)


def _bits(b) -> str:
  return f"W{b[0]}A{b[1]}"


def table_a(rows) -> str:
  head = ["mode", "residual", "K", "rel err d=0", "d=1", "d=K/2", "d=K-1", "(K-1)/1"]
  head += ["mean rel err", "agreement mean", "agreement d=K-1", "BOPs % W8A8"]
  cells = []
  for r in rows:
    d = r["rel_d"]
    cells.append(
      [r["mode"], _bits(r["bits"]), r["k"]]
      + [f"{v:.4f}" for v in (d[0], d[1], d[len(d) // 2], d[-1])]
      + [f"{d[-1] / d[1]:.2f}x", f"{r['rel']:.4f}", f"{100 * r['agree']:.2f}%"]
      + [f"{100 * r['agree_d'][-1]:.2f}%", f"{r['pct']:.1f}"]
    )
  return harness.markdown_table(head, cells, "llrrrrrrrrrr")


def table_b(rows) -> str:
  head = ["mode", "residual", "K", "frames", "mean rel err", "agreement"]
  head += ["rel err d=1, first / last period", "rel err d=K-1, first / last period"]
  head.append("stream_step ms/frame")
  cells = []
  for r in rows:
    n = len(r["rel_t"])
    cells.append(
      [r["mode"], _bits(r["bits"]), r["k"], n, f"{r['rel']:.4f}", f"{100 * r['agree']:.2f}%"]
      + [f"{r['rel_d1'][0]:.4f} / {r['rel_d1'][-1]:.4f}"]
      + [f"{r['rel_last_d'][0]:.4f} / {r['rel_last_d'][-1]:.4f}", f"{1000 * r['seconds'] / n:.1f}"]
    )
  return harness.markdown_table(head, cells, "llrrrrrrr")


def table_c(rows) -> str:
  head = ["setting", "BOPs % W8A8", "keyframes", "cuts keyed", "mean rel err"]
  head += ["rel err, 4 frames from a cut", "agreement", "trigger ops/frame (per MAC)"]
  head.append("mixed frames")
  cells = [
    [r["name"], f"{r['pct']:.1f}", f"{100 * r['key_fraction']:.1f}%", r["caught"]]
    + [f"{r['rel']:.4f}", f"{r['rel_after_cut']:.4f}", f"{100 * r['agree']:.2f}%"]
    + [f"{r['trigger_ops']:,} ({r['ops_per_mac']:.4f})", f"{100 * r['mixed']:.0f}%"]
    for r in rows
  ]
  return harness.markdown_table(head, cells, "lrrrrrrrr")


def equal_bops(rows) -> str:
  """Each trigger against the fixed-K error interpolated (linearly in BOPs) at its BOPs."""
  fixed = sorted((r["pct"], r["rel"]) for r in rows if r["fixed"])
  lines = []
  for r in rows:
    if r["fixed"] or len(fixed) < 2:
      continue
    xs, ys = zip(*fixed)
    if not xs[0] <= r["pct"] <= xs[-1]:
      lines.append(f"- {r['name']}: {r['pct']:.1f}% W8A8 lies outside the fixed-K range")
      continue
    at = float(np.interp(r["pct"], xs, ys))
    lines.append(
      f"- {r['name']}: rel err {r['rel']:.4f} at {r['pct']:.1f}% W8A8; fixed K at the same "
      f"BOPs (interpolated): {at:.4f} ({100 * (r['rel'] / at - 1):+.0f}%)"
    )
  return "\n".join(lines)


def _figure(size):
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  fig = Figure(figsize=size)
  FigureCanvasAgg(fig)
  return fig


def plot_a(rows, path) -> None:
  fig = _figure((11, 6.5))
  bits_list = sorted({r["bits"] for r in rows})
  styles = {"closed": "C0", "key": "C1", "prev": "C2"}
  for col, bits in enumerate(bits_list):
    for row, (metric, label) in enumerate(
      (("rel_d", "relative L2 error"), ("agree_d", "agreement"))
    ):
      ax = fig.add_subplot(2, len(bits_list), row * len(bits_list) + col + 1)
      for r in rows:
        if r["bits"] != bits:
          continue
        ls = {64: "-", 16: "--", 4: ":"}.get(r["k"], "-")
        values = np.asarray(r[metric]) * (100 if metric == "agree_d" else 1)
        ax.plot(values, ls, color=styles[r["mode"]], label=f"{r['mode']} K={r['k']}", lw=1.2)
      ax.set_title(f"W8A8 keys, {_bits(bits)} residuals", fontsize=9)
      ax.set_xlabel("frames since keyframe")
      ax.set_ylabel(label + (" (%)" if metric == "agree_d" else ""))
      ax.grid(alpha=0.3)
      if row == 0 and col == 0:
        ax.legend(fontsize=6, ncol=3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_b(rows, path) -> None:
  fig = _figure((11, 3.5))
  ax = fig.add_subplot()
  for r in rows:
    ax.plot(r["rel_t"], lw=0.8, label=f"{r['mode']} {_bits(r['bits'])} K={r['k']}")
  ax.set_xlabel("frame")
  ax.set_ylabel("relative L2 error of the logits")
  ax.set_title("stream_step over long SynthRes slow_pan streams (mean of the batch)", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_c(rows, path) -> None:
  fig = _figure((6.5, 4.5))
  ax = fig.add_subplot()
  fixed = sorted((r["pct"], r["rel"], r["name"]) for r in rows if r["fixed"])
  ax.plot([f[0] for f in fixed], [f[1] for f in fixed], "o-", color="k", label="fixed K")
  for p, e, name in fixed:
    ax.annotate(
      name.replace("fixed ", ""), (p, e), fontsize=7, xytext=(3, 3), textcoords="offset points"
    )
  for r in rows:
    if not r["fixed"]:
      ax.plot(r["pct"], r["rel"], "s", label=r["name"].replace("trigger ", ""))
  ax.set_xlabel("average BOPs (% of W8A8 frame quantization)")
  ax.set_ylabel("mean relative L2 error of the logits")
  ax.set_title("SynthRes 'cuts', closed W8A8/W4A4: fixed K vs triggers", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--workdir", default="/work/exp/fp_a", help="an FP run (train.py workdir)")
  p.add_argument("--out", default="docs", help="directory of the plots")
  p.add_argument("--quick", action="store_true", help="a smoke run: few, short clips")
  args = p.parse_args(argv)
  full = not args.quick
  args.clips = 4 if full else 1  # batch of clips per run_clip call
  args.frames = 64 if full else 16
  args.modes = MODES if full else ("closed",)
  args.res_bits = RES_BITS if full else ((4, 4),)
  args.periods = PERIODS if full else (4,)
  args.streams = 2 if full else 1
  args.stream_frames = 1000 if full else 32
  args.stream_configs = (
    (("closed", (4, 4)), ("closed", (8, 4)), ("prev", (4, 4))) if full else (("closed", (4, 4)),)
  )
  args.cut_clips = tuple(range(8)) if full else (3,)  # clip 3 cuts at frames 9 and 14
  args.fixed = FIXED if full else (4,)
  args.triggers = TRIGGERS if full else TRIGGERS[:1]
  args.calib_clips, args.calib_frames = (4, 64) if full else (1, 16)
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  print("# drift.py\n\n" + harness.machine().text())
  s = Setup(args.workdir, args.calib_clips, args.calib_frames)
  preset, methods = s.experiment.model.preset, s.experiment.quant.calibration
  print(f"model: {args.workdir} ({preset}), calibration {methods}")
  a = part_a(s, args)
  b = part_b(s, args)
  c = part_c(s, args)
  print("\n## A. Error vs distance from the keyframe (slow_pan test, W8A8 keyframes)\n")
  print(table_a(a))
  print(f"\n## B. {args.stream_frames}-frame streams through stream_step\n")
  print(table_b(b))
  print("\n## C. 'cuts': fixed K vs keyframe triggers (closed, W8A8 keys, W4A4 residuals)\n")
  print(table_c(c))
  print("\nEqual BOPs:\n" + equal_bops(c))
  plot_a(a, out / "drift_curves.png")
  plot_b(b, out / "drift_stream.png")
  plot_c(c, out / "drift_adaptive.png")
  print("\n" + harness.footer(start))


if __name__ == "__main__":
  main()
