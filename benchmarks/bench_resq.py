"""Benchmark: fake-quant overhead of quantized conv layers and of static / dynamic ResQ clips.

Measures (wall time on the default JAX backend, jitted, ``block_until_ready``):

  1. one ``QConv`` layer (3x3, 32->32 channels, 64x64, a batch of 8 frames): forward and
     forward+backward (gradient of a sum-of-squares loss wrt all the layer's params) for the
     recipes float, FQ W8A8, the keyframe phase of ResQ (W8A8) and, for reference, the residual
     phase of static (W4A4) and dynamic ResQ;
  2. a 5-layer conv net (conv-BN-ReLU x4, 1x1 head to 8 classes) over smooth random video clips
     [2, 16, 64, 64, 3] (static background, a moving object, sensor noise) through
     ``run_clip``: eval forward for float, FQ W8A8, FQ W4A4, static ResQ (W8A8 key / W4A4
     residual, K=4, closed) and dynamic ResQ (fixed step, bits (0, 2, 4, 8), K=4), next to each
     recipe's BOPs per frame (``bops_report`` after min-max ``calibrate_model``); and
     training-style forward+backward (loss = mean square of the outputs) for float, FQ and
     static ResQ with ``unroll=1`` and ``unroll=True`` (docs/design.md section 7: XLA:CPU scan
     backward trap); plus dynamic ResQ's bit allocation (BOPs) on that clip against a
     random-walk clip in which every pixel changes on every frame.

``--quick`` times at least 3 rounds (about 4 s per table) and leaves out the extra rows (residual
phases of the single layer, ``unroll=True`` eval rows); the default times at least 7 rounds
(about 45 s per table) of everything.

Timings on a shared machine are noisy: the variants of one table are timed round-robin (the
starting variant rotates every round), so that each round's ratios to float see the same load;
the table reports the median time, the minimum, and the median (interquartile range) of the
per-round ratios. The load average is printed before and after every table.

Fake quantization simulates integer arithmetic in float (quantize-dequantize, then a float
conv), so on CPU a quantized recipe costs at least as much wall time as float: fewer BOPs do
not mean less time here.

Usage:  python benchmarks/bench_resq.py [--quick] [--rounds N] [--only layer|net]
"""

from __future__ import annotations

import time

import flax.linen as nn
import harness  # benchmarks/harness.py
import jax
import jax.numpy as jnp
import numpy as np

from resq_jax.nn.calibrate import CalibrationMethods, calibrate_model
from resq_jax.nn.costs import bops_report, flatten_stats, layer_costs
from resq_jax.nn.layers import QConv
from resq_jax.nn.runner import run_clip
from resq_jax.quant.dynamic import FixedStepPolicy
from resq_jax.quant.recipe import LayerRecipe, dynamic_recipe, float_recipe, fq_recipe, resq_recipe

PERIOD = 4
MINMAX = CalibrationMethods("minmax", "minmax", "minmax", "minmax")
DYNAMIC_POLICY = FixedStepPolicy(bits=(0, 2, 4, 8), step=1.0)


# --------------------------------------------------------------------------------------------
# Header and timing


def header(args) -> str:
  return "\n".join(
    [
      "# resq_jax benchmark: fake-quant and ResQ overhead",
      "",
      harness.machine().text(),
      f"- timing: one warm-up (compile) call, then at least {args.rounds} round-robin rounds "
      f"(more, up to 60, where a table's rounds fit in {args.budget:.0f} s)",
      "- ratios: median over rounds of (variant time / float time in the same round), with "
      "the interquartile range of those per-round ratios in parentheses",
    ]
  )


def _timed(fns: dict, rounds: int, budget_s: float, what: str) -> tuple[harness.Timings, list]:
  """``harness.time_interleaved`` of one table, and its bullets: the load average before and
  after, and the number of timed rounds."""
  before = f"- {harness.load_text()} (before)"
  harness.log(what)
  t = harness.time_interleaved(fns, rounds, budget_s=budget_s)
  return t, [before, f"- {harness.load_text()} (after)", f"- timed rounds: {t.rounds}"]


# --------------------------------------------------------------------------------------------
# 1. One QConv layer


