"""Model-agnostic training system: data-parallel step, checkpoints, metrics, progress.

Nothing here knows about models or quantization: `train_lib` plugs in a loss function.
"""

from resq_jax.errors import CheckpointError
from resq_jax.training.checkpoint import Checkpointer
from resq_jax.training.checkpoint_files import checkpoint_dir, damage_of
from resq_jax.training.checkpoint_reader import restore_fields_from, restore_params_from
from resq_jax.training.metrics import (
  JsonlWriter,
  MetricWriter,
  MultiWriter,
  TensorBoardWriter,
  create_default_writer,
)
from resq_jax.training.parallel import (
  DATA_AXIS,
  TrainState,
  make_data_mesh,
  make_train_step,
  maybe_initialize_distributed,
  replicate,
  shard_batch,
)
from resq_jax.training.progress import ProgressBar

__all__ = [
  "CheckpointError",
  "Checkpointer",
  "checkpoint_dir",
  "damage_of",
  "restore_fields_from",
  "restore_params_from",
  "JsonlWriter",
  "MetricWriter",
  "MultiWriter",
  "TensorBoardWriter",
  "create_default_writer",
  "DATA_AXIS",
  "TrainState",
  "make_data_mesh",
  "make_train_step",
  "maybe_initialize_distributed",
  "replicate",
  "shard_batch",
  "ProgressBar",
]
