"""Runs on disk: a run's saved ``config.json`` and restoring its trained variables.

A run is a workdir written by ``train_lib`` (checkpoints, ``config.json``, metrics). This
module reads them back: the float model of an FP run (``load_fp``, what PTQ / QAT and the
evaluation sweep start from), any run's variables for a given recipe (``load_run``), and the
check that ``init_from`` is a run of the same model (``check_init_from``).
"""

from __future__ import annotations

import json
import pathlib

import jax

from resq_jax import errors
from resq_jax.experiment import log
from resq_jax.experiment.models import abstract_variables, make_model
from resq_jax.experiment.spec import Experiment
from resq_jax.nn.models import SegNet
from resq_jax.quant.recipe import LayerRecipe, float_recipe
from resq_jax.training import restore_fields_from


def make_workdir(workdir: str | pathlib.Path, flag: str = "--workdir") -> pathlib.Path:
  """``workdir`` created (with its parents) if missing; ``InvalidConfigError`` naming ``flag``
  when it cannot be (no permission, a file in the way, a read-only file system)."""
  path = pathlib.Path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise errors.InvalidConfigError(
      f"{flag}: cannot create {str(workdir)!r} ({type(e).__name__}: {e.strerror or e}) "
      "(allowed: a directory this process can create and write)"
    ) from e
  return path


def read_run_config(run_dir: str) -> dict | None:
  """The ``config.json`` of a run, given its workdir, checkpoint directory or one step
  directory; None if there is none."""
  path = pathlib.Path(run_dir).resolve()
  for candidate in (path, path.parent, path.parent.parent):
    if (candidate / "config.json").is_file():
      return json.loads((candidate / "config.json").read_text())
  return None


def check_init_from(experiment: Experiment, run_dir: str) -> None:
  """Raise ``ConfigMismatchError`` naming the difference if ``run_dir`` is a run of another
  model or task than ``experiment``'s (they decide the parameter shapes), or
  ``CheckpointError`` if it does not exist."""
  if not pathlib.Path(run_dir).exists():
    raise errors.CheckpointError(
      f"init_from {run_dir!r} does not exist (the workdir of an FP run is expected)"
    )
  saved = read_run_config(run_dir)
  if saved is None:
    return  # an older run without config.json: the restore itself reports a mismatch
  ours = {f"model.{k}": v for k, v in vars(experiment.model).items()}
  ours["task"] = experiment.task.name
  theirs = {f"model.{k}": v for k, v in saved.get("model", {}).items()}
  theirs["task"] = saved.get("task", "segmentation")  # runs older than the task key
  diffs = [
    f"{k}: {theirs.get(k)!r} in init_from run {run_dir}, {ours[k]!r} in this config"
    for k in sorted(ours)
    if theirs.get(k) != ours[k]
  ]
  if diffs:
    raise errors.ConfigMismatchError("init_from is a run of another model: " + "; ".join(diffs))


def _restore(run_dir: str, variables: dict) -> dict:
  with log.quiet_libraries():  # Orbax's INFO lines about the restore (unless verbose)
    restored = restore_fields_from(
      run_dir, params=variables["params"], model_state=variables.get("batch_stats", {})
    )
  return {"params": restored["params"], "batch_stats": restored["model_state"]}


def load_run(experiment: Experiment, run_dir: str, recipe: LayerRecipe) -> tuple[SegNet, dict]:
  """The model of ``recipe`` and the newest checkpoint's variables of the run ``run_dir``.

  The restore target is abstract (``model_factory.abstract_variables`` on this process's
  default device, where ``model.init`` would have put its arrays): no Flax init runs."""
  model = make_model(experiment.model, experiment.task, recipe)
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  template = abstract_variables(model, experiment.data.frame_shape, sharding)
  return model, _restore(run_dir, template)


def load_fp(experiment: Experiment, run_dir: str) -> tuple[SegNet, dict]:
  """The float model and its trained variables from an FP run's workdir."""
  return load_run(experiment, run_dir, float_recipe())
