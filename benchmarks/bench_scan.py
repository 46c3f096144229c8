"""ResQ training through a rolled vs an unrolled residual scan, and its memory, on CPU.

Part 1 (scan table): one static-ResQ QAT gradient step (W8A8 keys, W4A4 residuals, closed loop)
of the demo SegNet on clips ``[2, 32, 64, 64, 3]`` for K in {4, 8, 16, 32} (the same 64 frames
in every row: K only changes how many keyframe groups are folded into the batch and how long the
residual scan is), in three variants:

  * unrolled: ``run_clip(unroll=True)`` (what training used so far), XLA's conv autodiff;
  * rolled: ``run_clip(unroll=1)``; ``QConv(conv_impl='auto')`` switches the convs inside the
    loop to the im2col kernel-gradient VJP of ``resq_jax.ops.conv2d`` on CPU;
  * rolled, xla: the same with ``conv_impl='xla'`` forced (the XLA:CPU scan trap), only at the
    K given by ``--trap_k`` (it is slow).

Variants of one K are timed round-robin (``--rounds`` rounds, the starting variant rotating), so
that the per-round ratio rolled / unrolled sees the same load; the table gives median times, the
median (IQR) of the per-round ratios, and compile times.

Part 2 (memory table): XLA's temporary buffer size of the same step (``memory_analysis()`` of
the compiled step: what the step allocates besides its inputs and outputs) for T in {8, 16, 32}
at K = T, rolled, with and without rematerialisation (``run_clip(remat=True)``), plus the peak RSS
of one run of each in a fresh subprocess (``--rss``).

  python benchmarks/bench_scan.py [--quick] [--rounds N] [--only scan|memory] [--rss]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import harness  # benchmarks/harness.py
import jax
import jax.numpy as jnp
import numpy as np
import optax

from resq_jax.nn import SegNet, calibrate_model, run_clip, segnet_preset
from resq_jax.nn.calibrate import CalibrationMethods
from resq_jax.quant.recipe import resq_recipe

BATCH, FRAMES, HW, CLASSES = 2, 32, 64, 7
MINMAX = CalibrationMethods("minmax", "minmax", "minmax", "minmax")


def _setup(frames: int = FRAMES):
  model = SegNet(CLASSES, recipe=resq_recipe((8, 8), (4, 4)), **segnet_preset("demo"))
  rng = np.random.default_rng(0)
  base = rng.normal(size=(BATCH, 1, HW, HW, 3))
  clip = jnp.asarray(
    base + np.cumsum(0.05 * rng.normal(size=(BATCH, frames, HW, HW, 3)), 1), jnp.float32
  )
  labels = jnp.asarray(rng.integers(0, CLASSES, size=(BATCH, frames, HW, HW)), jnp.int32)
  variables = model.init(jax.random.key(0), clip[:, 0], phase="key")
  variables = calibrate_model(
    model,
    float_model=model.float_twin(),
    variables=variables,
    clips=[clip[:, :8]],
    period=4,
    methods=MINMAX,
  )
  return model, variables, clip, labels


def _step(model, variables, period: int, unroll, remat: bool = False):
  def loss(params, clip, labels):
    out = run_clip(
      model,
      dict(variables, params=params),
      clip,
      period=period,
      unroll=unroll,
      remat=remat,
      check=False,
    ).outputs
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, labels))

  return jax.jit(jax.grad(loss))


def scan_table(ks, rounds: int, trap_k: int | None) -> list[str]:
  head = ["K", "unrolled ms", "rolled ms", "rolled / unrolled (IQR)", "compile unrolled s"]
  head += ["compile rolled s", "rolled, xla convs ms"]
  lines = [harness.table_head(head, "rrrlrrr")]
  print(lines[0], flush=True)
  model, variables, clip, labels = _setup()
  xla_model = model.clone(conv_impl="xla")
  args = (variables["params"], clip, labels)
  for k in ks:
    variants = {
      "unrolled": harness.compile_ahead(_step(model, variables, k, True), *args),
      "rolled": harness.compile_ahead(_step(model, variables, k, 1), *args),
    }
    if k == trap_k:
      variants["trap"] = harness.compile_ahead(_step(xla_model, variables, k, 1), *args)
    # Round-robin, the starting variant rotating, so that the per-round ratio sees the same load.
    t = harness.time_interleaved(
      {name: lambda c=compiled: c(*args) for name, (compiled, _) in variants.items()}, rounds
    )
    trap = f"{t.median_ms('trap'):.0f}" if "trap" in variants else ""
    row = [k, f"{t.median_ms('unrolled'):.0f}", f"{t.median_ms('rolled'):.0f}"]
    row += [t.ratio_text("rolled", "unrolled", unit=""), f"{variants['unrolled'][1]:.1f}"]
    lines.append(harness.table_row([*row, f"{variants['rolled'][1]:.1f}", trap]))
    print(lines[-1], flush=True)
  return lines


def _rss_of(frames: int, remat: bool) -> float:
  """Peak RSS (MiB) of a fresh process that compiles and runs one step."""
  code = (
    f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import bench_scan as b;"
    f"b._one_run({frames}, {remat})"
  )
  subprocess.run([sys.executable, "-c", code], check=True)
  return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _one_run(frames: int, remat: bool) -> None:
  model, variables, clip, labels = _setup(frames)
  step = _step(model, variables, frames, 1, remat)
  jax.block_until_ready(step(variables["params"], clip, labels))


def memory_table(lengths, rss: bool) -> list[str]:
  head = ["T = K", "XLA temp MiB", "with remat", "ratio", "peak RSS MiB", "with remat"]
  lines = [harness.table_head(head, "rrrrrr")]
  print(lines[0], flush=True)
  for t in lengths:
    model, variables, clip, labels = _setup(t)
    args = (variables["params"], clip, labels)
    temp = {}
    for remat in (False, True):
      compiled, _ = harness.compile_ahead(_step(model, variables, t, 1, remat), *args)
      temp[remat] = compiled.memory_analysis().temp_size_in_bytes / 2**20
    peaks = ["", ""]
    if rss:  # ru_maxrss of children is a running max: measure the larger case last
      peaks = [f"{_rss_of(t, True):.0f}", f"{_rss_of(t, False):.0f}"][::-1]
    ratio = temp[True] / temp[False]
    row = [t, f"{temp[False]:.0f}", f"{temp[True]:.0f}", f"{ratio:.2f}", *peaks]
    lines.append(harness.table_row(row))
    print(lines[-1], flush=True)
  return lines


def main() -> None:
  p = harness.BenchParser(__doc__, rounds=7, quick_rounds=3, quick_help="K in {4, 8}, T in {8, 16}")
  p.add_argument("--only", choices=("scan", "memory"))
  p.add_argument("--trap_k", type=int, default=4)
  p.add_argument("--rss", action="store_true")
  a = p.parse_args()
  ks, lengths = ((4, 8), (8, 16)) if a.quick else ((4, 8, 16, 32), (8, 16, 32))
  start = time.perf_counter()
  print(harness.machine().text() + "\n", flush=True)
  if a.only != "memory":
    scan_table(ks, a.rounds, a.trap_k)  # prints its rows as they are measured
    print(flush=True)
  if a.only != "scan":
    memory_table(lengths, a.rss)
    print(flush=True)
  print(harness.footer(start), flush=True)


if __name__ == "__main__":
  main()
