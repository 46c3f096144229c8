"""The end-to-end demo: FP training -> QAT (FQ, static ResQ, dynamic ResQ) -> evaluation sweep.

Every stage is an ordinary ``train_lib`` / ``eval_lib`` run in its own sub-directory of the demo
workdir, so an interrupted demo resumes where it stopped when rerun: finished stages are not
trained or evaluated again (``train_and_evaluate`` returns their saved metrics), and a stage
that stops (``PreemptedError`` after SIGTERM, or any other failure) stops the demo, so no
later stage ever starts from a half-trained run.
"""
from __future__ import annotations

import pathlib
import time

from resq_jax import eval_lib, train_lib

QAT_STAGES = {
    "qat_fq_w4a4": {"mode": "fq", "key_bits": (4, 4)},
    "qat_resq": {"mode": "resq"},
    "qat_dynamic": {"mode": "dynamic"},
}


def stage_config(base, stage: str, init_from: str = "", num_steps: int | None = None, **quant):
  config = base.copy_and_resolve_references()
  config.unlock()
  config.stage = stage
  config.init_from = init_from
  for key, value in quant.items():
    config.quant[key] = value
  if num_steps is not None:
    config.train.num_steps = num_steps
  config.lock()
  return config


def run_demo(base, workdir: str, *, qat_steps: int = 60, qat_lr: float = 2e-4,
             allow_config_change: bool = False) -> list[dict]:
  """Run the whole demo under ``workdir``; returns the evaluation rows.

  ``allow_config_change`` lets resumed stages adopt a changed config (see
  ``train_lib.check_resume_config``). Exceptions of a stage (e.g. ``errors.PreemptedError``)
  propagate: the demo stops there.
  """
  workdir = pathlib.Path(workdir)
  start = time.perf_counter()
  fp_dir = str(workdir / "fp")
  print("== FP training", flush=True)
  train_lib.train_and_evaluate(stage_config(base, "fp", mode="float"), fp_dir,
                               allow_config_change=allow_config_change)
  qat_dirs = []
  for name, quant in QAT_STAGES.items():
    print(f"== QAT {name}", flush=True)
    config = stage_config(base, "qat", fp_dir, qat_steps, **quant)
    config.unlock()
    config.optim.lr = qat_lr
    config.lock()
    qat_dirs.append(str(workdir / name))
    train_lib.train_and_evaluate(config, qat_dirs[-1], allow_config_change=allow_config_change)
  print("== evaluation sweep", flush=True)
  eval_config = stage_config(base, "fp", fp_dir)
  eval_config.unlock()
  eval_config.eval.qat_runs = ",".join(qat_dirs)
  eval_config.lock()
  rows = eval_lib.evaluate_sweep(eval_config, str(workdir))
  minutes = (time.perf_counter() - start) / 60
  print(f"demo finished in {minutes:.1f} min; report: {workdir / 'report' / 'results.md'}")
  return rows
