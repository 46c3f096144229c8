"""Shared machinery of the TFDS builders over real datasets read from a manual download.

`CityscapesVideo`, `Jhmdb` and `Davis2017` (see docs/data.md, "Real datasets") read a dataset
in its official on-disk layout from a directory the user downloaded by hand, and write
array_record files of plain `tfds.features.Tensor` features, like SynthRes: neither building nor
reading imports TensorFlow.

What they share lives here:
- `ManualBuilder`, an abstract `GeneratorBasedBuilder`: array_record by default, a `manual_dir`
  argument, records in listing order (`disable_shuffling=True`), optional reading threads,
  progress lines, and `prepare()` (idempotent build).
- `ClipConfig`: output size (every frame is resized to height x width) and clip length.
- Image helpers (`read_rgb`, `read_index_png`, `resize_rgb`, `resize_labels`) and the
  coordinate rules (`scale_points`, `mask_bbox`), documented in docs/data.md.

Records are written in order without holding a whole split in memory: TFDS keeps a split in
RAM up to 1 GB and then spills it to temporary bucket files through `tf.io.gfile`;
`tf_free_spill` gives that spill plain file I/O, and the keys spread the records over the
buckets in order (`ordered_key`), so each bucket, sorted in memory when the shards are
written, holds only about 1/1000 of the split.
"""

from __future__ import annotations

import abc
import concurrent.futures
import contextlib
import dataclasses
import os
import sys
import time
import types
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image
from tensorflow_datasets.core import utils as tfds_utils

from resq_jax.data import builder as synth_builder

# TFDS hashes keys into 128 bits; with disable_shuffling the raw key is the sort key.
_KEY_SPACE = 2**128


def tensor_feature(shape: Sequence[int | None], dtype, doc: str) -> tfds.features.Tensor:
  """A plain Tensor feature stored as raw bytes (no TensorFlow; see builder.py)."""
  return tfds.features.Tensor(shape=tuple(shape), dtype=dtype, encoding="bytes", doc=doc)


def ordered_key(item_index: int, num_items: int, sub_index: int = 0) -> int:
  """Sort key of example `sub_index` of item `item_index`: increasing, spread over 2**128.

  Spreading matters only when TFDS spills a split to its 1,000 temporary buckets (bucket =
  key * 1000 // 2**128): consecutive items then fill the buckets in order instead of all
  landing in bucket 0, which TFDS would sort in memory as a whole.
  """
  step = _KEY_SPACE // max(num_items, 1)
  if not 0 <= sub_index < step:
    raise ValueError(f"sub_index {sub_index} out of range for {num_items} items")
  return item_index * step + sub_index


@contextlib.contextmanager
def tf_free_spill():
  """Lets TFDS spill big splits to its temporary bucket files without TensorFlow.

  TFDS's `shuffle._Bucket` writes and reads through `tf.io.gfile`; inside this context the
  module's `tf` is a stand-in offering the four calls it uses on top of `etils.epath`.
  """
  from tensorflow_datasets.core import shuffle

  class _Unused(Exception):
    """Stands for tf.errors.ResourceExhaustedError, which plain file I/O never raises."""

  gfile = types.SimpleNamespace(
    GFile=lambda path, mode: epath.Path(path).open(mode),
    exists=lambda path: epath.Path(path).exists(),
    remove=lambda path: epath.Path(path).unlink(),
  )
  stand_in = types.SimpleNamespace(
    io=types.SimpleNamespace(gfile=gfile),
    errors=types.SimpleNamespace(ResourceExhaustedError=_Unused),
  )
  old = shuffle.tf
  shuffle.tf = stand_in
  try:
    yield
  finally:
    shuffle.tf = old


# --- Images and coordinates -------------------------------------------------------------------
def resize_rgb(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
  """Pillow bilinear resize of uint8 [H, W, 3] (Pillow widens the filter when shrinking)."""
  if rgb.shape[:2] == (height, width):
    return rgb
  return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))


def resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of uint8 [H, W] ids: output pixel i takes source floor((i+.5)*s)."""
  if labels.shape[:2] == (height, width):
    return labels
  return np.asarray(Image.fromarray(labels).resize((width, height), Image.NEAREST))


def read_rgb(path: epath.PathLike) -> np.ndarray:
  """uint8 [H, W, 3] RGB from a PNG or JPEG file (FileNotFoundError names the file)."""
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"missing image {path}")
  with path.open("rb") as f, Image.open(f) as img:
    return np.asarray(img.convert("RGB"))


def read_index_png(path: epath.PathLike) -> np.ndarray:
  """uint8 [H, W] ids from a palette ("P") or grey ("L") PNG: the stored index, not a colour."""
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"missing label image {path}")
  with path.open("rb") as f, Image.open(f) as img:
    if img.mode not in ("P", "L"):
      raise ValueError(
        f"{path}: expected a palette or grey-level PNG of ids, got mode {img.mode!r}"
      )
    return np.asarray(img).astype(np.uint8)


def scale_points(xy: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
  """Maps (x, y) points from a src_hw image to a dst_hw one (pixel j's centre at x = j).

  The continuous image plane is stretched: u' = (u + 0.5) * W'/W - 0.5 (and likewise for y), so
  pixel centres, pixel edges and box corners all follow the resize.
  """
  xy = np.asarray(xy, np.float64)
  scale = np.array([dst_hw[1] / src_hw[1], dst_hw[0] / src_hw[0]])
  return (xy + 0.5) * scale - 0.5


def mask_bbox(mask: np.ndarray) -> np.ndarray:
  """float32 (x0, y0, x1, y1) of a mask's nonzero pixels in pixel-edge coordinates.

  Pixel column j spans [j - 0.5, j + 0.5] (the SynthRes convention), so a single pixel at (row
  i, column j) has the box (j - .5, i - .5, j + .5, i + .5); zeros for an empty mask.
  """
  rows = np.flatnonzero(np.any(mask, axis=1))
  cols = np.flatnonzero(np.any(mask, axis=0))
  if rows.size == 0:
    return np.zeros(4, np.float32)
  return np.array([cols[0] - 0.5, rows[0] - 0.5, cols[-1] + 0.5, rows[-1] + 0.5], np.float32)


def windows(num_available: int, num_frames: int, stride: int) -> list[range]:
  """Frame index ranges of the clips cut from a video of `num_available` frames.

  num_frames = 0: the whole video, one clip. Otherwise clips of num_frames starting at
  0, stride, 2 * stride, ... that fit entirely; trailing frames that do not fill a clip are
  dropped, and a video shorter than num_frames gives no clip.
  """
  if num_frames == 0:
    return [range(num_available)] if num_available > 0 else []
  return [range(s, s + num_frames) for s in range(0, num_available - num_frames + 1, stride)]


# --- Configs ----------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class ClipConfig(tfds.core.BuilderConfig):
  """Output size and clip length of a real-dataset build (subclasses add their own fields).

  height, width: every frame and label map is resized to this size (see `resize_rgb`).
  num_frames: frames per clip, 0 = whole videos (variable T; not for Cityscapes).
  stride: first-frame step between clips cut from one video (JHMDB, DAVIS); 0 = num_frames.
  """

  height: int = 0
  width: int = 0
  num_frames: int = 0
  stride: int = 0


def positive_int(value: Any, name: str, *, allow_zero: bool = False) -> int:
  """`value` as an int, ValueError unless it is an int > 0 (or >= 0 with allow_zero)."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an int, got {value!r}")
  if value < 0 or (value == 0 and not allow_zero):
    raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
  return int(value)


def clip_settings(
  height, width, num_frames, stride=0, *, whole_videos: bool = True
) -> tuple[int, int, int, int]:
  """Validated (height, width, num_frames, stride); stride 0 becomes num_frames.

  ValueError unless height, width > 0, num_frames > 0 (or 0 = whole videos when
  whole_videos) and stride >= 0.
  """
  height = positive_int(height, "height")
  width = positive_int(width, "width")
  num_frames = positive_int(num_frames, "num_frames", allow_zero=whole_videos)
  stride = positive_int(stride, "stride", allow_zero=True) or num_frames
  return height, width, num_frames, stride


def clip_name(height: int, width: int, num_frames: int, stride: int) -> str:
  """Config name part for the clip settings: `{H}x{W}_full` or `{H}x{W}_t{T}s{stride}`."""
  clips = "full" if num_frames == 0 else f"t{num_frames}s{stride}"
  return f"{height}x{width}_{clips}"


def registered_or_new(builder_cls: type, cfg: ClipConfig) -> ClipConfig:
  """The builder's registered config of that name if there is one (TFDS refuses a second
  config object with a registered name), else `cfg`."""
  for registered in builder_cls.BUILDER_CONFIGS:
    if registered.name == cfg.name:
      return registered
  return cfg


