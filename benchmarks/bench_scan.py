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

import argparse
import datetime
import os
import platform
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from machine import cpu_model  # benchmarks/machine.py

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
    model, model.float_twin(), variables, [clip[:, :8]], period=4, methods=MINMAX
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


def _compile(fn, *args):
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return compiled, time.perf_counter() - t0


def _time(compiled, args) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(compiled(*args))
  return time.perf_counter() - t0


def scan_table(ks, rounds: int, trap_k: int | None) -> list[str]:
  lines = [
    "| K | unrolled ms | rolled ms | rolled / unrolled (IQR) | compile unrolled s | "
    "compile rolled s | rolled, xla convs ms |",
    "| ---: | ---: | ---: | --- | ---: | ---: | ---: |",
  ]
  print("\n".join(lines), flush=True)
  model, variables, clip, labels = _setup()
  xla_model = model.clone(conv_impl="xla")
  args = (variables["params"], clip, labels)
  for k in ks:
    variants = {
      "unrolled": _compile(_step(model, variables, k, True), *args),
      "rolled": _compile(_step(model, variables, k, 1), *args),
    }
    if k == trap_k:
      variants["trap"] = _compile(_step(xla_model, variables, k, 1), *args)
    for compiled, _ in variants.values():
      jax.block_until_ready(compiled(*args))  # warm-up
    times = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
      for name in names[r % len(names) :] + names[: r % len(names)]:
        times[name].append(_time(variants[name][0], args))
    ratio = np.asarray(times["rolled"]) / np.asarray(times["unrolled"])
    q1, q3 = np.percentile(ratio, [25, 75])
    trap = f"{1e3 * np.median(times['trap']):.0f}" if "trap" in times else ""
    lines.append(
      f"| {k} | {1e3 * np.median(times['unrolled']):.0f} | "
      f"{1e3 * np.median(times['rolled']):.0f} | {np.median(ratio):.2f} "
      f"({q1:.2f}-{q3:.2f}) | {variants['unrolled'][1]:.1f} | "
      f"{variants['rolled'][1]:.1f} | {trap} |"
    )
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
  lines = [
    "| T = K | XLA temp MiB | with remat | ratio | peak RSS MiB | with remat |",
    "| ---: | ---: | ---: | ---: | ---: | ---: |",
  ]
  print("\n".join(lines), flush=True)
  for t in lengths:
    model, variables, clip, labels = _setup(t)
    args = (variables["params"], clip, labels)
    temp = {}
    for remat in (False, True):
      compiled, _ = _compile(_step(model, variables, t, 1, remat), *args)
      temp[remat] = compiled.memory_analysis().temp_size_in_bytes / 2**20
    peaks = ["", ""]
    if rss:  # ru_maxrss of children is a running max: measure the larger case last
      peaks = [f"{_rss_of(t, True):.0f}", f"{_rss_of(t, False):.0f}"][::-1]
    lines.append(
      f"| {t} | {temp[False]:.0f} | {temp[True]:.0f} | "
      f"{temp[True] / temp[False]:.2f} | {peaks[0]} | {peaks[1]} |"
    )
    print(lines[-1], flush=True)
  return lines


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="K in {4, 8}, 3 rounds, T in {8, 16}")
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--only", choices=("scan", "memory"))
  p.add_argument("--trap_k", type=int, default=4)
  p.add_argument("--rss", action="store_true")
  a = p.parse_args()
  ks, lengths, rounds = ((4, 8), (8, 16), 3) if a.quick else ((4, 8, 16, 32), (8, 16, 32), a.rounds)
  print(
    f"# {datetime.date.today()} {cpu_model()}, {os.cpu_count()} cores, {platform.python_version()}"
    f", jax {jax.__version__}, backend {jax.default_backend()}, load {os.getloadavg()}",
    flush=True,
  )
  if a.only != "memory":
    scan_table(ks, rounds, a.trap_k)  # prints its rows as they are measured
  if a.only != "scan":
    memory_table(lengths, a.rss)
  print(f"# load after {os.getloadavg()}", flush=True)


if __name__ == "__main__":
  main()
