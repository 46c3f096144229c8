"""Real-dataset builders on tiny fake copies written here in the official on-disk layouts.

Each test writes a few sequences of small images (and .mat files, palette PNGs, split files)
exactly where the official archives put them, builds with the TFDS builder into a temporary
directory, reads the records back through `tfds.data_source` (no TensorFlow) and compares them
with what it wrote.
"""

import os
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from fake_real_data import CITYSCAPES as _CITYSCAPES
from fake_real_data import CS_H as _CS_H
from fake_real_data import CS_W as _CS_W
from fake_real_data import JH_H as _JH_H
from fake_real_data import JH_W as _JH_W
from fake_real_data import fake_cityscapes as _fake_cityscapes
from fake_real_data import fake_jhmdb as _fake_jhmdb
from fake_real_data import png as _png
from PIL import Image

from resq_jax.data import build as build_cli
from resq_jax.data import cityscapes_video, davis, jhmdb, manual


def _read(builder, data_dir):
  name = f"{builder.name}/{builder.builder_config.name}"
  return tfds.data_source(name, data_dir=os.fspath(data_dir), download=False)


def _records(source, key):
  """split -> [(example[key] decoded, example)] in record order."""
  return {
    split: [(ex[key].decode(), ex) for ex in (source[split][i] for i in range(len(source[split])))]
    for split in source
  }


