"""Benchmark: build time of the default SynthRes training set (2,000 + 200 + 200 clips).

Builds the config into a fresh temporary directory once per requested worker count and
prints a Markdown table with the machine, the date and, per build: wall time, CPU time of
this process and its workers, clips per second and size on disk. It also measures the pure
generation cost (`generate_clip`, best of 3) and one epoch of the grain loader over the
built training split.

  python benchmarks/bench_synthres.py                      # serial and 2 workers
  python benchmarks/bench_synthres.py --workers 0 --num_train 200   # quick check

Timings on a shared machine are noisy: the load average at start and end is printed too.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time

import harness  # benchmarks/harness.py


def _cpu_seconds() -> float:
  own = resource.getrusage(resource.RUSAGE_SELF)
  kids = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _dir_megabytes(path: str) -> float:
  total = sum(
    os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
  )
  return total / 2**20


def bench_generation(regime: str, n: int = 50, repeats: int = 3) -> float:
  """Best-of-repeats milliseconds per `generate_clip` call (CPU-bound, single process)."""
  from resq_jax.data import generate_clip

  generate_clip(regime, "train", 0)  # texture bank and imports out of the timing
  batch = lambda: [generate_clip(regime, "train", i) for i in range(n)]
  return harness.time_interleaved({"gen": batch}, repeats, warmup=0, sync=None).min_ms("gen") / n


def bench_build(regime: str, counts: tuple[int, int, int], workers: int) -> dict:
  from resq_jax.data import build_synthres

  data_dir = tempfile.mkdtemp(prefix="synthres_bench_")
  try:
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    build_synthres(
      data_dir,
      regime,
      num_train=counts[0],
      num_validation=counts[1],
      num_test=counts[2],
      num_workers=workers,
      verbose=False,
    )
    wall = time.perf_counter() - wall0
    cpu = _cpu_seconds() - cpu0
    size = _dir_megabytes(data_dir)
    start = time.perf_counter()
    batches = bench_loader(data_dir, regime, counts)
    read = time.perf_counter() - start
    return dict(
      workers=workers,
      wall=wall,
      cpu=cpu,
      clips_per_s=sum(counts) / wall,
      size_mb=size,
      read_clips_per_s=batches * 32 / read,
    )
  finally:
    shutil.rmtree(data_dir, ignore_errors=True)


def bench_loader(data_dir: str, regime: str, counts: tuple[int, int, int]) -> int:
  """Reads one shuffled epoch of the training split in batches of 32; returns #batches."""
  import grain

  from resq_jax.data import make_loader

  loader = make_loader(
    data_dir,
    "train",
    batch_size=32,
    regime=regime,
    num_train=counts[0],
    num_validation=counts[1],
    num_test=counts[2],
    num_epochs=1,
    shard_options=grain.sharding.NoSharding(),
  )
  return sum(1 for _ in loader)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--regime", default="slow_pan")
  parser.add_argument("--num_train", type=int, default=2000)
  parser.add_argument("--num_validation", type=int, default=200)
  parser.add_argument("--num_test", type=int, default=200)
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
  args = parser.parse_args()
  counts = (args.num_train, args.num_validation, args.num_test)

  facts = harness.machine(["numpy", "tensorflow-datasets", "grain"], jax=False)
  start = time.perf_counter()
  gen_ms = bench_generation(args.regime)
  rows = [bench_build(args.regime, counts, w) for w in args.workers]

  print(facts.text())
  print(harness.footer(start))
  print(
    f"- config: regime {args.regime}, 64x64x16, {counts[0]}/{counts[1]}/{counts[2]} "
    f"train/validation/test clips; generate_clip alone: {gen_ms:.1f} ms/clip "
    f"(best of 3 x 50)\n"
  )
  head = ["workers", "build wall (s)", "CPU incl. workers (s)", "clips/s", "size on disk (MB)"]
  head.append("loader read, batch 32 (clips/s)")
  cells = [
    [r["workers"], f"{r['wall']:.1f}", f"{r['cpu']:.1f}", f"{r['clips_per_s']:.0f}"]
    + [f"{r['size_mb']:.0f}", f"{r['read_clips_per_s']:.0f}"]
    for r in rows
  ]
  print(harness.markdown_table(head, cells, "rrrrrr"))


if __name__ == "__main__":  # the worker pool uses "spawn", which re-imports this file
  main()
