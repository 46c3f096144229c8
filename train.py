"""Train one stage (fp / ptq / qat) of a resq_jax experiment and evaluate it.

  python train.py --config configs/synthres.py:segmentation:fp --workdir runs/fp
  python train.py --config configs/synthres.py:segmentation:qat_resq --workdir runs/qat_resq \
      --config.init_from=runs/fp

Rerunning the same command resumes from the newest intact checkpoint in --workdir (SIGTERM
saves one and exits with 75). A resumed run must use the config it was started with unless
--allow_config_change is given. --verbose shows the libraries' logging too. Exit codes:
docs/failure_behaviour.md.
"""

from absl import app, flags
from ml_collections import config_flags

from resq_jax import errors
from resq_jax.experiment import log, parse, train

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results.")
_ALLOW_CHANGE = flags.DEFINE_bool(
  "allow_config_change",
  False,
  "Resume a run whose saved config.json differs from --config (the new values are adopted).",
)
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the libraries' INFO and WARNING logging.")
flags.mark_flags_as_required(["config", "workdir"])


def run(config, workdir: str, allow_config_change: bool):
  experiment = parse.parse(config)  # before jax.distributed or any data (exit code 2)
  return train.train_and_evaluate(experiment, workdir, allow_config_change=allow_config_change)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}", exitcode=errors.EXIT_CONFIG)
  log.setup(verbose=_VERBOSE.value)
  errors.run_cli(run, _CONFIG.value, _WORKDIR.value, _ALLOW_CHANGE.value)


if __name__ == "__main__":
  app.run(main, flags_parser=parse.parse_flags)
