"""docs/results.md end to end: float models, QAT runs, the sweeps of every regime, the report.

  python benchmarks/comparison.py --workdir runs/results            # everything (resumable)
  python benchmarks/comparison.py --workdir runs/results --stages report   # docs only

The plan (tasks, configs, QAT runs with their learning rates, regimes, sweeps) is data:
configs/comparison.py. Every stage is an ordinary train_lib / eval_lib run in its own
directory (``<workdir>/<task>/fp``, ``<task>/<qat run>``, ``<task>/<regime>``), so an
interrupted run resumes where it stopped: finished trainings are not redone, and a finished
sweep (its ``report/results.json`` exists) is not evaluated again unless --force_sweeps.

``--stages report`` reads every sweep's results.json and writes docs/results.md (claims table,
per-regime tables) with its plots under docs/results/.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import time

from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resq_jax import errors  # noqa: E402
from resq_jax.evaluation import load_results, plot_pareto, results_markdown  # noqa: E402
from resq_jax.evaluation.claims import (  # noqa: E402
  claims_markdown,
  decision_matrix,
  effective_rows,
  front_summary,
)
from resq_jax.experiment import (  # noqa: E402
  evaluate,
  log,
  parse,
  train,
)
from resq_jax.experiment.demo import stage_config  # noqa: E402

STAGES = ("fp", "qat", "sweep", "report")
_PLAN = flags.DEFINE_string("plan", "configs/comparison.py", "The plan module (data).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/results", "Root of every run of the comparison.")
_TASKS = flags.DEFINE_list("tasks", [], "Tasks to run (default: every task of the plan).")
_STAGES = flags.DEFINE_list("stages", list(STAGES), f"Stages to run, in order: {STAGES}.")
_DOCS = flags.DEFINE_string("docs", "docs", "Where results.md and results/ are written.")
_FORCE = flags.DEFINE_bool("force_sweeps", False, "Re-evaluate sweeps that have results.json.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the libraries' logging too.")

logger = log.get_logger("comparison")


def load_config(path: str):
  """``configs/NAME.py`` or ``configs/NAME.py:ARG`` (ml_collections' --config syntax)."""
  path, _, arg = path.partition(":")
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, ROOT / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def load_plan(path: str):
  spec = importlib.util.spec_from_file_location("comparison_plan", ROOT / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def qat_config(plan, task: dict, name: str, fp_dir: str):
  quant = plan.QAT_RUNS[name]
  config = stage_config(
    load_config(task["config"]),
    "qat",
    fp_dir,
    num_steps=plan.QAT_STEPS,
    lr=plan.FAMILY_LR[quant["mode"]],
    **quant,
  )
  config.unlock()
  config.train.distill_weight = plan.DISTILL_WEIGHT
  config.train.distill_temperature = plan.DISTILL_TEMPERATURE
  config.optim.warmup_steps = plan.QAT_WARMUP
  config.lock()
  return config


def sweep_config(task: dict, regime: str, fp_dir: str, qat_dirs: list[str]):
  main = regime == task["main_regime"]
  config = stage_config(
    load_config(task["config"]),
    "fp",
    fp_dir,
    mode="float",
    qat_runs=",".join(qat_dirs) if main else "",
  )
  config.unlock()
  config.data.regime = regime
  config.eval.sweep = task["main_sweep"] if main else task["regime_sweep"]
  if not main:
    config.data.num_train = 16  # calibration only: two batches of training clips
  config.lock()
  return config


def task_regimes(task: dict) -> list[str]:
  return [task["main_regime"], *task["regimes"]]


def run_task(plan, name: str, task: dict, root: pathlib.Path, stages) -> None:
  fp_dir = str(root / name / "fp")
  qat_dirs = [str(root / name / q) for q in task["qat_runs"]]
  if "fp" in stages:
    logger.info(f"== {name}: float training ({task['fp_config']})")
    start = time.perf_counter()
    train.train_and_evaluate(parse.parse(load_config(task["fp_config"])), fp_dir)
    logger.info(f"{name} float run: {(time.perf_counter() - start) / 60:.1f} min")
  if "qat" in stages:
    for q, qat_dir in zip(task["qat_runs"], qat_dirs):
      logger.info(f"== {name}: QAT {q}")
      train.train_and_evaluate(parse.parse(qat_config(plan, task, q, fp_dir)), qat_dir)
  if "sweep" in stages:
    for regime in task_regimes(task):
      out = root / name / regime
      if (out / "report" / "results.json").is_file() and not _FORCE.value:
        logger.info(f"== {name} / {regime}: done ({out / 'report'})")
        continue
      logger.info(f"== {name} / {regime}: sweep")
      start = time.perf_counter()
      config = sweep_config(task, regime, fp_dir, qat_dirs)
      evaluate.evaluate_sweep(parse.parse(config, needs_init_from=True), str(out))
      logger.info(f"{name} / {regime}: {(time.perf_counter() - start) / 60:.1f} min")


def cells(plan, root: pathlib.Path, tasks) -> list[tuple[str, list, dict, pathlib.Path]]:
  found = []
  for name in tasks:
    for regime in task_regimes(plan.TASKS[name]):
      report = root / name / regime / "report"
      if (report / "results.json").is_file():
        rows, meta = load_results(report)
        frames = int(meta.get("config", {}).get("data", {}).get("num_frames", 10**9))
        found.append((f"{name} / {regime}", effective_rows(rows, frames), meta, report))
  return found


HEADER = """# Results: where residual quantization beats frame quantization at equal cost

Generated by `python benchmarks/comparison.py --workdir runs/results` (every stage: float
runs, QAT, sweeps, this page; resumable) or, from finished runs, by
`python benchmarks/comparison.py --workdir runs/results --stages report`. The plan (configs,
QAT runs and their learning rates, regimes, sweeps) is configs/comparison.py; the settings are
the sweeps 'comparison' and 'core' of configs/sweeps.py; the controls and peer baselines are
defined in docs/baselines.md; drift and adaptive keyframes are in docs/drift.md.

How to read it. Every setting runs on the same layers and is costed by the same BOPs model
(% of W8A8 frame quantization, average over the clip). Each metric (mIoU, PCK@0.2) has a 95%
bootstrap interval over the test clips. Fidelity to the float model (relative L2 of the outputs
and, for segmentation, pixel agreement; for pose the mean distance of the decoded keypoints to
the float model's) is the error that the equal-cost comparison uses: **err/FQ** is a setting's
error divided by the frame-quantization front's error at the same average BOPs (interpolated
linearly in log BOPs between FQ bit-widths; < 1: closer to the float model than FQ at equal
cost). Claims compare two groups' fronts at equal budgets (resq_jax/evaluation/equal_cost.py): at
each budget where either front has a point, each group's best fidelity error within that
budget, with its interval; a budget is better / worse only where the 95% interval of the
paired bootstrap over clips (the same resampled clips for both, 1000 resamples) of the mean
per-clip difference excludes 0 (rows written without per-clip errors: only where the two
intervals do not overlap). 'holds': better at every compared budget; 'does not hold': worse
at every one (or worse and otherwise tied); 'depends': better at some budgets and not at
others; 'tie': no budget separates them; 'n/a': the cell lacks the settings.
"""


def write_docs(plan, root: pathlib.Path, tasks, docs: pathlib.Path) -> pathlib.Path:
  """docs/results.md: float models, where each family sits per budget, the claims table of
  every evaluated cell, then each cell's plot, with the cells' plots and full tables copied
  under docs/results/ (and docs/results_notes.md appended when it exists)."""
  found = cells(plan, root, tasks)
  if not found:
    raise errors.DataError(f"no sweep results under {root}: run the sweep stage first")
  out_dir = docs / "results"
  out_dir.mkdir(parents=True, exist_ok=True)
  lines = [HEADER, "## Float models", ""]
  lines += ["| Cell | Metric (95% CI) | Test clips |", "| --- | ---: | ---: |"]
  for label, rows, _, _ in found:
    fp = next((r for r in rows if r.get("family") == "fp"), None)
    if fp is not None:
      ci = fp.get(f"{fp['metric_name']}_ci") or [float("nan")] * 2
      lines.append(
        f"| {label} | {fp['metric_name']} {100 * fp['metric']:.1f} "
        f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] | {fp.get('clips', 'n/a')} |"
      )
  lines += ["", "## At a glance (PTQ): who is closest to float, and ResQ's best err/FQ", ""]
  lines += [
    "Per cell and budget band: the family of the setting closest to the float model (lowest",
    "fidelity error), then the lowest err/FQ of any static or dynamic ResQ setting in the band",
    "(bold below 1: ResQ beats frame quantization at equal BOPs there). The claims below say",
    "where the differences are outside the paired intervals.",
    "",
    *decision_matrix([(label, rows) for label, rows, _, _ in found]),
  ]
  lines += ["", "## Where each family sits (lowest fidelity error per budget band)", ""]
  for label, rows, _, _ in found:
    lines += [f"**{label}**", "", *front_summary(rows), ""]
  lines += ["## Claims", "", claims_markdown([(lb, rows, meta) for lb, rows, meta, _ in found])]
  lines += ["## Cells", ""]
  for label, rows, meta, _ in found:
    slug = label.replace(" / ", "_")
    (out_dir / f"{slug}.md").write_text(f"# {label}\n\n" + results_markdown(rows, meta))
    metric = rows[0].get("metric_name", "miou")
    plot_pareto(rows, out_dir / f"{slug}_pareto.png", title=label, metric=metric)
    lines.append(f"### {label}\n")
    lines.append(f"![{label}](results/{slug}_pareto.png)\n")
    lines.append(
      f"Every setting, with its interval and err/FQ: [results/{slug}.md](results/{slug}.md)\n"
    )
  notes = docs / "results_notes.md"
  if notes.is_file():
    lines += ["## Notes (hand-written)", "", notes.read_text()]
  path = docs / "results.md"
  path.write_text("\n".join(lines) + "\n")
  return path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}", exitcode=errors.EXIT_CONFIG)
  log.setup(verbose=_VERBOSE.value)
  plan = load_plan(_PLAN.value)
  tasks = _TASKS.value or list(plan.TASKS)
  unknown = set(_STAGES.value) - set(STAGES) or set(tasks) - set(plan.TASKS)
  if unknown:
    raise app.UsageError(f"unknown stages or tasks: {sorted(unknown)}", exitcode=errors.EXIT_CONFIG)
  root = pathlib.Path(_WORKDIR.value)

  def run():
    for name in tasks:
      run_task(plan, name, plan.TASKS[name], root, _STAGES.value)
    if "report" in _STAGES.value:
      path = write_docs(plan, root, tasks, pathlib.Path(_DOCS.value))
      logger.info(f"results page: {path}")

  errors.run_cli(run)


if __name__ == "__main__":
  app.run(main, flags_parser=parse.parse_flags)
