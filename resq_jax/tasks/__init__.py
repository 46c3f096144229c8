"""Perception tasks: what the model predicts, how it is trained and scored.

Each task is a module holding a frozen dataclass that implements
:class:`resq_jax.tasks.base.Task` and an instance of it named ``TASK``. ``TASKS`` maps every
name of ``TASK_NAMES`` (the values of the config key ``task``) to that instance;
:func:`get_task` looks one up. The train and evaluation loops only talk to this interface.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from resq_jax.tasks.base import NORMALISE, Accumulator, Task, normalise_frames
from resq_jax.tasks.segmentation import SegmentationTask

TASK_NAMES: tuple[str, ...] = ("segmentation", "pose")


def get_task(name: str) -> Task:
  """The task called ``name`` (one of ``TASK_NAMES``); ValueError for another name."""
  if name not in TASK_NAMES:
    raise ValueError(f"unknown task {name!r} (allowed: {' | '.join(TASK_NAMES)})")
  return importlib.import_module(f"resq_jax.tasks.{name}").TASK


class _Registry(Mapping):
  """``TASKS[name]`` imports the task's module on first use, so that importing
  ``resq_jax.tasks`` does not import every task's metrics."""

  def __getitem__(self, name: str) -> Task:
    if name not in TASK_NAMES:
      raise KeyError(name)
    return get_task(name)

  def __iter__(self):
    return iter(TASK_NAMES)

  def __len__(self) -> int:
    return len(TASK_NAMES)


TASKS: Mapping[str, Task] = _Registry()

__all__ = [
  "NORMALISE",
  "TASKS",
  "TASK_NAMES",
  "Accumulator",
  "SegmentationTask",
  "Task",
  "get_task",
  "normalise_frames",
]
