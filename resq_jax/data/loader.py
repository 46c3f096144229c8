"""grain input pipeline over a built SynthRes split: shuffled, sharded, checkpointable batches.

`make_loader` returns a plain `grain.DataLoader`; `iter(loader)` is a `grain.DataLoaderIterator`
whose `get_state()` / `set_state()` resume at exactly the next batch. That iterator is the
object to checkpoint, e.g. with Orbax:
`ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator))` on save and
`grain.checkpoint.CheckpointRestore(iterator)` on restore (grain's `CheckpointHandler`).

Reads go through `tfds.data_source` (no TensorFlow). `SynthResSource` wraps it to verify, when
opened, that every shard file holds exactly the number of records the dataset info promises,
and to name the file in any read error, so a truncated or corrupted file fails loudly instead
of producing a short or garbled epoch.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from resq_jax.data import builder as builder_lib
from resq_jax.data import spec


class SynthResDataError(RuntimeError):
  """A SynthRes record file is missing, truncated or corrupted (the message names it)."""


def _dataset_dirs(data_dir: epath.Path) -> list[str]:
  root = data_dir / "synth_res"
  return sorted(p.name for p in root.iterdir()) if root.exists() else []


class SynthResSource:
  """grain random-access source over one split of a built SynthRes config.

  Items are dicts of NumPy arrays as produced by `generate_clip` (frames [T, H, W, 3] ...).
  Its repr names the config and split but not the directory, so a grain checkpoint taken on
  one machine restores on another where the data lives elsewhere.
  """

  def __init__(self, data_dir: str | os.PathLike, config_name: str, split: str):
    spec.validate_split(split)
    self._args = (os.fspath(data_dir), config_name, split)
    data_dir = epath.Path(data_dir)
    if not list((data_dir / "synth_res" / config_name).glob("*/dataset_info.json")):
      raise FileNotFoundError(
        f"SynthRes config {config_name!r} is not built in {data_dir}; run "
        f"build_synthres({os.fspath(data_dir)!r}, ...) first. Built configs there: "
        f"{_dataset_dirs(data_dir)}"
      )
    splits = tfds.data_source(
      f"synth_res/{config_name}", data_dir=os.fspath(data_dir), download=False
    )
    if split not in splits:
      raise ValueError(
        f"SynthRes config {config_name!r} has no {split!r} split "
        f"(it was built with 0 clips); built splits: {sorted(splits)}"
      )
    self._source = splits[split]
    info = self._source.dataset_info.splits[split]
    self._files = [os.fspath(p) for p in info.filepaths]
    self._ends = np.cumsum(info.shard_lengths).tolist()
    self._verify(info.shard_lengths)

  def _verify(self, expected: Sequence[int]) -> None:
    from array_record.python import array_record_module

    for path, n in zip(self._files, expected):
      if not os.path.exists(path):
        raise SynthResDataError(f"SynthRes record file {path} is missing")
      try:
        reader = array_record_module.ArrayRecordReader(path)
        found = reader.num_records()
        reader.close()
      except Exception as e:  # array_record raises RuntimeError/ValueError variants
        raise SynthResDataError(
          f"SynthRes record file {path} is truncated or corrupted: {e}"
        ) from e
      if found != n:
        raise SynthResDataError(
          f"SynthRes record file {path} holds {found} records, dataset_info.json "
          f"expects {n}: the file is truncated or from another build"
        )

  def _file_of(self, index: int) -> str:
    return self._files[min(bisect.bisect_right(self._ends, index), len(self._files) - 1)]

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    try:
      return self._source[index]
    except Exception as e:
      raise SynthResDataError(
        f"cannot read SynthRes record {index} of split {self._args[2]!r} from "
        f"{self._file_of(int(index))}: {type(e).__name__}: {e}"
      ) from e

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    return [self[i] for i in indices]

  def __repr__(self) -> str:
    return f"SynthResSource(config={self._args[1]!r}, split={self._args[2]!r})"

  def __getstate__(self):  # grain worker processes receive the source by pickling
    return self._args

  def __setstate__(self, args):
    self.__init__(*args)


def make_loader(
  data_dir: str | os.PathLike,
  split: str,
  *,
  batch_size: int,
  regime: str = "slow_pan",
  height: int = spec.DEFAULT_HEIGHT,
  width: int = spec.DEFAULT_WIDTH,
  num_frames: int = spec.DEFAULT_NUM_FRAMES,
  num_train: int = builder_lib.DEFAULT_NUM_TRAIN,
  num_validation: int = builder_lib.DEFAULT_NUM_VALIDATION,
  num_test: int = builder_lib.DEFAULT_NUM_TEST,
  seed: int = 0,
  shuffle: bool = True,
  num_epochs: int | None = None,
  drop_remainder: bool = True,
  worker_count: int = 0,
  worker_buffer_size: int = 1,
  shard_options: grain.sharding.ShardOptions | None = None,
  operations: Sequence[grain.transforms.Transformation] = (),
  read_options: grain.ReadOptions | None = None,
) -> grain.DataLoader:
  """A grain DataLoader over a split built by `build_synthres` with the same settings.

  Each element of `iter(loader)` is a dict of stacked NumPy batches: frames uint8
  [B, T, H, W, 3], semantic / instance uint8 [B, T, H, W], joints float32 [B, T, J, 2],
  joint_visible bool [B, T, J], bbox float32 [B, T, 4].

  seed: shuffling seed (a new permutation every epoch); num_epochs=None repeats forever.
  shard_options: defaults to sharding by `jax.process_index()` / `jax.process_count()` with
  equal shard sizes (every host sees the same number of batches). `operations` run per clip
  before batching (e.g. augmentations). worker_count > 0 uses grain worker processes, which
  need the calling script to have a `__main__` guard (and parsed absl flags).
  Raises FileNotFoundError if the config is not built, ValueError for bad arguments and
  SynthResDataError for missing, truncated or corrupted record files.
  """
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
  cfg = builder_lib.make_config(
    regime,
    height=height,
    width=width,
    num_frames=num_frames,
    num_train=num_train,
    num_validation=num_validation,
    num_test=num_test,
  )
  source = SynthResSource(data_dir, cfg.name, split)
  if shard_options is None:
    shard_options = grain.sharding.ShardByJaxProcess(drop_remainder=True)
  sampler = grain.samplers.IndexSampler(
    num_records=len(source),
    shuffle=shuffle,
    seed=seed if shuffle else None,
    num_epochs=num_epochs,
    shard_options=grain.sharding.NoSharding(),
  )
  if read_options is None:
    # grain's default (16 threads, 500 prefetched records) holds ~150 MB of clips; a
    # couple of batches ahead is plenty for records that decode in microseconds.
    read_options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=2 * batch_size)
  return grain.DataLoader(
    data_source=source,
    sampler=sampler,
    operations=[*operations, grain.transforms.Batch(batch_size, drop_remainder)],
    worker_count=worker_count,
    worker_buffer_size=worker_buffer_size,
    shard_options=shard_options,
    read_options=read_options,
  )