def bench_layer(rounds: int, budget_s: float, key, extras: bool) -> str:
  batch, hw, ch = 8, 64, 32
  kx, kn, kp = jax.random.split(key, 3)
  x0 = jax.random.normal(kx, (batch, hw, hw, ch))
  x1 = x0 + 0.1 * jax.random.normal(kn, x0.shape)  # the next frame: a small change
  variants = {  # name -> (recipe, phase)
    "float": (float_recipe(), "key"),
    "FQ W8A8": (fq_recipe(8, 8), "key"),
    "ResQ key phase (W8A8)": (resq_recipe((8, 8), (4, 4)), "key"),
  }
  if extras:
    variants["ResQ residual phase (W4A4)"] = (resq_recipe((8, 8), (4, 4)), "residual")
    variants["dynamic ResQ residual (0/2/4/8)"] = (dynamic_recipe(DYNAMIC_POLICY), "residual")
  fwd, fwd_bwd = {}, {}
  for name, (recipe, phase) in variants.items():
    layer = QConv(ch, kernel_size=(3, 3), recipe=recipe)
    variables = layer.init(kp, x0, phase="key")
    params = variables["params"]
    x = x0
    state = {}
    if phase == "residual":
      _, mutated = layer.apply(variables, x0, phase="key", mutable=["resq_state"])
      state = {"resq_state": mutated["resq_state"]}
      x = x1

    def apply(p, x, state, layer=layer, phase=phase):
      return layer.apply(dict(state, params=p), x, phase=phase)

    def loss(p, x, state, apply=apply):
      return jnp.sum(jnp.square(apply(p, x, state)))

    f = jax.jit(apply)
    g = jax.jit(jax.grad(loss))
    fwd[name] = lambda f=f, p=params, x=x, s=state: f(p, x, s)
    fwd_bwd[name] = lambda g=g, p=params, x=x, s=state: g(p, x, s)

  before = f"- {harness.load_text()} (before)"
  harness.log("layer: forward")
  res_f = harness.time_interleaved(fwd, rounds, budget_s=budget_s)
  harness.log("layer: forward+backward")
  res_b = harness.time_interleaved(fwd_bwd, rounds, budget_s=budget_s)
  lines = [
    "## 1. One QConv layer: 3x3, 32->32, 64x64, batch of 8 frames",
    "",
    before,
    f"- {harness.load_text()} (after)",
    f"- timed rounds: {res_f.rounds} (fwd), {res_b.rounds} (fwd+bwd)",
    "",
  ]
  rows = []
  for name in variants:
    row = [name]
    for t in (res_f, res_b):
      row += [f"{t.median_ms(name):.1f}", f"{t.min_ms(name):.1f}", t.ratio_text(name, "float")]
    rows.append(row)
  lines.append(
    harness.markdown_table(
      [
        "recipe",
        "fwd ms (median)",
        "fwd ms (min)",
        "fwd / float (IQR)",
        "fwd+bwd ms (median)",
        "fwd+bwd ms (min)",
        "fwd+bwd / float (IQR)",
      ],
      rows,
    )
  )
  lines += [
    "",
    "Gradient wrt all params of the layer (kernel, bias and, for quantized recipes, "
    "the LSQ scales / zero points).",
  ]
  if extras:
    lines[-1] += (
      " Residual-phase rows carry a ResQ state from a keyframe one step earlier "
      "(state held constant)."
    )
  return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# 2. A small conv net over clips


class SmallNet(nn.Module):
  """conv-BN-ReLU 3->16 s2, 16->32, 32->32 s2, 32->32; 1x1 head to 8 classes.

  ``[B, 64, 64, 3] -> [B, 16, 16, 8]``. Every conv is a ``QConv`` under ``recipe``.
  """

  recipe: LayerRecipe = float_recipe()

  @nn.compact
  def __call__(self, x, phase="key"):
    for feat, stride in ((16, 2), (32, 1), (32, 2), (32, 1)):
      x = QConv(feat, strides=(stride, stride), use_bn=True, recipe=self.recipe)(x, phase)
      x = nn.relu(x)
    return QConv(8, kernel_size=(1, 1), recipe=self.recipe)(x, phase)


