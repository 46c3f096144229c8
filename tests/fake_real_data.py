"""Tiny fake copies of real datasets in their official on-disk layouts (for the builder tests
of test_data_real.py and the end-to-end runs of test_real_configs.py).

`fake_cityscapes` writes whole 30-frame leftImg8bit_sequence snippets and gtFine labelIds PNGs;
`fake_jhmdb` writes Rename_Images frames, joint_positions / puppet_mask .mat files and the
three split files. Both return the ground truth they wrote.
"""

import os

import numpy as np
import scipy.io
from PIL import Image

from resq_jax.data import cityscapes_video, jhmdb


def png(path, array, mode=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array, mode).save(path)


# (split dir, city, sequence, annotated frame number)
CITYSCAPES = [
  ("train", "aachen", "000000", 19),
  ("train", "aachen", "000001", 19),
  ("val", "frankfurt", "000000", 294),
]
CS_H, CS_W = 6, 8


def fake_cityscapes(root, rng, items=CITYSCAPES):
  """Writes `items` ((split dir, city, sequence, annotated frame) each) at CS_H x CS_W;
  returns (frames, labels) keyed by (city, seq, frame)."""
  frames, labels = {}, {}
  for split_dir, city, seq, frame in items:
    for f in range(frame - 19, frame + 11):  # the whole 30-frame snippet
      rgb = rng.integers(0, 256, (CS_H, CS_W, 3), dtype=np.uint8)
      frames[city, seq, f] = rgb
      png(cityscapes_video.frame_path(root, split_dir, city, seq, f), rgb)
    # labelIds: every id 0..33 plus 255 somewhere, as an 8-bit grey PNG like the originals.
    ids = rng.permutation(np.r_[np.arange(34), [255] * (CS_H * CS_W - 34)]).astype(np.uint8)
    labels[city, seq, frame] = ids.reshape(CS_H, CS_W)
    png(
      cityscapes_video.label_path(root, split_dir, city, seq, frame), labels[city, seq, frame], "L"
    )
    # The other gtFine files of the frame are present in the archive and must be ignored.
    color = root / "gtFine" / split_dir / city / f"{city}_{seq}_{frame:06d}_gtFine_color.png"
    png(color, np.zeros((CS_H, CS_W, 3), np.uint8))
  return frames, labels


JH_H, JH_W = 12, 16
# action -> [(video, number of frames, membership in split 1)]
JHMDB = {"clap": [("vidA", 5, 1), ("vidB", 4, 2)], "wave": [("vidC", 6, 1)]}


def fake_jhmdb(root, rng, actions=None):
  """Writes `actions` (default JHMDB: action -> [(video, frames, split-1 membership)]) at
  JH_H x JH_W, the last frame of every video with an empty person mask; returns the truth per
  video."""
  truth = {}
  for action, videos in (JHMDB if actions is None else actions).items():
    for split_number in (1, 2, 3):
      lines = [
        f"{video}.avi {which if split_number == 1 else 3 - which}\n" for video, _, which in videos
      ]
      path = root / "splits" / f"{action}_test_split{split_number}.txt"
      os.makedirs(path.parent, exist_ok=True)
      path.write_text("".join(lines))
    for video, n, _ in videos:
      rgb = rng.integers(0, 256, (n, JH_H, JH_W, 3), dtype=np.uint8)
      for f in range(n):
        png(root / "Rename_Images" / action / video / f"{f + 1:05d}.png", rgb[f])
      pos = np.stack([rng.uniform(1, JH_W, (15, n)), rng.uniform(1, JH_H, (15, n))])
      pos[0, 3, 0] = JH_W + 2.0  # right shoulder off the right edge in frame 0
      mask = np.zeros((JH_H, JH_W, n), np.uint8)
      boxes = np.zeros((n, 4), np.float32)
      for f in range(n - 1):  # the last frame's mask is empty
        r0, c0 = rng.integers(0, 5), rng.integers(0, 6)
        r1, c1 = r0 + rng.integers(0, 6), c0 + rng.integers(0, 9)
        mask[r0 : r1 + 1, c0 : c1 + 1, f] = rng.integers(1, 11)  # part labels, any nonzero
        boxes[f] = (c0 - 0.5, r0 - 0.5, c1 + 0.5, r1 + 0.5)
      for sub, name, value in (
        ("joint_positions", "joint_positions", dict(pos_img=pos)),
        ("puppet_mask", "puppet_mask", dict(part_mask=mask)),
      ):
        os.makedirs(root / sub / action / video, exist_ok=True)
        extra = dict(scale=np.ones((1, n)), viewpoint="E") if sub == "joint_positions" else {}
        scipy.io.savemat(root / sub / action / video / f"{name}.mat", {**value, **extra})
      truth[f"{action}/{video}"] = dict(
        frames=rgb,
        joints=pos.transpose(2, 1, 0) - 1,
        bbox=boxes,
        action=jhmdb.ACTIONS.index(action),
      )
  return truth
