"""What a task is: the contract between the train / eval loops and one perception task.

A task is one small module (``resq_jax/tasks/<name>.py``) that defines a frozen, hashable
dataclass implementing :class:`Task` and an instance of it named ``TASK``;
:data:`resq_jax.tasks.TASKS` maps each name to it. The loops (``train_lib``, ``eval_lib``)
only call the methods below, so a new task (e.g. video object segmentation with J&F) is a new
module and a name in ``resq_jax.tasks.TASK_NAMES``, without touching the loops.

Conventions shared by every task:

- The model is ``SegNet(num_classes=task.num_outputs())``: a dense per-pixel head at input
  resolution (class logits for segmentation, joint heatmaps for pose). Its output is
  ``[B, T, H, W, C]`` for clips (``run_clip``) or ``[N, H, W, C]`` for frames folded into the
  batch (float training).
- ``prepare`` turns one loader batch (a dict of NumPy arrays, see ``resq_jax.data.make_loader``)
  into ``(frames, targets)``: frames float32 ``[B, T, H, W, 3]`` normalised by
  :func:`normalise_frames` (the one input normalisation of the project: training, evaluation,
  calibration and streaming all use it), targets a pytree of jnp arrays whose leaves start with
  ``[B, T, ...]``. The loops may fold ``B`` and ``T`` of both into one axis.
- ``loss`` and ``predict`` are jit-safe pure functions of arrays; ``new_accumulator`` returns a
  host-side object that sums a metric over a split (``update(predictions, targets)``, then
  ``result()``: a dict holding ``metric_name`` (higher is better, the report's column), its 95%
  bootstrap interval over clips ``<metric_name>_ci`` (``[lo, hi]``) and any extra values,
  JSON-compatible). Axis 0 of every update is the clip axis.
- ``fidelity`` compares a setting's raw outputs with the float model's on the same clips
  (jit-safe, a few floats per clip): per-clip values ``{name: [B]}`` and per-frame values
  ``{name + '_by_t': [B, T]}``; ``fidelity_error_name`` names the per-clip value (lower is
  better) that the report compares at equal cost with frame quantization (err/FQ).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp

# frames / 255 -> (x - mean) / std: the input normalisation of every model of the project.
NORMALISE = (0.5, 0.25)


def normalise_frames(frames) -> jax.Array:
  """uint8 (or float in [0, 255]) frames ``[..., 3]`` -> float32 ``(x / 255 - 0.5) / 0.25``."""
  mean, std = NORMALISE
  return (jnp.asarray(frames, jnp.float32) / 255.0 - mean) / std


class Accumulator(Protocol):
  """Host-side sum of a task metric over a split."""

  def update(self, predictions: Any, targets: Any) -> None:
    """Adds one batch: ``task.predict(outputs)`` and the targets of ``task.prepare``."""

  def result(self) -> dict:
    """``{task.metric_name: float, ...extra JSON-compatible values}`` over everything added."""


class Task(Protocol):
  """One perception task (a frozen dataclass per task; hashable, so it may be a static
  argument of jitted functions)."""

  name: str  # e.g. 'segmentation' | 'pose'
  metric_name: str  # report column, higher is better: 'miou' | 'pck'
  fidelity_error_name: ClassVar[str]  # a key of fidelity(), lower is better: 'rel_l2' | 'kp_dist'

  def num_outputs(self) -> int:
    """Channels of the model output (classes, joints)."""

  def prepare(self, batch: dict) -> tuple[jax.Array, Any]:
    """A loader batch -> (frames float32 [B, T, H, W, 3] normalised, targets [B, T, ...])."""

  def loss(self, outputs: jax.Array, targets: Any) -> tuple[jax.Array, dict]:
    """(scalar loss, {name: scalar} extra training metrics); jit-safe. ``outputs``
    ``[B, T, H, W, C]`` or ``[N, H, W, C]`` with targets of the same leading axes."""

  def predict(self, outputs: jax.Array) -> Any:
    """What the accumulator scores (jit-safe): labels, joint coordinates, ..."""

  def new_accumulator(self) -> Accumulator:
    """A fresh host-side metric accumulator."""

  def distill_loss(self, outputs: jax.Array, teacher: jax.Array, temperature: float) -> jax.Array:
    """Scalar distillation loss of ``outputs`` towards the float ``teacher``'s (same shape; QAT
    with ``train.distill_weight > 0``; ``resq_jax.tasks.distill``). Optional: a task without
    it refuses distillation."""

  def fidelity(self, outputs: jax.Array, reference_outputs: jax.Array) -> dict[str, jax.Array]:
    """Fidelity of ``outputs`` to ``reference_outputs`` (the float model's), both raw model
    outputs ``[B, T, H, W, C]``: ``{name: [B]}`` per clip and ``{name + '_by_t': [B, T]}`` per
    frame (jit-safe). Holds ``rel_l2`` (``||y - y_fp||_2 / ||y_fp||_2`` over the clip) and
    ``fidelity_error_name``."""