# --- The builder base -------------------------------------------------------------------------
class ManualBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC):
  """Base of the real-dataset builders; abstract, so TFDS does not register it.

  Subclasses define `_features()`, `_description()`, `_list_items(root)` (split name -> list
  of small picklable work items, e.g. one per video, checked cheaply) and
  `_load_examples(root, item)` (the examples of one item, in order).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = ""
  CITATION = ""

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # As SynthRes.code_path: TFDS 4.9.x would need `importlib_resources` to find it.
    return epath.Path(sys.modules[cls.__module__].__file__)

  def __init__(
    self,
    *,
    manual_dir: epath.PathLike | None = None,
    num_workers: int = 0,
    verbose: bool = False,
    **kwargs,
  ):
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)
    self._manual_dir = None if manual_dir is None else epath.Path(manual_dir)
    self._num_workers = positive_int(num_workers, "num_workers", allow_zero=True)
    self._verbose = verbose
    self._pool: concurrent.futures.Executor | None = None

  # Subclass interface.
  @abc.abstractmethod
  def _features(self) -> dict[str, tfds.features.FeatureConnector]:
    """The feature dict of one example."""

  @abc.abstractmethod
  def _description(self) -> str:
    """One paragraph for dataset_info.json."""

  @abc.abstractmethod
  def _list_items(self, root: epath.Path) -> dict[str, list]:
    """Split name -> work items in record order; raises FileNotFoundError on a bad layout."""

  @abc.abstractmethod
  def _load_examples(self, root: epath.Path, item) -> list[dict[str, Any]]:
    """The examples (dicts of arrays) of one work item, in order."""

  def _metadata(self) -> dict[str, Any]:
    return {}

  # TFDS interface.
  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(self._features()),
      disable_shuffling=True,
      description=self._description(),
      homepage=self.HOMEPAGE,
      citation=self.CITATION,
      metadata=tfds.core.MetadataDict(self._metadata()),
    )

  def _split_generators(self, dl_manager):
    root = epath.Path(dl_manager.manual_dir)
    splits = self._list_items(root)
    for split, items in splits.items():
      self._log(f"{split}: {len(items)} items")
    empty = [split for split, items in splits.items() if not items]
    if len(empty) == len(splits):
      raise FileNotFoundError(
        f"{self.name}: nothing to build from {root}; expected layout:\n"
        f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    return {
      split: self._generate_examples(root, split, items) for split, items in splits.items() if items
    }

  def _generate_examples(self, root: epath.Path, split: str, items: list):
    load = lambda item: self._load_examples(root, item)  # noqa: E731 (threads only)
    if self._pool is None:
      results: Iterator = map(load, items)
    else:
      results = synth_builder._ordered_map(self._pool, load, items, 4 * self._num_workers)
    start = last = time.perf_counter()
    count = 0
    for i, examples in enumerate(results):
      for j, example in enumerate(examples):
        yield ordered_key(i, len(items), j), example
      count += len(examples)
      now = time.perf_counter()
      if now - last >= 10 or i + 1 == len(items):
        last = now
        rate = (i + 1) / (now - start)
        eta = (len(items) - i - 1) / rate if rate > 0 else float("nan")
        self._log(
          f"{split}: {i + 1}/{len(items)} items, {count} examples, "
          f"{rate:.1f} items/s, ~{eta:.0f} s left"
        )

  def _log(self, message: str) -> None:
    if self._verbose:
      print(f"{self.name}/{self.builder_config.name} {message}", flush=True)

  # Convenience.
  def prepare(self) -> ManualBuilder:
    """Builds from `manual_dir` unless already built (idempotent); returns self.

    Reads with `num_workers` threads (image decoding releases the GIL); records are in the
    same order for any count.
    """
    if self.is_prepared():
      self._log(f"already built in {self.data_dir}")
      return self
    if self._manual_dir is None:
      raise ValueError(
        f"{self.name}: pass manual_dir (the downloaded data); expected "
        f"layout:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
      )
    if not self._manual_dir.is_dir():
      raise FileNotFoundError(f"{self.name}: manual_dir {self._manual_dir} is not a directory")
    self._log(f"building from {self._manual_dir} into {self.data_dir}")
    start = time.perf_counter()
    pool = (
      concurrent.futures.ThreadPoolExecutor(self._num_workers)
      if self._num_workers
      else contextlib.nullcontext()
    )
    with tf_free_spill(), pool as executor:
      self._pool = executor
      try:
        self.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
            manual_dir=os.fspath(self._manual_dir), try_download_gcs=False
          )
        )
      finally:
        self._pool = None
    self._log(f"built in {time.perf_counter() - start:.1f} s")
    return self


def build(
  builder_cls: type,
  cfg: ClipConfig,
  data_dir: epath.PathLike,
  manual_dir: epath.PathLike,
  *,
  num_workers: int = 0,
  verbose: bool = True,
) -> ManualBuilder:
  """Builds `cfg` of `builder_cls` from manual_dir into data_dir (idempotent)."""
  cfg_arg = cfg.name if cfg in builder_cls.BUILDER_CONFIGS else cfg
  return builder_cls(
    data_dir=os.fspath(data_dir),
    config=cfg_arg,
    manual_dir=manual_dir,
    num_workers=num_workers,
    verbose=verbose,
  ).prepare()
