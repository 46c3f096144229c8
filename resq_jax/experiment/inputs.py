"""Input data of an experiment: build SynthRes (or find a built real dataset), verify its
splits, and batch it.

Takes the typed :class:`resq_jax.experiment.spec.DataSpec` (plus the few numbers a caller needs:
batch size, seed, how many batches). Batches are the loader's NumPy dicts; a task's
``prepare`` turns them into model inputs and targets (``resq_jax.tasks``). Building the data
is an explicit step (:func:`ensure_data`), never a side effect of opening a loader.

Real datasets (``data.dataset``: ``cityscapes_video``, ``jhmdb``) are never built here: they
are built once, from their manual download, by ``python -m resq_jax.data.build`` at
``data.height`` x ``data.width`` with ``data.num_frames``-frame clips; :func:`ensure_data`
raises ``DataError`` with that command when the build is missing. Their records are read
through the same grain source as SynthRes and mapped onto the task's keys
(``resq_jax.data.loader.task_view``): Cityscapes labels only the last frame of a clip, so the
other frames get 255 (ignored by the loss and mIoU); JHMDB already has the pose task's
``joints``, ``joint_visible`` and ``bbox``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
from collections.abc import Iterable, Iterator

import grain
import jax

from resq_jax import errors
from resq_jax.data import build_synthres, make_loader
from resq_jax.data import builder as data_builder
from resq_jax.data import loader as data_loader
from resq_jax.data.loader import SynthResDataError, SynthResSource
from resq_jax.experiment import log
from resq_jax.experiment.spec import DataSpec


def real_config_name(data: DataSpec) -> str:
  """The config name a real dataset's build has for ``data`` (``resq_jax.data.build``)."""
  return data_loader.real_config_name(data.dataset, data.height, data.width, data.num_frames)


def build_command(data: DataSpec) -> str:
  """The ``python -m resq_jax.data.build ...`` command that builds ``data``'s real dataset."""
  return data_loader.build_command(
    data.dataset, data.data_dir, data.height, data.width, data.num_frames
  )


def _check_real(data: DataSpec) -> None:
  """DataError with the build command unless ``data``'s real dataset is built."""
  name = real_config_name(data)
  built = data_loader.built_configs(data.data_dir, data.dataset)
  if name not in built:
    raise errors.DataError(
      f"{data.dataset} config {name!r} ({data.height}x{data.width}, {data.num_frames}-frame "
      f"clips) is not built in {data.data_dir} (built there: {built or 'none'}); build it "
      f"from the downloaded dataset with: {build_command(data)}"
    )


def ensure_data(data: DataSpec) -> None:
  """Build SynthRes for ``data`` (a no-op when already built); for a real dataset, only check
  that it is built (``DataError`` naming the build command otherwise).

  Unless logging is verbose (``log.setup(verbose=True)``), TFDS's own output of the offline
  build (its progress bars, the ``Downloading and preparing dataset`` / ``Dataset ...
  downloaded and prepared`` lines it prints on stdout and its absl warnings) is dropped, with
  or without ``log.setup``; the builder's lines about generating and the build time are logged
  (printed by the entry points).

  Raises ``InvalidConfigError`` when ``data.data_dir`` cannot be created or written (no
  permission, a file in the way, a read-only file system) and ``DataError`` when the build
  fails otherwise.
  """
  if data.is_real:
    _check_real(data)
    return
  try:
    with log.quiet_libraries():
      _build_synthres(data)
  except OSError as e:  # a one-line error naming the key instead of TFDS's traceback
    if e.errno in _NOT_WRITABLE:
      raise errors.InvalidConfigError(
        f"data.data_dir: cannot build SynthRes in {data.data_dir!r} ({type(e).__name__}: "
        f"{e.strerror or e}) (allowed: a directory this process can create and write, or one "
        "holding the built dataset)"
      ) from e
    raise errors.DataError(f"building SynthRes in {data.data_dir!r} failed: {e}") from e


# A data_dir the user must change (a file in the way, no permission, read-only file system),
# as opposed to a failure while writing (ENOSPC, EIO: DataError).
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST)


def _build_synthres(data: DataSpec) -> None:
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


@log.quiet_libraries()  # TFDS's 'Load dataset info' INFO lines
def verify_splits(data: DataSpec) -> None:
  """Open every built split (train, validation, test), which checks that each record file
  exists and holds the promised number of records, so that a damaged split fails before
  training instead of at the evaluation afterwards. A real dataset's training split must
  also hold at least one batch. Raises ``DataError``."""
  if data.is_real:
    _check_real(data)
    info = data_loader.REAL_DATASETS[data.dataset]
    for split in info.splits:
      source = _open(data, split)
      if split == "train" and len(source) < data.batch_size:
        raise errors.DataError(
          f"{data.dataset} train split holds {len(source)} clips, fewer than one batch of "
          f"data.batch_size={data.batch_size}"
        )
    return
  cfg = data_builder.make_config(**data.dataset_kwargs())
  for split in cfg.split_sizes():  # splits built with at least one clip
    try:
      SynthResSource(data.data_dir, cfg.name, split)
    except (SynthResDataError, FileNotFoundError, ValueError) as e:
      raise errors.DataError(f"{split} split: {e}") from e


def _open(data: DataSpec, split: str) -> SynthResSource:
  """The grain source over a split of ``data``'s real dataset (``DataError`` if unreadable)."""
  try:
    return SynthResSource(data.data_dir, real_config_name(data), split, dataset=data.dataset)
  except (SynthResDataError, FileNotFoundError, ValueError) as e:
    raise errors.DataError(f"{data.dataset} {split} split: {e}") from e


@log.quiet_libraries()  # TFDS's 'Load dataset info' INFO lines
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
  if data.is_real:
    return data_loader.loader_over(
      _open(data, split),
      batch_size=batch_size,
      seed=seed,
      shuffle=shuffle,
      num_epochs=num_epochs,
      worker_count=data.worker_count,
      shard_options=shard,
      operations=data_loader.task_view(data.dataset),
    )
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
