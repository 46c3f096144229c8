"""SynthRes as a tensorflow-datasets builder writing array_record, usable without TensorFlow.

Only plain `tfds.features.Tensor` features are used (Image/Video features import TensorFlow),
stored as raw bytes (array_record compresses every record with zstd), and examples are written
in index order (`disable_shuffling=True`), so record i of a split is exactly
`generate_clip(regime, split, i)`; the grain loader shuffles at read time.

The builder config name encodes every setting, e.g. `slow_pan_64x64x16_n2000-200-200`, so
builds with different sizes or counts live in different directories and never collide. A
built config can be read back by name with `tfds.data_source('synth_res/<name>', ...)`, even
for custom configs: TFDS then restores it from the files alone.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import time

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from resq_jax.data import render, spec

DEFAULT_NUM_TRAIN, DEFAULT_NUM_VALIDATION, DEFAULT_NUM_TEST = 2000, 200, 200


def config_name(
  regime: str,
  height: int,
  width: int,
  num_frames: int,
  num_train: int,
  num_validation: int,
  num_test: int,
) -> str:
  """Builder config name encoding all settings: `{regime}_{H}x{W}x{T}_n{tr}-{va}-{te}`."""
  return f"{regime}_{height}x{width}x{num_frames}_n{num_train}-{num_validation}-{num_test}"


@dataclasses.dataclass(eq=False)
class SynthResConfig(tfds.core.BuilderConfig):
  """Settings of one SynthRes build; use `make_config` (it validates and names it)."""

  regime: str = "slow_pan"
  height: int = spec.DEFAULT_HEIGHT
  width: int = spec.DEFAULT_WIDTH
  num_frames: int = spec.DEFAULT_NUM_FRAMES
  num_train: int = DEFAULT_NUM_TRAIN
  num_validation: int = DEFAULT_NUM_VALIDATION
  num_test: int = DEFAULT_NUM_TEST

  def split_sizes(self) -> dict[str, int]:
    sizes = dict(zip(spec.SPLITS, (self.num_train, self.num_validation, self.num_test)))
    return {k: v for k, v in sizes.items() if v > 0}

  def example_nbytes(self) -> int:
    """Uncompressed bytes of one clip's arrays (frames 3 + semantic 1 + instance 1 B/px)."""
    t, j = self.num_frames, spec.NUM_JOINTS
    return t * self.height * self.width * 5 + t * (j * 9 + 16)


def make_config(
  regime: str = "slow_pan",
  *,
  height: int = spec.DEFAULT_HEIGHT,
  width: int = spec.DEFAULT_WIDTH,
  num_frames: int = spec.DEFAULT_NUM_FRAMES,
  num_train: int = DEFAULT_NUM_TRAIN,
  num_validation: int = DEFAULT_NUM_VALIDATION,
  num_test: int = DEFAULT_NUM_TEST,
) -> SynthResConfig:
  """Validated config; ValueError (listing valid options) on bad regime, sizes or counts."""
  spec.validate_regime(regime)
  spec.validate_size(height, width, num_frames)
  counts = dict(num_train=num_train, num_validation=num_validation, num_test=num_test)
  for name, value in counts.items():
    if spec.as_int(value, name) < 0:
      raise ValueError(f"SynthRes {name} must be non-negative, got {value!r}")
  if not any(counts.values()):
    raise ValueError("SynthRes needs at least one non-empty split")
  height, width, num_frames = int(height), int(width), int(num_frames)
  num_train, num_validation, num_test = (int(v) for v in counts.values())
  name = config_name(regime, height, width, num_frames, num_train, num_validation, num_test)
  for registered in SynthRes.BUILDER_CONFIGS:
    if registered.name == name:  # TFDS refuses a new config object with a registered name
      return registered
  return _new_config(regime, height, width, num_frames, num_train, num_validation, num_test)


def _new_config(regime, height, width, num_frames, num_train, num_validation, num_test):
  name = config_name(regime, height, width, num_frames, num_train, num_validation, num_test)
  return SynthResConfig(
    name=name,
    description=f"SynthRes, regime {regime}",
    regime=regime,
    height=height,
    width=width,
    num_frames=num_frames,
    num_train=num_train,
    num_validation=num_validation,
    num_test=num_test,
  )


