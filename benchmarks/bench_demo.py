"""Run the CPU demo end to end and summarise it for BENCHMARKS.md.

  python benchmarks/bench_demo.py [--workdir runs/bench_demo] [--fresh]

Prints (Markdown): machine, wall time of the whole demo and of each stage, training throughput
(clips/s, median over log windows after the first, which includes compilation), evaluation
frames/s, and the results table of the evaluation sweep.
"""

import argparse
import datetime
import json
import pathlib
import shutil
import statistics
import sys
import time

import harness  # benchmarks/harness.py

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _throughput(run_dir: pathlib.Path) -> float:
  lines = (run_dir / "train_metrics.jsonl").read_text().splitlines()
  rows = [json.loads(line) for line in lines]
  values = [r["clips_per_s"] for r in rows[1:] if "clips_per_s" in r]
  return statistics.median(values) if values else float("nan")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", default="runs/bench_demo")
  parser.add_argument("--fresh", action="store_true", help="delete the workdir first")
  args = parser.parse_args()
  workdir = pathlib.Path(args.workdir)
  if args.fresh and workdir.exists():
    shutil.rmtree(workdir)
  from configs import demo as demo_config  # noqa: PLC0415
  from resq_jax.experiment import demo  # noqa: PLC0415

  config = demo_config.get_config()
  config.data.data_dir = str(workdir / "data")
  facts = harness.machine()  # the load average before the demo
  start = time.perf_counter()
  demo.run_demo(config, str(workdir), qat_stages=demo_config.QAT_STAGES, qat_lr=demo_config.QAT_LR)
  wall = time.perf_counter() - start
  print(f"\n## Demo benchmark ({datetime.date.today().isoformat()})\n")
  print(facts.text())
  print(harness.footer(start))
  print(f"- demo wall time: {wall / 60:.1f} min (includes building SynthRes if absent)\n")
  rows = []
  for name in ["fp", *demo_config.QAT_STAGES]:
    run = workdir / name
    metrics = json.loads((run / "eval_metrics.json").read_text())
    rows.append(
      [name, f"{_throughput(run):.1f}", f"{metrics['frames_per_s']:.0f}"]
      + [f"{100 * metrics['miou']:.1f}", f"{metrics['pct_w8a8']:.1f}"]
    )
  head = ["stage", "training clips/s", "eval frames/s", "mIoU (%)", "% of W8A8 BOPs"]
  print(harness.markdown_table(head, rows, "lrrrr") + "\n")
  print((workdir / "report" / "results.md").read_text())


if __name__ == "__main__":
  main()
