"""grain input pipeline over a built SynthRes split: shuffled, sharded, checkpointable batches.

`make_loader` returns a plain `grain.DataLoader`; `iter(loader)` is a `grain.DataLoaderIterator`
whose `get_state()` / `set_state()` resume at exactly the next batch. That iterator is the
object to checkpoint, e.g. with Orbax:
`ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator))` on save and
`grain.checkpoint.CheckpointRestore(iterator)` on restore (grain's `CheckpointHandler`).

Reads go through `tfds.data_source` (no TensorFlow). `SynthResSource` wraps it to verify, when
opened, that every shard file holds exactly the number of records the dataset info promises,
and to name the file in any read error, so a truncated or corrupted file fails loudly instead
of producing a short or garbled epoch. The same source reads the real datasets built by
`python -m resq_jax.data.build` (its `dataset` argument: `cityscapes_video`, `jhmdb`, ...);
`REAL_DATASETS` says which task reads each one, and `task_view` maps a record's features onto
what that task's `prepare` reads (`loader_over`: a DataLoader over any source).
"""

from __future__ import annotations

import bisect
import dataclasses
import os
from collections.abc import Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from resq_jax import errors
from resq_jax.data import builder as builder_lib
from resq_jax.data import cityscapes_video, davis, jhmdb, spec

SYNTH_RES = "synth_res"


class SynthResDataError(errors.DataError):
  """A record file (of SynthRes or a real dataset) is missing, truncated or corrupted (the
  message names it)."""


# --- Real datasets ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RealDataset:
  """What the pipeline needs to know about a real dataset built by `resq_jax.data.build`.

  task: the task (`resq_jax.tasks`) that reads it; None where no task does yet (DAVIS needs a
  video object segmentation task scored by J&F). splits: the splits the builder writes.
  num_classes: the segmentation class count (None for other tasks). max_frames: the longest
  clip it builds (Cityscapes: 20 frames up to the annotated one).
  """

  name: str
  task: str | None
  splits: tuple[str, ...]
  num_classes: int | None = None
  max_frames: int | None = None


REAL_DATASETS: dict[str, RealDataset] = {
  "cityscapes_video": RealDataset(
    "cityscapes_video",
    "segmentation",
    ("train", "validation"),
    num_classes=cityscapes_video.NUM_CLASSES,
    max_frames=cityscapes_video.ANNOTATED_INDEX + 1,
  ),
  "jhmdb": RealDataset("jhmdb", "pose", ("train", "test")),
  "davis2017": RealDataset("davis2017", None, ("train", "validation")),
}
DATASETS: tuple[str, ...] = (SYNTH_RES, *REAL_DATASETS)


def real_config_name(dataset: str, height: int, width: int, num_frames: int) -> str:
  """The builder's config name of fixed-length clips (stride = num_frames; JHMDB split 1,
  DAVIS 480p), i.e. what `python -m resq_jax.data.build` writes for the same settings."""
  size = dict(height=height, width=width, num_frames=num_frames)
  make = {
    "cityscapes_video": cityscapes_video.make_config,
    "jhmdb": jhmdb.make_config,
    "davis2017": davis.make_config,
  }[dataset]
  return make(**size).name


def build_command(dataset: str, data_dir: str, height: int, width: int, num_frames: int) -> str:
  """The command that builds what `real_config_name` names (manual_dir: the download)."""
  return (
    f"python -m resq_jax.data.build --dataset {dataset} --manual_dir <the unpacked download> "
    f"--data_dir {data_dir} --height {height} --width {width} --num_frames {num_frames}"
  )


def built_configs(data_dir: str | os.PathLike, dataset: str) -> list[str]:
  """Names of the configs of `dataset` built (with a dataset_info.json) in `data_dir`."""
  root = epath.Path(data_dir) / dataset
  if not root.exists():
    return []
  return sorted(p.name for p in root.iterdir() if list(p.glob("*/dataset_info.json")))


class CityscapesLabels(grain.transforms.Map):
  """Cityscapes record -> the segmentation task's view: `frames` [T, H, W, 3] and `semantic`
  [T, H, W] holding the labels on the annotated frame (`annotated_index`, the last) and 255
  (ignore) on every other frame, so that the loss and mIoU count the annotated frame only."""

  def map(self, element: dict) -> dict:
    frames = element["frames"]
    semantic = np.full(frames.shape[:3], cityscapes_video.IGNORE_ID, np.uint8)
    semantic[int(element["annotated_index"])] = element["semantic"]
    return {"frames": frames, "semantic": semantic}


