"""Cityscapes video semantic segmentation: clips of `leftImg8bit_sequence` ending at the
annotated frame of each `gtFine` image (TFDS builder `cityscapes_video`, array_record, no TF).

Every gtFine image `{city}_{seq}_{frame}` is the 20th frame (index 19) of a 30-frame snippet
`{city}_{seq}_{frame - 19}` ... `{city}_{seq}_{frame + 10}` in leftImg8bit_sequence. A clip of T
frames (T <= 20) is `frame - T + 1 .. frame`, so its last frame is the annotated one. Labels
are the 19 training classes (trainIds, 255 ignore) mapped from `*_gtFine_labelIds.png` with the
table of cityscapesscripts' labels.py. Splits: `train` and `validation` (the official `val`);
the test split has no public labels and is not built.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from resq_jax.data import manual

CLASS_NAMES: tuple[str, ...] = (
  "road",
  "sidewalk",
  "building",
  "wall",
  "fence",
  "pole",
  "traffic light",
  "traffic sign",
  "vegetation",
  "terrain",
  "sky",
  "person",
  "rider",
  "car",
  "truck",
  "bus",
  "train",
  "motorcycle",
  "bicycle",
)
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_ID = 255
SNIPPET_LENGTH = 30
ANNOTATED_INDEX = 19  # 0-based position of the gtFine frame in its 30-frame snippet
SPLIT_DIRS = {"train": "train", "validation": "val"}

# labelId -> trainId, from cityscapesscripts/helpers/labels.py (ids 0-33; license plate, id -1,
# and anything else map to 255 = ignore).
_TRAIN_IDS = {
  7: 0,
  8: 1,
  11: 2,
  12: 3,
  13: 4,
  17: 5,
  19: 6,
  20: 7,
  21: 8,
  22: 9,
  23: 10,
  24: 11,
  25: 12,
  26: 13,
  27: 14,
  28: 15,
  31: 16,
  32: 17,
  33: 18,
}
LABEL_TO_TRAIN_ID = np.full(256, IGNORE_ID, np.uint8)
for _label, _train in _TRAIN_IDS.items():
  LABEL_TO_TRAIN_ID[_label] = _train

DEFAULT_HEIGHT, DEFAULT_WIDTH, DEFAULT_NUM_FRAMES = 512, 1024, 4
_GT_NAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_gtFine_labelIds\.png$")


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
  """Maps Cityscapes labelIds (uint8) to the 19 trainIds, everything else to 255."""
  return LABEL_TO_TRAIN_ID[np.asarray(label_ids, np.uint8)]


def frame_path(root: epath.Path, split_dir: str, city: str, seq: str, frame: int) -> epath.Path:
  return (
    root / "leftImg8bit_sequence" / split_dir / city / f"{city}_{seq}_{frame:06d}_leftImg8bit.png"
  )


def label_path(root: epath.Path, split_dir: str, city: str, seq: str, frame: int) -> epath.Path:
  return root / "gtFine" / split_dir / city / f"{city}_{seq}_{frame:06d}_gtFine_labelIds.png"


@dataclasses.dataclass(eq=False)
class CityscapesVideoConfig(manual.ClipConfig):
  """height x width output, num_frames in [1, 20] frames ending at the annotated one."""


def config_name(height: int, width: int, num_frames: int) -> str:
  return f"{height}x{width}x{num_frames}"


def _new_config(height: int, width: int, num_frames: int) -> CityscapesVideoConfig:
  return CityscapesVideoConfig(
    name=config_name(height, width, num_frames),
    height=height,
    width=width,
    num_frames=num_frames,
    description=f"{num_frames}-frame clips at {height}x{width}",
  )


def make_config(
  *, height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH, num_frames: int = DEFAULT_NUM_FRAMES
) -> CityscapesVideoConfig:
  """Validated config; num_frames must be in [1, 20] (the frames up to the annotated one)."""
  height, width, num_frames, _ = manual.clip_settings(height, width, num_frames, whole_videos=False)
  if num_frames > ANNOTATED_INDEX + 1:
    raise ValueError(
      f"num_frames must be <= {ANNOTATED_INDEX + 1} (a snippet has "
      f"{ANNOTATED_INDEX} frames before the annotated one), got {num_frames}"
    )
  return manual.registered_or_new(CityscapesVideo, _new_config(height, width, num_frames))


class CityscapesVideo(manual.ManualBuilder):
  """Cityscapes leftImg8bit_sequence clips with the gtFine labels of their last frame."""

  BUILDER_CONFIGS = [_new_config(DEFAULT_HEIGHT, DEFAULT_WIDTH, DEFAULT_NUM_FRAMES)]
  DEFAULT_CONFIG_NAME = BUILDER_CONFIGS[0].name
  HOMEPAGE = "https://www.cityscapes-dataset.com/"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Register on the Cityscapes website, download leftImg8bit_sequence_trainvaltest.zip (~324 GB)
  and gtFine_trainvaltest.zip (~241 MB) and unzip both into one directory (manual_dir):
    manual_dir/leftImg8bit_sequence/{train,val}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    manual_dir/gtFine/{train,val}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png
  """

  def _features(self):
    cfg = self.builder_config
    t, h, w = cfg.num_frames, cfg.height, cfg.width
    tensor = manual.tensor_feature
    return {
      "frames": tensor((t, h, w, 3), np.uint8, "RGB frames [T, H, W, 3], last = annotated"),
      "semantic": tensor((h, w), np.uint8, "trainIds of the last frame, 255 ignore"),
      "annotated_index": tensor((), np.int32, "index in the clip of the labelled frame"),
      "frame_ids": tensor((t,), np.int32, "frame numbers in the snippet's file names"),
      "id": tfds.features.Text(doc="{city}_{seq}_{frame} of the annotated frame"),
    }

  def _description(self) -> str:
    cfg = self.builder_config
    return (
      f"Cityscapes video: {cfg.num_frames} frames of leftImg8bit_sequence ending at each "
      f"gtFine-annotated frame, resized to {cfg.height}x{cfg.width}, with the 19-class "
      "trainId labels of the last frame."
    )

  def _metadata(self):
    return dict(class_names=CLASS_NAMES, ignore_id=IGNORE_ID)

  def _list_items(self, root: epath.Path) -> dict[str, list]:
    for sub in ("leftImg8bit_sequence", "gtFine"):
      if not (root / sub).is_dir():
        raise FileNotFoundError(
          f"cityscapes_video: {root / sub} not found; expected layout:\n"
          f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    items = {}
    for split, split_dir in SPLIT_DIRS.items():
      found = []
      for path in sorted((root / "gtFine" / split_dir).glob("*/*_gtFine_labelIds.png")):
        match = _GT_NAME.match(path.name)
        if match is None:
          continue
        found.append((split_dir, match["city"], match["seq"], int(match["frame"])))
      items[split] = found
    return items

  def _load_examples(self, root: epath.Path, item) -> list[dict]:
    split_dir, city, seq, frame = item
    cfg = self.builder_config
    first = frame - cfg.num_frames + 1
    if first < 0:
      raise ValueError(
        f"{city}_{seq}_{frame:06d}: a {cfg.num_frames}-frame clip would start before frame 0"
      )
    ids = np.arange(first, frame + 1, dtype=np.int32)
    frames = np.stack(
      [
        manual.resize_rgb(
          manual.read_rgb(frame_path(root, split_dir, city, seq, int(f))), cfg.height, cfg.width
        )
        for f in ids
      ]
    )
    label_ids = manual.read_index_png(label_path(root, split_dir, city, seq, frame))
    semantic = manual.resize_labels(label_ids_to_train_ids(label_ids), cfg.height, cfg.width)
    return [
      dict(
        frames=frames,
        semantic=semantic,
        annotated_index=np.int32(cfg.num_frames - 1),
        frame_ids=ids,
        id=f"{city}_{seq}_{frame:06d}",
      )
    ]


def build_cityscapes_video(
  data_dir,
  manual_dir,
  *,
  height: int = DEFAULT_HEIGHT,
  width: int = DEFAULT_WIDTH,
  num_frames: int = DEFAULT_NUM_FRAMES,
  num_workers: int = 0,
  verbose: bool = True,
) -> CityscapesVideo:
  """Builds (idempotent) and returns the builder; read with
  `tfds.data_source(f"cityscapes_video/{builder.builder_config.name}", data_dir=...)`."""
  cfg = make_config(height=height, width=width, num_frames=num_frames)
  return manual.build(
    CityscapesVideo, cfg, data_dir, manual_dir, num_workers=num_workers, verbose=verbose
  )
