"""Input data of an experiment: build SynthRes, verify its splits, and batch it.

Takes the typed :class:`resq_jax.experiment.DataSpec` (plus the few numbers a caller needs:
batch size, seed, how many batches). Batches are the loader's NumPy dicts; a task's
``prepare`` turns them into model inputs and targets (``resq_jax.tasks``). Building the data
is an explicit step (:func:`ensure_data`), never a side effect of opening a loader.
"""

from __future__ import annotations

import contextlib
import io
import itertools
from collections.abc import Iterable, Iterator

import grain
import jax

from resq_jax import errors, log
from resq_jax.data import build_synthres, make_loader
from resq_jax.data import builder as data_builder
from resq_jax.data.loader import SynthResDataError, SynthResSource
from resq_jax.experiment import DataSpec


def ensure_data(data: DataSpec) -> None:
  """Build SynthRes for ``data`` (a no-op when already built).

  Unless logging is verbose (``log.setup(verbose=True)``), TFDS's own output of the offline
  build (its progress bars and the ``Downloading and preparing dataset`` / ``Dataset ...
  downloaded and prepared`` lines it prints on stdout) is dropped; the builder's lines about
  generating and the build time are logged.
  """
  if log.is_verbose():
    build_synthres(data.data_dir, verbose=True, **data.dataset_kwargs())
    return
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  captured = io.StringIO()
  tfds.display_progress_bar(False)  # a global switch of TFDS (its tqdm bars on stderr)
  try:
    with contextlib.redirect_stdout(captured):
      build_synthres(data.data_dir, verbose=True, **data.dataset_kwargs())
  finally:
    tfds.display_progress_bar(True)
  for line in captured.getvalue().splitlines():
    if line.startswith("SynthRes ") and "already built" not in line:
      log.get_logger(__name__).info(line)


def verify_splits(data: DataSpec) -> None:
  """Open every built split (train, validation, test), which checks that each record file
  exists and holds the promised number of records, so that a damaged split fails before
  training instead of at the evaluation afterwards. Raises ``DataError``."""
  cfg = data_builder.make_config(**data.dataset_kwargs())
  for split in cfg.split_sizes():  # splits built with at least one clip
    try:
      SynthResSource(data.data_dir, cfg.name, split)
    except (SynthResDataError, FileNotFoundError, ValueError) as e:
      raise errors.DataError(f"{split} split: {e}") from e


def loader(
  data: DataSpec,
  split: str,
  *,
  batch_size: int,
  seed: int,
  shuffle: bool,
  num_epochs: int | None = None,
  per_process: bool = False,
):
  """A grain DataLoader over a built split (``ensure_data`` first).

  ``per_process``: each of ``jax.process_count()`` processes reads its own shard of the split
  and ``batch_size / process_count`` clips per batch (``batch_size`` stays the global batch).
  Otherwise every process reads the same batches (calibration and evaluation, whose results must
  be equal on every process)."""
  shard = grain.sharding.NoSharding()
  if per_process:
    shard = grain.sharding.ShardByJaxProcess(drop_remainder=True)
    batch_size //= jax.process_count()
  return make_loader(
    data.data_dir,
    split,
    batch_size=batch_size,
    seed=seed,
    shuffle=shuffle,
    num_epochs=num_epochs,
    worker_count=data.worker_count,
    shard_options=shard,
    **data.dataset_kwargs(),
  )


def train_batches(data: DataSpec, seed: int) -> Iterator[dict]:
  """Shuffled training batches (``data.batch_size`` clips over all processes), repeated forever
  (a checkpointable grain iterator)."""
  return iter(
    loader(data, "train", batch_size=data.batch_size, seed=seed, shuffle=True, per_process=True)
  )


def calibration_batches(data: DataSpec, seed: int, num_batches: int) -> list[dict]:
  """``num_batches`` shuffled training batches, seeded apart from training (``seed + 1``); the
  same on every process, so that every process sets the same quantizer ranges."""
  batches = loader(
    data, "train", batch_size=data.batch_size, seed=seed + 1, shuffle=True, num_epochs=1
  )
  return list(itertools.islice(iter(batches), num_batches))


def eval_batches(
  data: DataSpec, *, batch_size: int, num_batches: int = 0, split: str = "validation"
) -> Iterable[dict]:
  """A split (validation or test) in order, one pass (its first ``num_batches`` batches if
  > 0); every process evaluates the whole split (metrics need no cross-process reduction)."""
  batches = iter(loader(data, split, batch_size=batch_size, seed=0, shuffle=False, num_epochs=1))
  return itertools.islice(batches, num_batches) if num_batches else batches