class SelectFeatures(grain.transforms.Map):
  """Keeps the named features (drops text ids, which do not batch into device arrays)."""

  def __init__(self, keys: Sequence[str]):
    self.keys = tuple(keys)

  def map(self, element: dict) -> dict:
    return {k: element[k] for k in self.keys}


def task_view(dataset: str) -> tuple[grain.transforms.Transformation, ...]:
  """Per-record operations mapping `dataset`'s features onto what its task reads."""
  if dataset == "cityscapes_video":
    return (CityscapesLabels(),)
  if dataset == "jhmdb":  # already the pose task's keys and layout
    return (SelectFeatures(("frames", "joints", "joint_visible", "bbox")),)
  return ()


def _dataset_dirs(data_dir: epath.Path, dataset: str = SYNTH_RES) -> list[str]:
  root = data_dir / dataset
  return sorted(p.name for p in root.iterdir()) if root.exists() else []


class SynthResSource:
  """grain random-access source over one split of a built SynthRes config, or of a real
  dataset's config (`dataset`: a TFDS builder name of `REAL_DATASETS`).

  Items are dicts of NumPy arrays as produced by `generate_clip` (frames [T, H, W, 3] ...) or
  by the real dataset's builder. Its repr names the config and split but not the directory, so
  a grain checkpoint taken on one machine restores on another where the data lives elsewhere.
  """

  def __init__(
    self, data_dir: str | os.PathLike, config_name: str, split: str, dataset: str = SYNTH_RES
  ):
    spec.validate_split(split)
    self._args = (os.fspath(data_dir), config_name, split, dataset)
    label = "SynthRes" if dataset == SYNTH_RES else dataset
    self._label = label
    data_dir = epath.Path(data_dir)
    if not list((data_dir / dataset / config_name).glob("*/dataset_info.json")):
      how = (
        f"build_synthres({os.fspath(data_dir)!r}, ...)"
        if dataset == SYNTH_RES
        else f"python -m resq_jax.data.build --dataset {dataset} ..."
      )
      raise FileNotFoundError(
        f"{label} config {config_name!r} is not built in {data_dir}; run {how} first. Built "
        f"configs there: {_dataset_dirs(data_dir, dataset)}"
      )
    splits = tfds.data_source(
      f"{dataset}/{config_name}", data_dir=os.fspath(data_dir), download=False
    )
    if split not in splits:
      raise ValueError(
        f"{label} config {config_name!r} has no {split!r} split "
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
        raise SynthResDataError(f"{self._label} record file {path} is missing")
      try:
        reader = array_record_module.ArrayRecordReader(path)
        found = reader.num_records()
        reader.close()
      except Exception as e:  # array_record raises RuntimeError/ValueError variants
        raise SynthResDataError(
          f"{self._label} record file {path} is truncated or corrupted: {e}"
        ) from e
      if found != n:
        raise SynthResDataError(
          f"{self._label} record file {path} holds {found} records, dataset_info.json "
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
        f"cannot read {self._label} record {index} of split {self._args[2]!r} from "
        f"{self._file_of(int(index))}: {type(e).__name__}: {e}"
      ) from e

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    return [self[i] for i in indices]

  def __repr__(self) -> str:
    dataset = "" if self._args[3] == SYNTH_RES else f", dataset={self._args[3]!r}"
    return f"SynthResSource(config={self._args[1]!r}, split={self._args[2]!r}{dataset})"

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
  return loader_over(
    source,
    batch_size=batch_size,
    seed=seed,
    shuffle=shuffle,
    num_epochs=num_epochs,
    drop_remainder=drop_remainder,
    worker_count=worker_count,
    worker_buffer_size=worker_buffer_size,
    shard_options=shard_options,
    operations=operations,
    read_options=read_options,
  )


def loader_over(
  source: SynthResSource,
  *,
  batch_size: int,
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
  """The DataLoader of `make_loader` over any opened source (e.g. a real dataset's split);
  same arguments."""
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
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
