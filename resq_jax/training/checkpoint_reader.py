"""Reading another run's checkpoint, read-only: `restore_params_from` and
`restore_fields_from` (e.g. the weights of the FP run that a PTQ or QAT run starts from).

No Orbax `CheckpointManager` (which may create directories, delete old steps or clean temp
dirs) is opened on the other run's directory, just a pytree reader on `<step>/state`. A
workdir or a checkpoint directory gives its newest intact step: damaged newer steps
(`checkpoint_files.damage_of`) are skipped with a warning, never moved. `_abstract` (the
restore target of a template pytree: shapes, dtypes and shardings, no data) is shared with
`Checkpointer`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from resq_jax.errors import CheckpointError, MissingCheckpointError
from resq_jax.training.checkpoint_files import STATE_ITEM, damage_of

log = logging.getLogger(__name__)  # a child of the project's logger: printed in quiet mode

PyTree = Any


def _abstract(template: PyTree) -> PyTree:
  """jax.Array leaves -> ShapeDtypeStruct with the same sharding (restore target, no data);
  other leaves (ShapeDtypeStruct, numpy) are kept as given."""

  def leaf(x: Any) -> Any:
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x

  return jax.tree.map(leaf, template)


def _resolve_step_dir(path: epath.Path) -> epath.Path:
  """A workdir, a checkpoint directory or one step directory -> the step directory to read:
  the newest intact step (damaged newer ones are skipped with a warning; this reader never
  moves them), or the given step directory if intact.

  Raises:
    MissingCheckpointError: no complete checkpoint there (a ``CheckpointError`` and a
      ``FileNotFoundError``).
    CheckpointError: the given step directory, or every step, is damaged.
  """
  if (path / "checkpoints").is_dir():
    path = path / "checkpoints"
  if path.is_dir():
    step_paths = ocp.utils.checkpoint_steps_paths(path)  # finalised steps only
    damaged = {}
    for step_path in sorted(
      step_paths, key=lambda p: ocp.utils.step_from_checkpoint_name(p.name), reverse=True
    ):
      damage = damage_of(step_path)
      if damage is None:
        for bad, what in damaged.items():
          log.warning("checkpoint %s is damaged (%s): reading %s instead", bad, what, step_path)
        return step_path
      damaged[step_path] = damage
    if damaged:
      raise CheckpointError(
        f"no intact checkpoint in {path}: "
        + "; ".join(f"{p.name}: {what}" for p, what in damaged.items())
      )
  if (path / STATE_ITEM).is_dir():
    damage = damage_of(path)
    if damage is not None:
      raise CheckpointError(f"checkpoint {path} is damaged: {damage}")
    return path
  raise MissingCheckpointError(
    f"no complete checkpoint found in {path} (expected: a run's workdir, its checkpoints "
    "directory or one step directory)"
  )


def restore_params_from(path: str | os.PathLike, params_template: PyTree) -> PyTree:
  """Reads only the params of another run's checkpoint, e.g. to initialise fine-tuning.

  Args:
    path: that run's workdir, its checkpoint directory (newest step is used) or a step dir.
    params_template: pytree like the saved `state.params`; its leaves' shapes, dtypes and
      shardings (jax.Array or ShapeDtypeStruct) decide how the arrays are restored.
  Returns:
    The saved params, in the structure of `params_template`.
  """
  return restore_fields_from(path, params=params_template)["params"]


def restore_fields_from(path: str | os.PathLike, **templates: PyTree) -> dict[str, PyTree]:
  """Reads some fields of another run's saved `TrainState` (e.g. `params=..., model_state=...`).

  The other run's directory is only read: no `CheckpointManager` (which may create
  directories, delete old steps or clean temp dirs) is opened on it, just a pytree reader on
  `<step>/state`, restoring the named subtrees (partial restore; e.g. the optimizer state is
  not read). `path`: a workdir, a checkpoint directory (newest step) or a step directory.
  """
  step_dir = _resolve_step_dir(epath.Path(os.path.abspath(path)))
  target = {name: _abstract(t) for name, t in templates.items()}
  args = ocp.args.PyTreeRestore(
    item=target,
    restore_args=ocp.checkpoint_utils.construct_restore_args(target),
    partial_restore=True,
  )
  with ocp.PyTreeCheckpointer() as reader:
    try:
      return reader.restore(step_dir / STATE_ITEM, args=args)
    except Exception as e:  # one line naming the checkpoint; the cause stays chained
      first_line = (str(e).strip().splitlines() or [""])[0][:300]
      raise CheckpointError(
        f"checkpoint {step_dir} cannot be read into this model's "
        f"{'/'.join(templates)} ({type(e).__name__}: {first_line})"
      ) from e
