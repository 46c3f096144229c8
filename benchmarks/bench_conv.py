"""Benchmark resq_jax.ops.conv2d ('im2col' custom VJP) against XLA's conv autodiff on this backend.

Prints Markdown tables:
  1. per conv shape of a small segmentation CNN on 64x64 frames (batch of 32 frames): forward,
     input gradient, kernel gradient and full forward+backward, XLA vs im2col;
  2. the scan trap: gradient of a 4-layer conv-ReLU net applied frame by frame over T frames with a
     carried state, as lax.scan vs an unrolled loop, for both conv implementations;
  3. the same trap per conv type (dense, strided, depthwise, grouped, 1x1), one layer.

Timings on a shared machine are noisy: all variants of one table row are timed round-robin in the
same loop (so their ratios see the same load) and the median over rounds is reported.

Usage:  python benchmarks/bench_conv.py [--rounds 5] [--batch 32] [--frames 8] [--clip-batch 4]
                                       [--only layers|scan|scan-layers]
"""

from __future__ import annotations

import functools
import time

import harness  # benchmarks/harness.py
import jax
import jax.numpy as jnp

from resq_jax.ops import conv2d

# (name, C_in, C_out, kernel, stride, groups); all on 64x64 inputs.
LAYERS = [
  ("3x3 3->16 s2", 3, 16, 3, 2, 1),
  ("3x3 16->32", 16, 32, 3, 1, 1),
  ("3x3 32->32", 32, 32, 3, 1, 1),
  ("3x3 32->64 s2", 32, 64, 3, 2, 1),
  ("3x3 48->48", 48, 48, 3, 1, 1),
  ("3x3 depthwise 64", 64, 64, 3, 1, 64),
  ("3x3 64->64 groups=2", 64, 64, 3, 1, 2),
  ("1x1 64->32", 64, 32, 1, 1, 1),
]


def time_round_robin(fns: dict, args, rounds: int) -> dict:
  """Median wall time in ms of each fn(*args), timed round-robin after one warm-up call."""
  t = harness.time_interleaved({k: functools.partial(f, *args) for k, f in fns.items()}, rounds)
  return {k: t.median_ms(k) for k in fns}


def layer_fns(stride, groups, impl):
  def f(x, w):
    return conv2d(
      x, w, strides=(stride, stride), padding="SAME", feature_group_count=groups, impl=impl
    )

  return {
    "fwd": jax.jit(lambda x, w, gy: f(x, w)),
    # Only the cotangent of one argument is returned, so XLA removes the other one (and the
    # unused primal output): each column times one backward convolution.
    "dx": jax.jit(lambda x, w, gy: jax.vjp(lambda x_: f(x_, w), x)[1](gy)[0]),
    "dw": jax.jit(lambda x, w, gy: jax.vjp(lambda w_: f(x, w_), w)[1](gy)[0]),
    "fwd+bwd": jax.jit(
      lambda x, w, gy: jax.grad(lambda x_, w_: jnp.vdot(f(x_, w_), gy), (0, 1))(x, w)
    ),
  }


