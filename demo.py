"""The whole resq_jax demo on SynthRes, on CPU: python demo.py [--task pose] [--workdir runs/demo].

FP training, the QAT stages of configs/demo.py (FQ W4A4 / static ResQ / dynamic ResQ), and the
evaluation report (accuracy vs BOPs table and plots) under --workdir. A stage that fails or is
preempted (SIGTERM: saved, exit 75) stops the demo; rerun the same command to resume.
--task pose runs the same stages for pose estimation (configs/demo.py:pose, PCK@0.2 on the test
split; default workdir runs/demo_pose). --verbose shows the libraries' logging too.
Exit codes: docs/failure_behaviour.md.
"""

from absl import app, flags
from ml_collections import config_flags

from configs import demo as demo_config
from resq_jax import errors
from resq_jax.experiment import demo, log, parse

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/demo.py", "Base config.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
  "workdir",
  None,
  "Directory of the demo's runs and report (default runs/demo, runs/demo_pose for --task pose).",
)
_TASK = flags.DEFINE_enum(
  "task",
  "segmentation",
  ["segmentation", "pose"],
  "segmentation: --config (configs/demo.py); pose: configs/demo.py:pose.",
)
_QAT_STEPS = flags.DEFINE_integer("qat_steps", 60, "Fine-tuning steps of each QAT stage.")
_ALLOW_CHANGE = flags.DEFINE_bool(
  "allow_config_change",
  False,
  "Resume stages whose saved config.json differs from this run's (new values adopted).",
)
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the libraries' INFO and WARNING logging.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}", exitcode=errors.EXIT_CONFIG)
  log.setup(verbose=_VERBOSE.value)
  pose = _TASK.value == "pose"
  config = demo_config.get_config("pose") if pose else _CONFIG.value
  workdir = _WORKDIR.value or ("runs/demo_pose" if pose else "runs/demo")
  errors.run_cli(
    demo.run_demo,
    config,
    workdir,
    qat_stages=demo_config.QAT_STAGES,
    qat_lr=demo_config.QAT_LR,
    qat_steps=_QAT_STEPS.value,
    allow_config_change=_ALLOW_CHANGE.value,
  )


if __name__ == "__main__":
  app.run(main, flags_parser=parse.parse_flags)
