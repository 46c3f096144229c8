"""DAVIS 2017 semi-supervised video object segmentation: frames and per-frame object-id masks
(TFDS builder `davis2017`, array_record, no TensorFlow).

Reads the official trainval archive unpacked into manual_dir (see MANUAL_DOWNLOAD_INSTRUCTIONS):
`JPEGImages/480p/{seq}/{frame:05d}.jpg`, `Annotations/480p/{seq}/{frame:05d}.png` (palette
PNGs whose index is the object id: 0 background, 1..N objects, 255 void) and the sequence lists
`ImageSets/2017/{train,val}.txt`. Splits: `train` and `validation` (the official `val`).
`num_objects` follows the DAVIS 2017 evaluation code: the largest object id (other than 255)
in the first annotated frame of the sequence.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from resq_jax.data import manual

SPLIT_FILES = {"train": "train", "validation": "val"}
VOID_ID = 255
DEFAULT_HEIGHT, DEFAULT_WIDTH = 480, 854  # the 480p size of most sequences


@dataclasses.dataclass(eq=False)
class Davis2017Config(manual.ClipConfig):
  """ClipConfig plus the resolution folder (`480p`, or `Full-Resolution` of the full archive)."""

  resolution: str = "480p"


def config_name(height, width, num_frames, stride, resolution) -> str:
  res = resolution.lower().replace("-", "_")
  return f"{res}_{manual.clip_name(height, width, num_frames, stride)}"


def _new_config(height, width, num_frames, stride, resolution) -> Davis2017Config:
  return Davis2017Config(
    name=config_name(height, width, num_frames, stride, resolution),
    height=height,
    width=width,
    num_frames=num_frames,
    stride=stride,
    resolution=resolution,
    description=f"DAVIS 2017 {resolution} at {height}x{width}",
  )


def make_config(
  *,
  height: int = DEFAULT_HEIGHT,
  width: int = DEFAULT_WIDTH,
  num_frames: int = 0,
  stride: int = 0,
  resolution: str = "480p",
) -> Davis2017Config:
  """Validated config. num_frames = 0: whole sequences (25-104 frames, variable T)."""
  height, width, num_frames, stride = manual.clip_settings(height, width, num_frames, stride)
  if resolution not in ("480p", "Full-Resolution"):
    raise ValueError(f"resolution must be '480p' or 'Full-Resolution', got {resolution!r}")
  return manual.registered_or_new(
    Davis2017, _new_config(height, width, num_frames, stride, resolution)
  )


def read_image_set(path: epath.Path) -> list[str]:
  """Sequence names, one per line, of an ImageSets/2017 file (order kept)."""
  if not path.exists():
    raise FileNotFoundError(f"missing {path}")
  return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class Davis2017(manual.ManualBuilder):
  """DAVIS 2017 sequences with the object-id mask of every frame."""

  BUILDER_CONFIGS = [_new_config(DEFAULT_HEIGHT, DEFAULT_WIDTH, 0, 0, "480p")]
  DEFAULT_CONFIG_NAME = BUILDER_CONFIGS[0].name
  HOMEPAGE = "https://davischallenge.org/"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  From the DAVIS challenge website download DAVIS-2017-trainval-480p.zip (semi-supervised,
  TrainVal, 480p) and unzip it; manual_dir is the resulting DAVIS directory:
    manual_dir/JPEGImages/480p/{seq}/{frame:05d}.jpg
    manual_dir/Annotations/480p/{seq}/{frame:05d}.png    (palette PNG, index = object id)
    manual_dir/ImageSets/2017/{train,val}.txt             (one sequence per line)
  """

  def _features(self):
    cfg = self.builder_config
    t, h, w = cfg.num_frames or None, cfg.height, cfg.width
    tensor = manual.tensor_feature
    return {
      "frames": tensor((t, h, w, 3), np.uint8, "RGB frames [T, H, W, 3]"),
      "masks": tensor((t, h, w), np.uint8, "object ids: 0 background, 1..N, 255 void"),
      "num_objects": tensor((), np.int32, "N: largest id in the sequence's first mask"),
      "frame_index": tensor((t,), np.int32, "0-based frame numbers in the sequence"),
      "sequence": tfds.features.Text(doc="DAVIS sequence name"),
    }

  def _description(self) -> str:
    cfg = self.builder_config
    clips = "whole sequences" if cfg.num_frames == 0 else f"{cfg.num_frames}-frame clips"
    return (
      f"DAVIS 2017 ({cfg.resolution}): {clips} resized to {cfg.height}x{cfg.width} "
      "with per-frame object-id masks."
    )

  def _metadata(self):
    return dict(void_id=VOID_ID)

  def _dirs(self, root: epath.Path) -> tuple[epath.Path, epath.Path]:
    res = self.builder_config.resolution
    return root / "JPEGImages" / res, root / "Annotations" / res

  def _list_items(self, root: epath.Path) -> dict[str, list]:
    for sub in (*self._dirs(root), root / "ImageSets" / "2017"):
      if not sub.is_dir():
        raise FileNotFoundError(
          f"davis2017: {sub} not found; expected layout:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    return {
      split: read_image_set(root / "ImageSets" / "2017" / f"{name}.txt")
      for split, name in SPLIT_FILES.items()
    }

  def _load_examples(self, root: epath.Path, item) -> list[dict]:
    seq = item
    cfg = self.builder_config
    image_dir, mask_dir = self._dirs(root)
    names = sorted(p.stem for p in (image_dir / seq).glob("*.jpg"))
    if not names:
      raise FileNotFoundError(f"davis2017: no frames in {image_dir / seq}")
    first_mask = manual.read_index_png(mask_dir / seq / f"{names[0]}.png")
    num_objects = int(first_mask[first_mask != VOID_ID].max(initial=0))
    out = []
    for clip in manual.windows(len(names), cfg.num_frames, cfg.stride):
      frames = [
        manual.resize_rgb(
          manual.read_rgb(image_dir / seq / f"{names[f]}.jpg"), cfg.height, cfg.width
        )
        for f in clip
      ]
      masks = [
        manual.resize_labels(
          manual.read_index_png(mask_dir / seq / f"{names[f]}.png"), cfg.height, cfg.width
        )
        for f in clip
      ]
      out.append(
        dict(
          frames=np.stack(frames),
          masks=np.stack(masks),
          num_objects=np.int32(num_objects),
          frame_index=np.arange(clip.start, clip.stop, dtype=np.int32),
          sequence=seq,
        )
      )
    return out


def build_davis2017(
  data_dir,
  manual_dir,
  *,
  height: int = DEFAULT_HEIGHT,
  width: int = DEFAULT_WIDTH,
  num_frames: int = 0,
  stride: int = 0,
  resolution: str = "480p",
  num_workers: int = 0,
  verbose: bool = True,
) -> Davis2017:
  """Builds (idempotent) and returns the builder; read with
  `tfds.data_source(f"davis2017/{builder.builder_config.name}", data_dir=...)`."""
  cfg = make_config(
    height=height, width=width, num_frames=num_frames, stride=stride, resolution=resolution
  )
  return manual.build(
    Davis2017, cfg, data_dir, manual_dir, num_workers=num_workers, verbose=verbose
  )