def bench_layers(batch: int, rounds: int) -> str:
  head = [f"conv (64x64 in, batch {batch})"]
  head += [f"{c} {i}" for c in ("fwd", "dx", "dw", "fwd+bwd") for i in ("XLA", "im2col")]
  head += ["speed-up fwd+bwd", "max rel err dw"]
  rows = []
  key = jax.random.PRNGKey(0)
  for name, c_in, c_out, k, stride, groups in LAYERS:
    kx, kw_, kg = jax.random.split(jax.random.fold_in(key, c_in * 1000 + c_out), 3)
    x = jax.random.normal(kx, (batch, 64, 64, c_in), jnp.float32)
    w = jax.random.normal(kw_, (k, k, c_in // groups, c_out), jnp.float32) * 0.1
    out_hw = 64 // stride
    gy = jax.random.normal(kg, (batch, out_hw, out_hw, c_out), jnp.float32)
    fns = {}
    for impl in ("xla", "im2col"):
      for col, fn in layer_fns(stride, groups, impl).items():
        fns[f"{col} {impl}"] = fn
    ms = time_round_robin(fns, (x, w, gy), rounds)
    dw_x, dw_i = fns["dw xla"](x, w, gy), fns["dw im2col"](x, w, gy)
    err = float(jnp.max(jnp.abs(dw_x - dw_i)) / jnp.max(jnp.abs(dw_x)))
    cells = [
      f"{ms[f'{c} {i}']:.1f}" for c in ("fwd", "dx", "dw", "fwd+bwd") for i in ("xla", "im2col")
    ]
    speed = ms["fwd+bwd xla"] / ms["fwd+bwd im2col"]
    rows.append([name, *cells, f"{speed:.1f}x", f"{err:.0e}"])
  return harness.markdown_table(head, rows)


# ----------------------------------------------------------------------------- scan trap

SCAN_CHANNELS = (3, 16, 32, 32, 16)  # 4 conv-ReLU layers, 3x3, stride 1


def init_net(key):
  params = []
  for c_in, c_out in zip(SCAN_CHANNELS[:-1], SCAN_CHANNELS[1:]):
    key, sub = jax.random.split(key)
    w = jax.random.normal(sub, (3, 3, c_in, c_out), jnp.float32) * (2.0 / (9 * c_in)) ** 0.5
    params.append((w, jnp.zeros((c_out,), jnp.float32)))
  return params


def net(params, x, impl):
  """x [B, H, W, 3] -> [B, H, W, 16]."""
  for w, b in params:
    x = jax.nn.relu(conv2d(x, w, padding="SAME", impl=impl) + b)
  return x


def clip_loss(params, clip, impl, mode):
  """clip [T, B, H, W, 3]; y_t = net(x_t) + 0.5 y_{t-1}; loss = sum_t sum(y_t)."""
  y0 = jnp.zeros(clip.shape[1:4] + (SCAN_CHANNELS[-1],), jnp.float32)

  def step(y_prev, x_t):
    y = net(params, x_t, impl) + 0.5 * y_prev
    return y, jnp.sum(y)

  if mode in ("scan", "scan-unroll"):
    _, losses = jax.lax.scan(step, y0, clip, unroll=(mode == "scan-unroll"))
    return jnp.sum(losses)
  if mode == "python":
    y, total = y0, jnp.zeros((), jnp.float32)
    for t in range(clip.shape[0]):
      y, loss_t = step(y, clip[t])
      total = total + loss_t
    return total
  if mode == "frames-batched":
    # Only valid because this toy recurrence is outside the net: all T*B frames through the
    # net at once, then the cheap linear recurrence. Shown as the lower bound.
    t, b = clip.shape[:2]
    z = net(params, clip.reshape(t * b, *clip.shape[2:]), impl).reshape(t, b, *y0.shape[1:])
    _, losses = jax.lax.scan(lambda y, z_t: (z_t + 0.5 * y, jnp.sum(z_t + 0.5 * y)), y0, z)
    return jnp.sum(losses)
  raise ValueError(mode)


def bench_scan(frames: int, batch: int, rounds: int) -> str:
  key = jax.random.PRNGKey(1)
  params = init_net(key)
  clip = jax.random.normal(jax.random.fold_in(key, 1), (frames, batch, 64, 64, 3), jnp.float32)
  fns = {}
  for mode in ("scan", "scan-unroll", "python", "frames-batched"):
    for impl in ("xla", "im2col"):
      fns[(mode, impl)] = jax.jit(
        jax.grad(lambda p, c, impl=impl, mode=mode: clip_loss(p, c, impl, mode))
      )
  # compile time grows with T when the loop is unrolled
  compile_s = {k: harness.compile_ahead(fn, params, clip)[1] for k, fn in fns.items()}
  ms = time_round_robin(fns, (params, clip), rounds)
  ref = fns[("python", "xla")](params, clip)
  head = [
    f"formulation (T={frames}, {batch} x 64x64 per frame, 4 conv layers)",
    "XLA conv ms",
    "im2col conv ms",
    "compile s XLA / im2col",
    "max rel err of grad vs (python, XLA)",
  ]
  rows = []
  for mode in ("scan", "scan-unroll", "python", "frames-batched"):
    g = fns[(mode, "im2col")](params, clip)
    err = max(
      float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
      for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref))
    )
    rows.append(
      [
        mode,
        f"{ms[(mode, 'xla')]:.0f}",
        f"{ms[(mode, 'im2col')]:.0f}",
        f"{compile_s[(mode, 'xla')]:.1f} / {compile_s[(mode, 'im2col')]:.1f}",
        f"{err:.0e}",
      ]
    )
  b_ = ms[("scan", "im2col")]
  return "\n\n".join(
    [
      harness.markdown_table(head, rows),
      "Ratios: (b) scan+im2col / (d) python+im2col = "
      f"{b_ / ms[('python', 'im2col')]:.2f}; "
      f"(b) / (c) python+XLA = {b_ / ms[('python', 'xla')]:.2f}; "
      f"(a) scan+XLA / (b) scan+im2col = {ms[('scan', 'xla')] / b_:.1f}; "
      f"scan-unroll+im2col / python+im2col = "
      f"{ms[('scan-unroll', 'im2col')] / ms[('python', 'im2col')]:.2f}.",
    ]
  )


