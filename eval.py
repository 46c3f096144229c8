"""Evaluate a sweep of quantization settings from an FP run (and QAT runs) and write a report.

  python eval.py --config configs/synthres.py:segmentation:fp --workdir runs/eval \
      --config.init_from=runs/fp [--config.eval.sweep=tiny] \
      [--config.eval.qat_runs=runs/qat_fq,runs/qat_resq]

Writes <workdir>/report/: results.json, results.md, pareto.png, variance.png, bit_map.png.
--verbose shows the libraries' logging too. Exit codes: docs/failure_behaviour.md.
"""

from absl import app, flags
from ml_collections import config_flags

from resq_jax import errors
from resq_jax.experiment import evaluate, log, parse

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the report.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the libraries' INFO and WARNING logging.")
flags.mark_flags_as_required(["config", "workdir"])


def run(config, workdir: str):
  experiment = parse.parse(config, needs_init_from=True)  # exit code 2 before anything
  return evaluate.evaluate_sweep(experiment, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}", exitcode=errors.EXIT_CONFIG)
  log.setup(verbose=_VERBOSE.value)
  errors.run_cli(run, _CONFIG.value, _WORKDIR.value)
  print(f"report written to {_WORKDIR.value}/report/results.md")


if __name__ == "__main__":
  app.run(main, flags_parser=parse.parse_flags)
