"""The whole resq_jax demo on SynthRes, on CPU: python demo.py [--workdir runs/demo].

FP training, the QAT stages of configs/demo.py (FQ W4A4 / static ResQ / dynamic ResQ), and the
evaluation report (accuracy vs BOPs table and plots) under --workdir. A stage that fails or is
preempted (SIGTERM: saved, exit 75) stops the demo; rerun the same command to resume.
--verbose shows the libraries' logging too. Exit codes: docs/failure_behaviour.md.
"""
from absl import app, flags
from ml_collections import config_flags

from configs import demo as demo_config
from resq_jax import errors, log, pipeline

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Base config.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Directory of the demo's runs and report.")
_QAT_STEPS = flags.DEFINE_integer("qat_steps", 60, "Fine-tuning steps of each QAT stage.")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Resume stages whose saved config.json differs from this run's (new values adopted).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the libraries' INFO and WARNING logging.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}", exitcode=errors.EXIT_CONFIG)
  log.setup(verbose=_VERBOSE.value)
  errors.run_cli(pipeline.run_demo, _CONFIG.value, _WORKDIR.value,
                 qat_stages=demo_config.QAT_STAGES, qat_lr=demo_config.QAT_LR,
                 qat_steps=_QAT_STEPS.value, allow_config_change=_ALLOW_CHANGE.value)


if __name__ == "__main__":
  app.run(main, flags_parser=errors.parse_flags)