def _smooth_field(rng, n, h, w, c, amplitude):
  """Spatially smooth random images ``[n, h, w, c]`` (bilinear upsampling of coarse noise)."""
  coarse = rng.normal(size=(n, h // 6 + 2, w // 6 + 2, c)).astype(np.float32)
  return amplitude * np.asarray(jax.image.resize(coarse, (n, h, w, c), "linear"))


def moving_object_clip(
  seed: int, shape, size: int = 24, speed: float = 2.0, noise: float = 0.02
) -> jax.Array:
  """Smooth random video ``[B, T, H, W, C]``: a static smooth background, a smooth textured
  ``size x size`` object moving ``speed`` px/frame (bouncing off the borders) and per-pixel
  sensor noise of std ``noise`` on every frame."""
  rng = np.random.default_rng(seed)
  b, t, h, w, c = shape
  clip = np.repeat(_smooth_field(rng, b, h, w, c, 1.0)[:, None], t, axis=1)
  patch = _smooth_field(rng, b, size, size, c, 2.0)
  limits = np.array([h - size, w - size], np.float64)
  for i in range(b):
    pos = rng.uniform(0, limits)
    vel = rng.normal(size=2)
    vel *= speed / np.linalg.norm(vel)
    for f in range(t):
      y, x = np.round(pos).astype(int)
      clip[i, f, y : y + size, x : x + size] = patch[i]
      pos = pos + vel
      out = (pos < 0) | (pos > limits)
      vel[out] = -vel[out]
      pos = np.clip(pos, 0, limits)
  clip += noise * rng.normal(size=clip.shape).astype(np.float32)
  return jnp.asarray(clip)


def random_walk_clip(seed: int, shape, step: float = 0.1) -> jax.Array:
  """A smooth random image plus an independent per-pixel random walk of ``step`` per frame:
  every pixel changes on every frame (no static region)."""
  rng = np.random.default_rng(seed)
  b, t, h, w, c = shape
  base = _smooth_field(rng, b, h, w, c, 1.0)[:, None]
  steps = step * rng.normal(size=shape).astype(np.float32)
  return jnp.asarray(base + np.cumsum(steps, axis=1))


NET_RECIPES = {
  "float": float_recipe(),
  "FQ W8A8": fq_recipe(8, 8),
  "FQ W4A4": fq_recipe(4, 4),
  "static ResQ W8A8/W4A4": resq_recipe((8, 8), (4, 4), "closed"),
  "dynamic ResQ 0/2/4/8": dynamic_recipe(DYNAMIC_POLICY),
}


def _net_variables(recipe, key, calib_clip):
  model = SmallNet(recipe)
  variables = model.init(key, calib_clip[:, 0], phase="key")
  if recipe.is_quantized:
    variables = calibrate_model(
      model,
      float_model=SmallNet(float_recipe()),
      variables=variables,
      clips=[calib_clip],
      period=PERIOD,
      methods=MINMAX,
    )
  return model, variables


def bench_net(rounds: int, budget_s: float, key, extras: bool) -> str:
  kp = key
  shape = (2, 16, 64, 64, 3)
  clip = moving_object_clip(0, shape)
  calib_clip = moving_object_clip(1, shape)
  harness.log("net: calibration (min-max)")
  nets = {name: _net_variables(r, kp, calib_clip) for name, r in NET_RECIPES.items()}

  # BOPs of every recipe on the timed clip (exact, from the stats of the same run_clip call
  # that is timed below, which also compiles it).
  harness.log("net: BOPs")
  bops, stats, outputs = {}, {}, {}
  for name, (model, variables) in nets.items():
    result = run_clip(model, variables, clip, period=PERIOD, unroll=1)  # same call as timed
    bops[name] = bops_report(result.stats, layer_costs(model, variables, clip[:, 0]))
    stats[name], outputs[name] = result.stats, np.asarray(result.outputs)
  ref = outputs["float"]
  error = {
    name: float(np.sqrt(np.mean((o - ref) ** 2) / np.mean(ref**2))) for name, o in outputs.items()
  }
  macs = bops["float"]["macs_per_frame"]
  content = _dynamic_by_content(nets, kp, shape, bops, stats)

  # Eval forward: the public jitted run_clip (outputs, per-frame stats and final state).
  eval_fns = {}
  eval_rows = [(n, n, 1) for n in NET_RECIPES]
  if extras:
    eval_rows.insert(4, ("static ResQ W8A8/W4A4, unroll=True", "static ResQ W8A8/W4A4", True))
    eval_rows.append(("dynamic ResQ 0/2/4/8, unroll=True", "dynamic ResQ 0/2/4/8", True))
  for label, name, unroll in eval_rows:
    model, variables = nets[name]
    eval_fns[label] = lambda m=model, v=variables, u=unroll: run_clip(
      m, v, clip, period=PERIOD, unroll=u
    )

  # Training-style forward + backward (grad of mean(outputs^2) wrt params).
  train_rows = [
    ("float", "float", 1),
    ("FQ W8A8", "FQ W8A8", 1),
    ("static ResQ, unroll=1", "static ResQ W8A8/W4A4", 1),
    ("static ResQ, unroll=True", "static ResQ W8A8/W4A4", True),
  ]
  train_fns = {}
  for label, name, unroll in train_rows:
    model, variables = nets[name]

    def loss(p, rest, c, model=model, unroll=unroll):
      out = run_clip(model, dict(rest, params=p), c, period=PERIOD, unroll=unroll).outputs
      return jnp.mean(jnp.square(out))

    g = jax.jit(jax.value_and_grad(loss))
    rest = {k: v for k, v in variables.items() if k != "params"}
    train_fns[label] = lambda g=g, p=variables["params"], rest=rest: g(p, rest, clip)

  lines = [
    "## 2. Small conv net over clips [B=2, T=16, 64, 64, 3], keyframe period K=4",
    "",
    f"Net: conv-BN-ReLU 3->16 s2, 16->32, 32->32 s2, 32->32, 1x1 head to 8 classes "
    f"({macs / 1e6:.2f} M MACs per frame; BN folded into the conv for every recipe, "
    "running statistics). Clips: smooth random video (static smooth background, a 24x24 "
    "textured object moving 2 px/frame, sensor noise std 0.02; `moving_object_clip`). "
    "Quantized recipes calibrated with min-max on a second clip of the same kind; "
    "ResQ reference mode 'closed'; dynamic ResQ: `FixedStepPolicy(bits=(0, 2, 4, 8), "
    "step=1.0)` (step in units of the layer's calibrated 8-bit residual step), W4 "
    "residual weights.",
    "",
    "### 2a. Eval forward (`run_clip`, ms per clip batch of 2 x 16 frames) and BOPs",
    "",
  ]
  res_e, bullets = _timed(eval_fns, rounds, budget_s, "net: eval forward")
  lines += [*bullets, ""]
  rows = []
  for label, name, _ in eval_rows:
    b = bops[name]
    rows.append(
      [
        label,
        f"{res_e.median_ms(label):.1f}",
        f"{res_e.min_ms(label):.1f}",
        res_e.ratio_text(label, "float"),
        f"{b['bops_avg'] / 1e9:.3f}",
        f"{b['bops_peak'] / 1e9:.3f}",
        f"{100 * b['ratio_w8a8_avg']:.1f}%",
        f"{100 * b['ratio_w8a8_peak']:.1f}%",
        f"{4 * b['state_elements'] / 1024:.0f}",
        f"{error[name]:.3f}",
      ]
    )
  lines.append(
    harness.markdown_table(
      [
        "recipe",
        "ms (median)",
        "ms (min)",
        "time / float (IQR)",
        "GBOPs/frame avg",
        "GBOPs/frame peak",
        "avg % of W8A8 FQ",
        "peak % of W8A8 FQ",
        "ResQ state KiB/example",
        "output rel. RMS error vs float",
      ],
      rows,
    )
  )
  lines += [
    "",
    "Times are of the public jitted `run_clip` (outputs, per-frame stats, final "
    "state). BOPs per frame and example, clip average and peak over the 16 frames "
    "(`bops_report`); float counts 32x32 bits. Times do not follow BOPs: fake "
    "quantization runs quantize-dequantize plus a float conv. The error column "
    "(`||y - y_float|| / ||y_float||` over the clip; random untrained weights, min-max "
    "PTQ) is context only: it is not a tuned accuracy comparison.",
  ]

  lines += [
    "",
    "### 2b. Training-style forward+backward through `run_clip` "
    "(grad of mean(outputs^2) wrt params, ms per clip batch)",
    "",
  ]
  res_t, bullets = _timed(train_fns, rounds, budget_s, "net: forward+backward")
  lines += [*bullets, ""]
  rows = [
    [label, f"{res_t.median_ms(label):.1f}", f"{res_t.min_ms(label):.1f}"]
    + [res_t.ratio_text(label, "float")]
    for label, _, _ in train_rows
  ]
  head = ["recipe", "ms (median)", "ms (min)", "time / float (IQR)"]
  lines.append(harness.markdown_table(head, rows))
  lines += [
    "",
    "Float and FQ have no temporal state: `run_clip` folds all 32 frames into one "
    "batch (no scan, `unroll` does not apply). Static ResQ runs one keyframe step on the "
    "4 groups and a `lax.scan` over the K-1 = 3 residual frames.",
  ]
  return "\n".join(lines + ["", content])


def _bit_fractions(stats, bits=(0, 2, 4, 8)) -> dict[int, float]:
  """Fraction of the input locations of all layers, at residual frames, given each bit-width."""
  counts = dict.fromkeys(bits, 0)
  total = 0
  for entry in flatten_stats(stats).values():
    bit_map = np.asarray(entry["bit_map"])  # [T, B, ...]
    residual = bit_map[np.arange(bit_map.shape[0]) % PERIOD != 0]
    total += residual.size
    for b in bits:
      counts[b] += int(np.sum(residual == b))
  return {b: counts[b] / total for b in bits}


def _dynamic_by_content(nets, key, shape, bops, stats) -> str:
  """Dynamic ResQ's BOPs depend on the clip content (static ResQ's do not): the timed clip
  against a random-walk clip where every pixel changes on every frame."""
  name = "dynamic ResQ 0/2/4/8"
  harness.log("net: dynamic ResQ BOPs on a random-walk clip")
  model, _ = nets[name]
  walk = random_walk_clip(0, shape)
  _, variables = _net_variables(NET_RECIPES[name], key, random_walk_clip(1, shape))
  walk_stats = run_clip(model, variables, walk, period=PERIOD, unroll=1).stats
  walk_bops = bops_report(walk_stats, layer_costs(model, variables, walk[:, 0]))
  rows = []
  for label, b, st in (
    ("smooth random video (timed clip)", bops[name], stats[name]),
    ("random walk, every pixel changes", walk_bops, walk_stats),
  ):
    frac = _bit_fractions(st)
    rows.append(
      [label, f"{100 * b['ratio_w8a8_avg']:.1f}%"] + [f"{100 * frac[k]:.1f}%" for k in (0, 2, 4, 8)]
    )
  static = bops["static ResQ W8A8/W4A4"]["ratio_w8a8_avg"]
  return "\n".join(
    [
      "### 2c. Dynamic ResQ bit allocation depends on the content",
      "",
      harness.markdown_table(
        [
          "clip (calibrated on a clip of the same kind)",
          "avg BOPs % of W8A8 FQ",
          "0 bits (skip)",
          "2 bits",
          "4 bits",
          "8 bits",
        ],
        rows,
      ),
      "",
      "Share of the input locations at residual frames that got each bit-width, pooled over "
      "all layers (the early, high-resolution layers have the most locations). "
      f"Static ResQ W8A8/W4A4 costs {100 * static:.1f}% of W8A8 FQ on any content. Wall time "
      "does not depend on the content: every location is computed densely.",
    ]
  )


def main():
  parser = harness.BenchParser(
    __doc__,
    rounds=7,
    quick_rounds=3,
    quick_help="fewer rounds and only the required variants (~1-2 min)",
  )
  parser.add_argument("--only", choices=("layer", "net"), default=None)
  args = parser.parse_args()
  args.budget = 4.0 if args.quick else 45.0
  t0 = time.perf_counter()
  print(header(args), flush=True)
  key = jax.random.key(0)
  if args.only in (None, "layer"):
    print("\n" + bench_layer(args.rounds, args.budget, key, extras=not args.quick), flush=True)
  if args.only in (None, "net"):
    net = bench_net(args.rounds, args.budget, jax.random.fold_in(key, 1), extras=not args.quick)
    print("\n" + net, flush=True)
  print("\n" + harness.footer(t0))


if __name__ == "__main__":
  main()