# --- Cityscapes ------------------------------------------------------------------------------
def test_cityscapes_label_table_matches_cityscapesscripts():
  table = cityscapes_video.LABEL_TO_TRAIN_ID
  # labels.py: road 7 -> 0, sidewalk 8 -> 1, building 11 -> 2, ..., bicycle 33 -> 18.
  expected = {
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
  for label_id in range(256):
    assert table[label_id] == expected.get(label_id, 255), label_id
  assert len(cityscapes_video.CLASS_NAMES) == 19
  assert cityscapes_video.CLASS_NAMES[13] == "car"


def test_cityscapes_video_clips_end_at_the_annotated_frame(tmp_path):
  root = tmp_path / "cityscapes"
  frames, labels = _fake_cityscapes(root, np.random.default_rng(0))
  builder = cityscapes_video.build_cityscapes_video(
    tmp_path / "data", root, height=_CS_H, width=_CS_W, num_frames=3, verbose=False
  )
  source = _read(builder, tmp_path / "data")
  assert {k: len(v) for k, v in source.items()} == {"train": 2, "validation": 1}
  got = [source["train"][0], source["train"][1], source["validation"][0]]
  for example, (_, city, seq, frame) in zip(got, _CITYSCAPES):
    assert example["id"] == f"{city}_{seq}_{frame:06d}".encode()
    np.testing.assert_array_equal(example["frame_ids"], [frame - 2, frame - 1, frame])
    assert example["annotated_index"] == 2
    for t, f in enumerate(example["frame_ids"]):
      np.testing.assert_array_equal(example["frames"][t], frames[city, seq, f])
    np.testing.assert_array_equal(
      example["semantic"], cityscapes_video.LABEL_TO_TRAIN_ID[labels[city, seq, frame]]
    )
    assert example["semantic"].dtype == np.uint8
    assert set(np.unique(example["semantic"])) == set(range(19)) | {255}
  # Idempotent: a second call finds the build.
  again = cityscapes_video.build_cityscapes_video(
    tmp_path / "data", root, height=_CS_H, width=_CS_W, num_frames=3, verbose=False
  )
  assert again.is_prepared()
  assert "tensorflow" not in sys.modules


def test_cityscapes_resize_and_bad_settings(tmp_path):
  root = tmp_path / "cityscapes"
  rng = np.random.default_rng(1)
  _, labels = _fake_cityscapes(root, rng)
  # Labels made of 2x2 blocks shrink exactly by nearest neighbour.
  split_dir, city, seq, frame = _CITYSCAPES[2]
  blocks = rng.integers(0, 34, (_CS_H // 2, _CS_W // 2)).astype(np.uint8)
  _png(
    cityscapes_video.label_path(root, split_dir, city, seq, frame),
    np.kron(blocks, np.ones((2, 2), np.uint8)),
    "L",
  )
  builder = cityscapes_video.build_cityscapes_video(
    tmp_path / "data", root, height=_CS_H // 2, width=_CS_W // 2, num_frames=20, verbose=False
  )
  example = _read(builder, tmp_path / "data")["validation"][0]
  assert example["frames"].shape == (20, _CS_H // 2, _CS_W // 2, 3)
  np.testing.assert_array_equal(example["frame_ids"], np.arange(frame - 19, frame + 1))
  np.testing.assert_array_equal(example["semantic"], cityscapes_video.LABEL_TO_TRAIN_ID[blocks])
  with pytest.raises(ValueError, match="num_frames must be <= 20"):
    cityscapes_video.make_config(num_frames=21)
  with pytest.raises(FileNotFoundError, match="gtFine"):
    cityscapes_video.build_cityscapes_video(tmp_path / "d2", tmp_path, verbose=False)


# --- JHMDB -----------------------------------------------------------------------------------
def test_jhmdb_whole_videos_joints_boxes_and_splits(tmp_path, monkeypatch):
  # A tiny spill limit: the split goes through TFDS's temporary buckets (tf_free_spill).
  from tensorflow_datasets.core import shuffle

  monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 1000)
  root = tmp_path / "jhmdb"
  truth = _fake_jhmdb(root, np.random.default_rng(2))
  builder = jhmdb.build_jhmdb(
    tmp_path / "data", root, height=_JH_H, width=_JH_W, verbose=False, num_workers=2
  )
  records = _records(_read(builder, tmp_path / "data"), "video")
  videos = {split: [name for name, _ in recs] for split, recs in records.items()}
  assert videos == {"train": ["clap/vidA", "wave/vidC"], "test": ["clap/vidB"]}
  for recs in records.values():
    for name, example in recs:
      want = truth[name]
      n = len(want["frames"])
      np.testing.assert_array_equal(example["frames"], want["frames"])
      np.testing.assert_allclose(example["joints"], want["joints"], atol=1e-5)
      assert example["joints"].dtype == np.float32 and example["joints"].shape == (n, 15, 2)
      np.testing.assert_array_equal(example["bbox"], want["bbox"])
      np.testing.assert_array_equal(example["frame_index"], np.arange(n))
      assert example["action"] == want["action"]
      visible = example["joint_visible"]
      assert visible.shape == (n, 15)
      assert not visible[0, 3] and visible.sum() == visible.size - 1
  # Split 2 swaps train and test in the fake split files.
  split2 = jhmdb.build_jhmdb(
    tmp_path / "data", root, height=_JH_H, width=_JH_W, split_number=2, verbose=False
  )
  s2 = _read(split2, tmp_path / "data")
  assert [s2["train"][0]["video"], len(s2["test"])] == [b"clap/vidB", 2]
  assert "tensorflow" not in sys.modules


def test_jhmdb_clips_and_resize(tmp_path):
  root = tmp_path / "jhmdb"
  truth = _fake_jhmdb(root, np.random.default_rng(3))
  builder = jhmdb.build_jhmdb(
    tmp_path / "data",
    root,
    height=2 * _JH_H,
    width=2 * _JH_W,
    num_frames=2,
    stride=2,
    verbose=False,
  )
  train = _read(builder, tmp_path / "data")["train"]
  # vidA (5 frames) -> frames 0-1, 2-3; vidC (6 frames) -> 0-1, 2-3, 4-5.
  got = [(train[i]["video"].decode(), train[i]["frame_index"].tolist()) for i in range(len(train))]
  assert got == [
    ("clap/vidA", [0, 1]),
    ("clap/vidA", [2, 3]),
    ("wave/vidC", [0, 1]),
    ("wave/vidC", [2, 3]),
    ("wave/vidC", [4, 5]),
  ]
  example, want = train[1], truth["clap/vidA"]
  assert example["frames"].shape == (2, 2 * _JH_H, 2 * _JH_W, 3)
  # Doubling the size: u' = (u + 0.5) * 2 - 0.5 for joints and box edges alike.
  np.testing.assert_allclose(example["joints"], (want["joints"][2:4] + 0.5) * 2 - 0.5, atol=1e-4)
  np.testing.assert_allclose(example["bbox"], (want["bbox"][2:4] + 0.5) * 2 - 0.5)


# --- DAVIS 2017 ------------------------------------------------------------------------------
_DV_H, _DV_W = 8, 12
# sequence -> (number of frames, number of objects, split file)
_DAVIS = {"bear": (3, 1, "train"), "dogs-jump": (4, 3, "val"), "camel": (2, 1, "train")}


def _palette():
  # The DAVIS palette: black background, then the PASCAL VOC colours.
  pal = np.zeros((256, 3), np.uint8)
  for i in range(256):
    c, r, g, b = i, 0, 0, 0
    for j in range(8):
      r |= ((c >> 0) & 1) << (7 - j)
      g |= ((c >> 1) & 1) << (7 - j)
      b |= ((c >> 2) & 1) << (7 - j)
      c >>= 3
    pal[i] = (r, g, b)
  return pal.reshape(-1).tolist()


def _fake_davis(root, rng):
  truth = {}
  for split in ("train", "val"):
    names = [s for s, (_, _, sp) in _DAVIS.items() if sp == split]
    path = root / "ImageSets" / "2017" / f"{split}.txt"
    os.makedirs(path.parent, exist_ok=True)
    path.write_text("".join(f"{s}\n" for s in names))
  for seq, (n, num_objects, _) in _DAVIS.items():
    masks = rng.integers(0, num_objects + 1, (n, _DV_H, _DV_W)).astype(np.uint8)
    masks[0, 0, : num_objects + 1] = np.arange(num_objects + 1)  # every id in frame 0
    masks[:, -1, -1] = 255  # void
    for f in range(n):
      # Constant colours survive JPEG; the colour encodes the frame number.
      rgb = np.full((_DV_H, _DV_W, 3), (20 * f + 10, 100, 200), np.uint8)
      os.makedirs(root / "JPEGImages" / "480p" / seq, exist_ok=True)
      Image.fromarray(rgb).save(root / "JPEGImages" / "480p" / seq / f"{f:05d}.jpg", quality=95)
      png = Image.fromarray(masks[f], "P")
      png.putpalette(_palette())
      os.makedirs(root / "Annotations" / "480p" / seq, exist_ok=True)
      png.save(root / "Annotations" / "480p" / seq / f"{f:05d}.png")
    truth[seq] = dict(masks=masks, num_objects=num_objects)
  return truth


def test_davis2017_masks_object_ids_and_frame_order(tmp_path):
  root = tmp_path / "DAVIS"
  truth = _fake_davis(root, np.random.default_rng(4))
  # Palette PNGs store indices: reading them must give ids, not colours.
  assert Image.open(root / "Annotations" / "480p" / "bear" / "00000.png").mode == "P"
  builder = davis.build_davis2017(tmp_path / "data", root, height=_DV_H, width=_DV_W, verbose=False)
  records = _records(_read(builder, tmp_path / "data"), "sequence")
  seqs = {split: [name for name, _ in recs] for split, recs in records.items()}
  assert seqs == {"train": ["bear", "camel"], "validation": ["dogs-jump"]}
  for recs in records.values():
    for name, example in recs:
      want = truth[name]
      n = len(want["masks"])
      np.testing.assert_array_equal(example["masks"], want["masks"])
      assert example["num_objects"] == want["num_objects"]
      np.testing.assert_array_equal(example["frame_index"], np.arange(n))
      red = example["frames"][..., 0].reshape(n, -1)
      np.testing.assert_allclose(red.mean(axis=1), 20 * np.arange(n) + 10, atol=3)
  clips = davis.build_davis2017(
    tmp_path / "data",
    root,
    height=_DV_H // 2,
    width=_DV_W // 2,
    num_frames=2,
    stride=1,
    verbose=False,
  )
  val = _read(clips, tmp_path / "data")["validation"]
  assert [val[i]["frame_index"].tolist() for i in range(len(val))] == [[0, 1], [1, 2], [2, 3]]
  assert val[0]["masks"].shape == (2, _DV_H // 2, _DV_W // 2)
  assert set(np.unique(val[0]["masks"])) <= {0, 1, 2, 3, 255}
  assert "tensorflow" not in sys.modules


# --- Shared pieces and the command -----------------------------------------------------------
def test_windows_keys_and_box_helpers():
  assert manual.windows(5, 0, 0) == [range(5)]
  assert manual.windows(5, 2, 2) == [range(0, 2), range(2, 4)]
  assert manual.windows(3, 4, 4) == []
  keys = [manual.ordered_key(i, 3, j) for i in range(3) for j in range(2)]
  assert keys == sorted(keys) and keys[-1] < 2**128
  mask = np.zeros((5, 6), bool)
  mask[1:3, 2] = True
  np.testing.assert_array_equal(manual.mask_bbox(mask), [1.5, 0.5, 2.5, 2.5])
  np.testing.assert_array_equal(manual.mask_bbox(np.zeros((3, 3))), np.zeros(4))


def test_build_command(tmp_path, capsys):
  root = tmp_path / "DAVIS"
  _fake_davis(root, np.random.default_rng(5))
  args = [
    "--dataset",
    "davis2017",
    "--manual_dir",
    str(root),
    "--data_dir",
    str(tmp_path / "data"),
    "--height",
    str(_DV_H),
    "--width",
    str(_DV_W),
    "--num_frames",
    "2",
  ]
  assert build_cli.main(args) == 0
  out = capsys.readouterr().out
  assert "davis2017/480p_8x12_t2s2" in out and "'train': 2" in out
  assert "train: 2/2 items" in out  # progress
  assert build_cli.main([*args, "--split_number", "2"]) == 2
  assert (
    build_cli.main(
      ["--dataset", "jhmdb", "--manual_dir", str(root), "--data_dir", str(tmp_path / "data")]
    )
    == 1
  )
  assert "Rename_Images" in capsys.readouterr().err