# Clips per worker task: amortises pickling and scheduling; small enough to keep order cheap.
_CHUNK = 8


def _generate_chunk(args: tuple[str, str, int, int, int, int, int]) -> list[dict]:
  regime, split, start, stop, height, width, num_frames = args
  return [
    render.generate_clip(regime, split, i, height=height, width=width, num_frames=num_frames)
    for i in range(start, stop)
  ]


class SynthRes(tfds.core.GeneratorBasedBuilder):
  """Procedural video clips with segmentation, instance and pose labels (see docs/design.md 5)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
    _new_config(
      r,
      spec.DEFAULT_HEIGHT,
      spec.DEFAULT_WIDTH,
      spec.DEFAULT_NUM_FRAMES,
      DEFAULT_NUM_TRAIN,
      DEFAULT_NUM_VALIDATION,
      DEFAULT_NUM_TEST,
    )
    for r in spec.REGIMES
  ]
  DEFAULT_CONFIG_NAME = config_name(
    "slow_pan",
    spec.DEFAULT_HEIGHT,
    spec.DEFAULT_WIDTH,
    spec.DEFAULT_NUM_FRAMES,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VALIDATION,
    DEFAULT_NUM_TEST,
  )

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.x resolves this through `importlib_resources`, a dependency it declares only
    # for Python < 3.9, and fails without it for builders defined inside a package.
    return epath.Path(__file__)

  def __init__(self, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)
    self._pool: concurrent.futures.Executor | None = None
    self._pool_size = 0

  @contextlib.contextmanager
  def generation_pool(self, num_workers: int):
    """Generates clips in `num_workers` processes inside this context (0: serially).

    One pool serves all splits, so the worker start-up (imports, texture bank: about a
    second each) is paid once. "spawn" rather than fork: forking a process that may
    already run JAX or TFDS threads can deadlock.
    """
    if num_workers <= 0:
      yield
      return
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=ctx) as pool:
      self._pool, self._pool_size = pool, num_workers
      try:
        yield
      finally:
        self._pool, self._pool_size = None, 0

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    t, h, w, j = cfg.num_frames, cfg.height, cfg.width, spec.NUM_JOINTS

    def tensor(shape, dtype, doc):
      # Raw bytes: the proto stores one blob instead of one varint per value (uint8
      # as int64_list is ~10x slower to write and read); array_record adds zstd.
      return tfds.features.Tensor(shape=shape, dtype=dtype, encoding="bytes", doc=doc)

    features = tfds.features.FeaturesDict(
      {
        "frames": tensor((t, h, w, 3), np.uint8, "RGB frames [T, H, W, 3]"),
        "semantic": tensor((t, h, w), np.uint8, f"class ids {spec.CLASS_NAMES}"),
        "instance": tensor((t, h, w), np.uint8, "0 background, 1 person, 2.. objects"),
        "joints": tensor((t, j, 2), np.float32, f"(x, y) pixels of {spec.JOINT_NAMES}"),
        "joint_visible": tensor((t, j), np.bool_, "joint in frame and not occluded"),
        "bbox": tensor((t, 4), np.float32, "person box (x0, y0, x1, y1), pixel edges"),
      }
    )
    return tfds.core.DatasetInfo(
      builder=self,
      features=features,
      disable_shuffling=True,
      description=(
        "SynthRes: procedural video clips (textured backgrounds, camera motion, "
        "moving objects, an articulated figure) with per-pixel semantic and instance "
        f"labels and 15 JHMDB joints. Regime {cfg.regime}, {t} frames of {h}x{w}."
      ),
      metadata=tfds.core.MetadataDict(
        regime=cfg.regime,
        class_names=spec.CLASS_NAMES,
        joint_names=spec.JOINT_NAMES,
        skeleton=spec.SKELETON,
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: everything is generated.
    return {
      split: self._generate_examples(split, n)
      for split, n in self.builder_config.split_sizes().items()
    }

  def _generate_examples(self, split: str, num_examples: int):
    cfg = self.builder_config
    tasks = [
      (
        cfg.regime,
        split,
        start,
        min(start + _CHUNK, num_examples),
        cfg.height,
        cfg.width,
        cfg.num_frames,
      )
      for start in range(0, num_examples, _CHUNK)
    ]
    if self._pool is None:
      results = map(_generate_chunk, tasks)
    else:
      results = _ordered_map(self._pool, _generate_chunk, tasks, 4 * self._pool_size)
    index = 0
    for chunk in results:
      for example in chunk:  # in index order, so records match a serial build
        yield index, example
        index += 1


def _ordered_map(pool: concurrent.futures.Executor, fn, tasks: list, lookahead: int):
  """Like pool.map, but keeps at most `lookahead` tasks in flight.

  Executor.map submits everything at once; if the writer fell behind, finished clips
  would pile up in memory (a whole split). Here memory stays ~ lookahead x chunk clips.
  """
  pending = collections.deque()
  queue = iter(tasks)
  for task in itertools.islice(queue, lookahead):
    pending.append(pool.submit(fn, task))
  while pending:
    result = pending.popleft().result()
    for task in itertools.islice(queue, 1):
      pending.append(pool.submit(fn, task))
    yield result


@contextlib.contextmanager
def _in_memory_shuffle_buffer(nbytes: int):
  """Keeps TFDS's writer in memory for splits above its 1 GB default.

  Beyond `shuffle.MAX_MEM_BUFFER_SIZE` TFDS spills records to temporary files through
  tf.io.gfile, i.e. it would import TensorFlow. Raising the limit costs RAM ~ split size.
  """
  from tensorflow_datasets.core import shuffle

  old = getattr(shuffle, "MAX_MEM_BUFFER_SIZE", None)
  if old is None or nbytes < old:
    yield
    return
  shuffle.MAX_MEM_BUFFER_SIZE = int(nbytes * 1.25)
  try:
    yield
  finally:
    shuffle.MAX_MEM_BUFFER_SIZE = old


def build_synthres(
  data_dir: str | os.PathLike,
  regime: str = "slow_pan",
  *,
  num_train: int = DEFAULT_NUM_TRAIN,
  num_validation: int = DEFAULT_NUM_VALIDATION,
  num_test: int = DEFAULT_NUM_TEST,
  height: int = spec.DEFAULT_HEIGHT,
  width: int = spec.DEFAULT_WIDTH,
  num_frames: int = spec.DEFAULT_NUM_FRAMES,
  num_workers: int = 0,
  verbose: bool = True,
) -> SynthRes:
  """Builds SynthRes into data_dir (offline) and returns the prepared builder.

  Idempotent: if this exact config (regime, size, length and counts, all encoded in the
  config name) is already built there, nothing is generated. Records are identical for any
  num_workers. num_workers > 0 generates in that many "spawn" processes (with 2 on 2 idle
  cores about 1.6x faster for the default 2,400 clips); like any spawn pool it needs the calling
  script to guard its entry point with `if __name__ == "__main__":`, hence the serial
  default. Raises ValueError for invalid settings (see `make_config`).
  """
  cfg = make_config(
    regime,
    height=height,
    width=width,
    num_frames=num_frames,
    num_train=num_train,
    num_validation=num_validation,
    num_test=num_test,
  )
  total = sum(cfg.split_sizes().values())
  if spec.as_int(num_workers, "num_workers") < 0:
    raise ValueError(f"num_workers must be >= 0, got {num_workers!r}")
  cfg_arg = cfg.name if cfg in SynthRes.BUILDER_CONFIGS else cfg
  builder = SynthRes(data_dir=os.fspath(data_dir), config=cfg_arg)
  if builder.is_prepared():
    if verbose:
      print(f"SynthRes {cfg.name}: already built in {builder.data_dir}")
    return builder
  if verbose:
    print(
      f"SynthRes {cfg.name}: generating {total} clips with {num_workers} worker "
      f"processes into {builder.data_dir}",
      flush=True,
    )
  start = time.perf_counter()
  biggest = max(cfg.split_sizes().values()) * cfg.example_nbytes()
  with _in_memory_shuffle_buffer(biggest), builder.generation_pool(num_workers):
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
  if verbose:
    print(f"SynthRes {cfg.name}: built in {time.perf_counter() - start:.1f} s", flush=True)
  return builder
