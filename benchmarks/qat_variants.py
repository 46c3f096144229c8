"""QAT variants of one QAT run of the comparison plan against its PTQ twin, on the validation
split (so that choosing among them does not read the test clips): the QAT optimizer
measurements of BENCHMARKS.md section 9.

  python benchmarks/qat_variants.py --task pose --run qat_resq_k4_w8a4 \\
      --variant adopted= --variant q1e-3=optim.quant_lr=1e-3 \\
      --variant lr2e-4=optim.lr=2e-4 --variant dw4=train.distill_weight=4

Each variant is ``name=`` (the plan's QAT config as it is) or ``name=key=value[,key=value]``
with float overrides of that config. Variants train (150 steps with the plan's settings, a
few minutes each on 2 cores) into ``<workdir>/<task>_<run>_<name>`` and resume when rerun;
then the PTQ twin and every variant are evaluated on the validation split with fidelity to
the float run (``evaluate.evaluate_sweep``), and a table is printed.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.comparison import load_config, load_plan, qat_config  # noqa: E402
from resq_jax.experiment import (  # noqa: E402
  evaluate,
  parse,
  train,
)
from resq_jax.experiment.demo import stage_config  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict[str, float]]:
  """``'name=key=value,key=value'`` -> (name, {key: float(value)}); ``'name='``: no override."""
  name, _, rest = text.partition("=")
  if not name:
    raise argparse.ArgumentTypeError(f"variant {text!r}: expected name= or name=key=value,...")
  overrides = {}
  for item in filter(None, rest.split(",")):
    key, sep, value = item.partition("=")
    if not sep or "." not in key:
      raise argparse.ArgumentTypeError(f"variant {text!r}: {item!r} is not section.key=value")
    overrides[key] = float(value)
  return name, overrides


def variant_config(plan, task: dict, run: str, fp_dir: str, overrides: dict[str, float]):
  config = qat_config(plan, task, run, fp_dir)
  config.unlock()
  for key, value in overrides.items():
    section, name = key.split(".", 1)
    config[section][name] = value
  config.lock()
  return config


def evaluate_variants(plan, task: dict, run: str, fp_dir: str, qat_dirs: list[str], out: str):
  """The PTQ twin (the run's quant settings, calibrated) and the QAT runs, validation split."""
  config = stage_config(load_config(task["config"]), "fp", fp_dir, mode="float")
  config.unlock()
  config.eval.split, config.eval.plots = "validation", False
  config.eval.qat_runs = ",".join(qat_dirs)
  config.eval.sweeps["qat_variants"] = (dict(plan.QAT_RUNS[run]),)
  config.eval.sweep = "qat_variants"
  config.lock()
  return evaluate.evaluate_sweep(parse.parse(config, needs_init_from=True), out)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--plan", default="configs/comparison.py")
  p.add_argument("--task", default="pose")
  p.add_argument("--run", required=True, help="a QAT run of the plan, e.g. qat_resq_k4_w8a4")
  p.add_argument("--fp_dir", default="", help="the float run (default runs/results/<task>/fp)")
  p.add_argument("--variant", type=parse_variant, action="append", required=True)
  p.add_argument("--workdir", default="runs/qat_variants")
  args = p.parse_args()
  plan = load_plan(args.plan)
  if args.run not in plan.QAT_RUNS:
    p.error(f"--run {args.run!r}: not a QAT run of {args.plan} ({', '.join(plan.QAT_RUNS)})")
  task = plan.TASKS[args.task]
  fp_dir = args.fp_dir or f"runs/results/{args.task}/fp"
  dirs = []
  for name, overrides in args.variant:
    out = pathlib.Path(args.workdir) / f"{args.task}_{args.run}_{name}"
    config = variant_config(plan, task, args.run, fp_dir, overrides)
    train.train_and_evaluate(parse.parse(config), str(out))
    dirs.append(str(out))
  rows = evaluate_variants(
    plan, task, args.run, fp_dir, dirs, str(pathlib.Path(args.workdir) / "eval")
  )
  print("| setting | metric (%) | fidelity error | rel L2 |\n| --- | ---: | ---: | ---: |")
  for r in rows:
    key = r.fidelity_error
    print(
      f"| {r.name} | {100 * r.metric:.2f} | {key} {r.metrics[key]:.4f} | "
      f"{r.metrics['rel_l2']:.4f} |"
    )


if __name__ == "__main__":
  main()
