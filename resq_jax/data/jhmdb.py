"""JHMDB pose estimation: frames, the 15 puppet joints and the puppet-mask person box
(TFDS builder `jhmdb`, array_record, no TensorFlow).

Reads the official archives unpacked into one directory (see MANUAL_DOWNLOAD_INSTRUCTIONS):
frames `Rename_Images/{action}/{video}/{frame:05d}.png` (1-based), joints
`joint_positions/{action}/{video}/joint_positions.mat` (`pos_img`, 2 x 15 x N, 1-based
MATLAB pixel coordinates), person masks `puppet_mask/{action}/{video}/puppet_mask.mat`
(`part_mask`, H x W x N) and the split files `splits/{action}_test_split{1,2,3}.txt` (lines
`{video}.avi 1` = train, `{video}.avi 2` = test). Splits: `train` and `test` of one of the
three official splits (config `split_number`).

Conventions (as SynthRes): joints are (x, y) with pixel (row i, column j) centred at (x=j, y=i),
i.e. `pos_img - 1`; boxes are (x0, y0, x1, y1) in pixel-edge coordinates. JHMDB annotates every
joint of the puppet, visible or not, so `joint_visible` only says that the joint lies inside
the frame.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import scipy.io
import tensorflow_datasets as tfds
from etils import epath

from resq_jax.data import manual, spec

ACTIONS: tuple[str, ...] = (
  "brush_hair",
  "catch",
  "clap",
  "climb_stairs",
  "golf",
  "jump",
  "kick_ball",
  "pick",
  "pour",
  "pullup",
  "push",
  "run",
  "shoot_ball",
  "shoot_bow",
  "shoot_gun",
  "sit",
  "stand",
  "swing_baseball",
  "throw",
  "walk",
  "wave",
)
JOINT_NAMES = spec.JOINT_NAMES  # JHMDB order: neck, belly, face, right_shoulder, ...
NUM_JOINTS = spec.NUM_JOINTS
SPLITS = {1: "train", 2: "test"}  # the number in a split file line -> split name
DEFAULT_HEIGHT, DEFAULT_WIDTH = 240, 320  # every JHMDB video is 320 x 240
_SPLIT_FILE = re.compile(r"^(?P<action>.+)_test_split(?P<n>[123])\.txt$")


@dataclasses.dataclass(eq=False)
class JhmdbConfig(manual.ClipConfig):
  """ClipConfig plus the official split (1, 2 or 3) that assigns videos to train / test."""

  split_number: int = 1


def config_name(height, width, num_frames, stride, split_number) -> str:
  return f"split{split_number}_{manual.clip_name(height, width, num_frames, stride)}"


def _new_config(height, width, num_frames, stride, split_number) -> JhmdbConfig:
  return JhmdbConfig(
    name=config_name(height, width, num_frames, stride, split_number),
    height=height,
    width=width,
    num_frames=num_frames,
    stride=stride,
    split_number=split_number,
    description=f"JHMDB split {split_number} at {height}x{width}",
  )


def make_config(
  *,
  height: int = DEFAULT_HEIGHT,
  width: int = DEFAULT_WIDTH,
  num_frames: int = 0,
  stride: int = 0,
  split_number: int = 1,
) -> JhmdbConfig:
  """Validated config. num_frames = 0: whole videos (15-40 frames, variable T)."""
  height, width, num_frames, stride = manual.clip_settings(height, width, num_frames, stride)
  if split_number not in (1, 2, 3):
    raise ValueError(f"split_number must be 1, 2 or 3, got {split_number!r}")
  return manual.registered_or_new(
    Jhmdb, _new_config(height, width, num_frames, stride, int(split_number))
  )


def read_split_file(path: epath.Path) -> list[tuple[str, int]]:
  """(video name without .avi, 1 train / 2 test) per line of an official split file."""
  entries = []
  for line in path.read_text().splitlines():
    parts = line.split()
    if not parts:
      continue
    if len(parts) != 2 or parts[1] not in ("1", "2"):
      raise ValueError(f"{path}: bad line {line!r} (expected '<video>.avi 1|2')")
    name = parts[0][:-4] if parts[0].endswith(".avi") else parts[0]
    entries.append((name, int(parts[1])))
  return entries


def _load_mat_field(path: epath.Path, field: str) -> np.ndarray:
  if not path.exists():
    raise FileNotFoundError(f"missing {path}")
  with path.open("rb") as f:
    mat = scipy.io.loadmat(f)
  if field not in mat:
    raise ValueError(f"{path} has no field {field!r} (found {sorted(mat)})")
  return np.asarray(mat[field])


class Jhmdb(manual.ManualBuilder):
  """JHMDB videos with 15 joints per frame and the puppet-mask person box."""

  BUILDER_CONFIGS = [_new_config(DEFAULT_HEIGHT, DEFAULT_WIDTH, 0, 0, 1)]
  DEFAULT_CONFIG_NAME = BUILDER_CONFIGS[0].name
  HOMEPAGE = "http://jhmdb.is.tue.mpg.de/"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  From the JHMDB website download Rename_Images.tar.gz, joint_positions.zip, puppet_mask.zip
  and splits.zip and unpack them into one directory (manual_dir):
    manual_dir/Rename_Images/{action}/{video}/{frame:05d}.png
    manual_dir/joint_positions/{action}/{video}/joint_positions.mat   (pos_img: 2 x 15 x N)
    manual_dir/puppet_mask/{action}/{video}/puppet_mask.mat           (part_mask: H x W x N)
    manual_dir/splits/{action}_test_split{1,2,3}.txt                  ('{video}.avi 1|2')
  """

  def _features(self):
    cfg = self.builder_config
    t = cfg.num_frames or None
    h, w, j = cfg.height, cfg.width, NUM_JOINTS
    tensor = manual.tensor_feature
    return {
      "frames": tensor((t, h, w, 3), np.uint8, "RGB frames [T, H, W, 3]"),
      "joints": tensor((t, j, 2), np.float32, f"(x, y) pixels of {JOINT_NAMES}"),
      "joint_visible": tensor((t, j), np.bool_, "joint inside the frame"),
      "bbox": tensor((t, 4), np.float32, "puppet mask box (x0, y0, x1, y1), pixel edges"),
      "action": tensor((), np.int32, f"index into {ACTIONS}"),
      "frame_index": tensor((t,), np.int32, "0-based frame numbers in the video"),
      "video": tfds.features.Text(doc="{action}/{video}"),
    }

  def _description(self) -> str:
    cfg = self.builder_config
    clips = "whole videos" if cfg.num_frames == 0 else f"{cfg.num_frames}-frame clips"
    return (
      f"JHMDB split {cfg.split_number}: {clips} resized to {cfg.height}x{cfg.width} "
      "with 15 joints per frame and the person box of the puppet mask."
    )

  def _metadata(self):
    return dict(actions=ACTIONS, joint_names=JOINT_NAMES, skeleton=spec.SKELETON)

  def _list_items(self, root: epath.Path) -> dict[str, list]:
    for sub in ("Rename_Images", "joint_positions", "puppet_mask", "splits"):
      if not (root / sub).is_dir():
        raise FileNotFoundError(
          f"jhmdb: {root / sub} not found; expected layout:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    n = self.builder_config.split_number
    items = {name: [] for name in SPLITS.values()}
    files = sorted((root / "splits").glob(f"*_test_split{n}.txt"))
    if not files:
      raise FileNotFoundError(f"jhmdb: no {root / 'splits'}/*_test_split{n}.txt")
    for path in files:
      action = _SPLIT_FILE.match(path.name)["action"]
      if action not in ACTIONS:
        raise ValueError(f"jhmdb: unknown action {action!r} in {path}; known: {ACTIONS}")
      for video, which in sorted(read_split_file(path)):
        items[SPLITS[which]].append((action, video))
    return items

  def _load_examples(self, root: epath.Path, item) -> list[dict]:
    action, video = item
    cfg = self.builder_config
    pos = _load_mat_field(
      root / "joint_positions" / action / video / "joint_positions.mat", "pos_img"
    ).astype(np.float64)
    if pos.ndim == 2:  # MATLAB drops a trailing singleton dimension (a 1-frame video)
      pos = pos[:, :, None]
    if pos.ndim != 3 or pos.shape[:2] != (2, NUM_JOINTS):
      raise ValueError(
        f"jhmdb {action}/{video}: pos_img has shape {pos.shape}, expected (2, {NUM_JOINTS}, N)"
      )
    masks = _load_mat_field(root / "puppet_mask" / action / video / "puppet_mask.mat", "part_mask")
    num = pos.shape[2]
    if masks.ndim == 2:  # as pos_img
      masks = masks[:, :, None]
    if masks.shape[2] < num:
      raise ValueError(
        f"jhmdb {action}/{video}: part_mask has {masks.shape[2]} frames, pos_img {num}"
      )
    joints = pos.transpose(2, 1, 0) - 1.0  # [N, 15, (x, y)], 1-based -> pixel centres
    out = []
    for clip in manual.windows(num, cfg.num_frames, cfg.stride):
      frames, boxes = [], []
      for f in clip:
        rgb = manual.read_rgb(root / "Rename_Images" / action / video / f"{f + 1:05d}.png")
        src_hw = rgb.shape[:2]
        frames.append(manual.resize_rgb(rgb, cfg.height, cfg.width))
        box = manual.mask_bbox(masks[:, :, f] > 0)
        if box.any():
          box = manual.scale_points(
            box.reshape(2, 2), masks.shape[:2], (cfg.height, cfg.width)
          ).reshape(4)
        boxes.append(box)
      xy = joints[clip.start : clip.stop]
      h0, w0 = src_hw
      visible = (
        (xy[..., 0] >= -0.5)
        & (xy[..., 0] <= w0 - 0.5)
        & (xy[..., 1] >= -0.5)
        & (xy[..., 1] <= h0 - 0.5)
      )
      out.append(
        dict(
          frames=np.stack(frames),
          joints=manual.scale_points(xy, src_hw, (cfg.height, cfg.width)).astype(np.float32),
          joint_visible=visible,
          bbox=np.stack(boxes).astype(np.float32),
          action=np.int32(ACTIONS.index(action)),
          frame_index=np.arange(clip.start, clip.stop, dtype=np.int32),
          video=f"{action}/{video}",
        )
      )
    return out


def build_jhmdb(
  data_dir,
  manual_dir,
  *,
  height: int = DEFAULT_HEIGHT,
  width: int = DEFAULT_WIDTH,
  num_frames: int = 0,
  stride: int = 0,
  split_number: int = 1,
  num_workers: int = 0,
  verbose: bool = True,
) -> Jhmdb:
  """Builds (idempotent) and returns the builder; read with
  `tfds.data_source(f"jhmdb/{builder.builder_config.name}", data_dir=...)`."""
  cfg = make_config(
    height=height, width=width, num_frames=num_frames, stride=stride, split_number=split_number
  )
  return manual.build(Jhmdb, cfg, data_dir, manual_dir, num_workers=num_workers, verbose=verbose)
