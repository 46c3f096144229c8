"""The end-to-end demo: FP training -> QAT stages -> evaluation sweep.

Every stage is an ordinary ``train_lib`` / ``eval_lib`` run in its own sub-directory of the demo
workdir, so an interrupted demo resumes where it stopped when rerun: finished stages are not
trained or evaluated again (``train_and_evaluate`` returns their saved result), and a stage
that stops (``PreemptedError`` after SIGTERM, or any other failure) stops the demo, so no
later stage ever starts from a half-trained run.

This module works at the level of the entry points: it derives one ConfigDict per stage from
the base config (so that each run saves the config it was trained with) and parses each with
``parse.parse``; what the stages are (``QAT_STAGES``, ``QAT_LR``) is data of
``configs/demo.py``.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Mapping

import ml_collections

from resq_jax.experiment import evaluate, parse, train
from resq_jax.experiment.log import get_logger

log = get_logger(__name__)


def stage_config(
  base: ml_collections.ConfigDict,
  stage: str,
  init_from: str = "",
  *,
  num_steps: int | None = None,
  lr: float | None = None,
  qat_runs: str | None = None,
  **quant,
) -> ml_collections.ConfigDict:
  """A copy of ``base`` for one stage: ``stage``, ``init_from``, overrides of the ``quant``
  section, and optionally ``train.num_steps``, ``optim.lr`` and ``eval.qat_runs``."""
  config = base.copy_and_resolve_references()
  config.unlock()
  config.stage = stage
  config.init_from = init_from
  for key, value in quant.items():
    config.quant[key] = value
  if num_steps is not None:
    config.train.num_steps = num_steps
  if lr is not None:
    config.optim.lr = lr
  if qat_runs is not None:
    config.eval.qat_runs = qat_runs
  config.lock()
  return config


def _stage_lr(qat_lr, quant: Mapping) -> float:
  """One learning rate for every QAT stage, or one per family (keyed by ``quant['mode']``)."""
  if isinstance(qat_lr, Mapping):
    return float(qat_lr[quant.get("mode", "resq")])
  return float(qat_lr)


def run_demo(
  base: ml_collections.ConfigDict,
  workdir: str,
  *,
  qat_stages: Mapping[str, Mapping],
  qat_lr: float | Mapping[str, float],
  qat_steps: int = 60,
  allow_config_change: bool = False,
) -> list[evaluate.EvalResult]:
  """Run the whole demo under ``workdir``; returns the sweep's results.

  ``qat_stages``: workdir name -> overrides of the ``quant`` section, one QAT run each, at
  learning rate ``qat_lr`` (one value, or one per family: ``{mode: lr}``) for ``qat_steps``
  steps. Every stage's config is validated before
  the first one starts. ``allow_config_change`` lets resumed stages adopt a changed config
  (see ``train.check_resume_config``). Exceptions of a stage (e.g.
  ``errors.PreemptedError``) propagate: the demo stops there.
  """
  workdir = pathlib.Path(workdir)
  start = time.perf_counter()
  fp_dir = str(workdir / "fp")
  qat_dirs = [str(workdir / name) for name in qat_stages]
  fp = parse.parse(stage_config(base, "fp", mode="float"))
  qat = [
    parse.parse(
      stage_config(base, "qat", fp_dir, num_steps=qat_steps, lr=_stage_lr(qat_lr, quant), **quant)
    )
    for quant in qat_stages.values()
  ]
  sweep = parse.parse(
    stage_config(base, "fp", fp_dir, mode="float", qat_runs=",".join(qat_dirs)),
    needs_init_from=True,
  )
  log.info("== FP training")
  train.train_and_evaluate(fp, fp_dir, allow_config_change=allow_config_change)
  for name, experiment, qat_dir in zip(qat_stages, qat, qat_dirs):
    log.info(f"== QAT {name}")
    train.train_and_evaluate(experiment, qat_dir, allow_config_change=allow_config_change)
  log.info("== evaluation sweep")
  results = evaluate.evaluate_sweep(sweep, str(workdir))
  minutes = (time.perf_counter() - start) / 60
  log.info(f"demo finished in {minutes:.1f} min; report: {workdir / 'report' / 'results.md'}")
  return results