SCAN_MODES = ("scan", "unrolled")
# (name, C_in, C_out, kernel, stride, groups) for the per-layer scan-vs-unrolled table
SCAN_LAYERS = [
  ("3x3 32->32", 32, 32, 3, 1, 1),
  ("3x3 32->32 s2", 32, 32, 3, 2, 1),
  ("3x3 depthwise 32", 32, 32, 3, 1, 32),
  ("3x3 32->32 groups=2", 32, 32, 3, 1, 2),
  ("1x1 32->32", 32, 32, 1, 1, 1),
]


def bench_scan_layers(frames: int, batch: int, rounds: int) -> str:
  """Gradient (w and x) of sum_t |conv(x_t, w)|^2 over T frames: lax.scan vs Python loop."""
  head = [f"one conv layer, T={frames}, {batch} x 64x64 per frame"]
  head += ["scan XLA", "unrolled XLA", "scan im2col", "unrolled im2col"]
  rows = []
  key = jax.random.PRNGKey(2)
  for name, c_in, c_out, k, stride, groups in SCAN_LAYERS:
    xs = jax.random.normal(key, (frames, batch, 64, 64, c_in), jnp.float32)
    w = jax.random.normal(key, (k, k, c_in // groups, c_out), jnp.float32) * 0.1

    def loss(w_, xs_, impl, mode, stride=stride, groups=groups):
      def step(total, x_t):
        y = conv2d(x_t, w_, strides=(stride, stride), feature_group_count=groups, impl=impl)
        return total + jnp.sum(y * y), None

      total = jnp.zeros((), jnp.float32)
      if mode == "scan":
        return jax.lax.scan(step, total, xs_)[0]
      for t in range(xs_.shape[0]):
        total = step(total, xs_[t])[0]
      return total

    fns = {
      (impl, mode): jax.jit(
        jax.grad(lambda w_, xs_, impl=impl, mode=mode: loss(w_, xs_, impl, mode), (0, 1))
      )
      for impl in ("xla", "im2col")
      for mode in SCAN_MODES
    }
    ms = time_round_robin(fns, (w, xs), rounds)
    rows.append([name] + [f"{ms[(i, m)]:.0f}" for i in ("xla", "im2col") for m in SCAN_MODES])
  return harness.markdown_table(head, rows)


def main():
  parser = harness.BenchParser(__doc__, rounds=5)
  parser.add_argument("--batch", type=int, default=32, help="frames per conv call (layers)")
  parser.add_argument("--frames", type=int, default=8, help="T of the scan benchmark")
  parser.add_argument("--clip-batch", type=int, default=4, help="clips per frame (scan)")
  parser.add_argument("--only", choices=("layers", "scan", "scan-layers"), default=None)
  args = parser.parse_args()
  start = time.perf_counter()
  print(harness.machine().text())
  print(f"- medians of {args.rounds} round-robin rounds, times in ms\n")
  if args.only in (None, "layers"):
    print(bench_layers(args.batch, args.rounds), "\n", flush=True)
  if args.only in (None, "scan"):
    print(bench_scan(args.frames, args.clip_batch, args.rounds), "\n", flush=True)
  if args.only in (None, "scan-layers"):
    print(bench_scan_layers(args.frames, args.clip_batch, args.rounds), "\n", flush=True)
  print(harness.footer(start))


if __name__ == "__main__":
  main()
