"""configs/cityscapes.py and configs/jhmdb.py end to end on tiny fake copies of the real
datasets (tests/fake_real_data.py): built with the builders of resq_jax.data at 32x32 with
2-frame clips, trained for 2 steps and evaluated through train_lib with the tiny model, and the
metrics checked against oracles (Cityscapes: mIoU over the annotated frame only; JHMDB: PCK
with the builder's person boxes). A missing build exits 5 naming the build command.
"""

import importlib.util
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from fake_real_data import fake_cityscapes, fake_jhmdb

from resq_jax import errors
from resq_jax.data import cityscapes_video, jhmdb
from resq_jax.experiment import inputs, parse, train

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE, FRAMES, BATCH = 32, 2, 8  # 8 clips a batch: one per virtual device

# 8 training and 8 validation snippets (one clip each).
CITYSCAPES = [("train", "aachen", f"{i:06d}", 19) for i in range(8)] + [
  ("val", "frankfurt", f"{i:06d}", 19 + 30 * i) for i in range(8)
]
# 4 training and 4 test videos of 4 frames: 2 clips of 2 frames each, 8 clips per split.
JHMDB = {
  "clap": [("v1", 4, 1), ("v2", 4, 1), ("v3", 4, 2), ("v4", 4, 2)],
  "wave": [("v5", 4, 1), ("v6", 4, 1), ("v7", 4, 2), ("v8", 4, 2)],
}


def load_config(name, stage, **overrides):
  """``--config=configs/<name>.py:<stage>``, shrunk to the fake datasets."""
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(stage)
  tiny = {
    "data.height": SIZE,
    "data.width": SIZE,
    "data.num_frames": FRAMES,
    "data.batch_size": BATCH,
    "model.preset": "tiny",
    "quant.period": 2,
    "calibration.num_batches": 1,
    "train.num_steps": 2,
    "train.log_every": 1,
    "train.checkpoint_every": 2,
    "optim.warmup_steps": 0,
    "eval.batch_size": BATCH,
    "eval.plots": False,
    "eval.sweep": "tiny",  # periods up to 2, the shrunk clips' length
  }
  for key, value in {**tiny, **overrides}.items():
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
  for key in ("weight", "key_act", "residual_act", "residual_weight"):
    config.calibration[key] = "minmax"
  return config


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """Both fake datasets written and built into one data directory."""
  tmp = tmp_path_factory.mktemp("real")
  data_dir = tmp / "data"
  fake_cityscapes(tmp / "cityscapes", np.random.default_rng(0), CITYSCAPES)
  cityscapes_video.build_cityscapes_video(
    data_dir, tmp / "cityscapes", height=SIZE, width=SIZE, num_frames=FRAMES, verbose=False
  )
  fake_jhmdb(tmp / "jhmdb", np.random.default_rng(1), JHMDB)
  jhmdb.build_jhmdb(
    data_dir, tmp / "jhmdb", height=SIZE, width=SIZE, num_frames=FRAMES, verbose=False
  )
  return str(data_dir)


def records(data_dir, name, split):
  source = tfds.data_source(name, data_dir=data_dir, download=False)[split]
  return [source[i] for i in range(len(source))]


def test_cityscapes_trains_and_scores_the_annotated_frame_only(built, tmp_path):
  experiment = parse.parse(load_config("cityscapes", "fp", **{"data.data_dir": built}))
  task, data = experiment.task, experiment.data
  assert task.num_outputs() == cityscapes_video.NUM_CLASSES == 19
  (batch,) = inputs.eval_batches(data, batch_size=BATCH, num_batches=1)
  assert sorted(batch) == ["frames", "semantic"]
  raw = records(built, f"cityscapes_video/{SIZE}x{SIZE}x{FRAMES}", "validation")
  np.testing.assert_array_equal(batch["frames"], np.stack([r["frames"] for r in raw]))
  np.testing.assert_array_equal(batch["semantic"][:, -1], np.stack([r["semantic"] for r in raw]))
  assert np.all(batch["semantic"][:, :-1] == 255)  # the unlabelled frames are ignored
  frames, labels = task.prepare(batch)
  assert frames.shape == (BATCH, FRAMES, SIZE, SIZE, 3) and labels.shape == frames.shape[:-1]

  # Oracle: logits equal to the ground truth on the annotated frame give mIoU 1 and loss ~0,
  # whatever the other frames show; a wrong annotated frame does not.
  rng = np.random.default_rng(0)
  noise = jnp.asarray(rng.normal(size=(*labels.shape, 19)) * 10, jnp.float32)
  truth = 100 * jax.nn.one_hot(jnp.where(labels == 255, 0, labels), 19, dtype=jnp.float32)
  last = (jnp.arange(FRAMES) == FRAMES - 1)[None, :, None, None, None]
  outputs = jnp.where(last, truth, noise)
  accumulator = task.new_accumulator()
  accumulator.update(np.asarray(task.predict(outputs)), np.asarray(labels))
  assert accumulator.result()["miou"] == 1.0
  assert float(task.loss(outputs, labels)[0]) < 1e-6
  shifted = jnp.where(last, jnp.roll(truth, 1, axis=-1), noise)
  accumulator = task.new_accumulator()
  accumulator.update(np.asarray(task.predict(shifted)), np.asarray(labels))
  assert accumulator.result()["miou"] == 0.0

  fp = train.train_and_evaluate(experiment, str(tmp_path / "fp")).to_row()
  assert 0.0 <= fp["miou"] <= 1.0 and fp["source"] == "fp"
  assert len(fp["per_class_iou"]) == 19
  # The QAT configs read the same build (their runs take as long again: not run here).
  qat = load_config("cityscapes", "qat_resq", **{"data.data_dir": built})
  assert parse.parse(qat).data == data


def test_jhmdb_trains_and_scores_pck_with_the_builders_boxes(built, tmp_path):
  experiment = parse.parse(load_config("jhmdb", "fp", **{"data.data_dir": built}))
  task, data = experiment.task, experiment.data
  assert experiment.eval.split == "test" and task.num_outputs() == 15
  (batch,) = inputs.eval_batches(data, batch_size=BATCH, num_batches=1, split="test")
  assert sorted(batch) == ["bbox", "frames", "joint_visible", "joints"]
  raw = records(built, f"jhmdb/split1_{SIZE}x{SIZE}_t{FRAMES}s{FRAMES}", "test")
  for key in batch:
    np.testing.assert_array_equal(batch[key], np.stack([r[key] for r in raw]))
  _, targets = task.prepare(batch)

  # Oracle: PCK@0.2 thresholds 0.2 * max(w, h) of the builder's box, per frame; frames whose
  # box is empty (the fake's last frame of each video) are not evaluated.
  bbox = np.stack([r["bbox"] for r in raw])
  size = np.maximum(bbox[..., 2] - bbox[..., 0], bbox[..., 3] - bbox[..., 1])
  threshold = 0.2 * size[..., None, None]  # [B, T, 1, 1]
  visible = np.stack([r["joint_visible"] for r in raw])
  joints = np.stack([r["joints"] for r in raw])
  evaluated = int((visible & (size[..., None] > 0)).sum())
  assert 0 < evaluated < visible.sum()
  for scale, pck in ((0.5, 1.0), (1.5, 0.0)):
    accumulator = task.new_accumulator()
    accumulator.update(joints + scale * threshold * np.array([1.0, 0.0]) + 0.01 * scale, targets)
    result = accumulator.result()
    assert result["pck"] == pck and result["joints_evaluated"] == evaluated

  row = train.train_and_evaluate(experiment, str(tmp_path / "fp")).to_row()
  assert row["source"] == "fp" and 0.0 <= row["pck"] <= 1.0 and not math.isnan(row["pck"])


def test_missing_build_exits_5_with_the_build_command(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)
  run = subprocess.run(
    [
      sys.executable,
      str(ROOT / "train.py"),
      "--config",
      f"{ROOT / 'configs' / 'jhmdb.py'}:fp",
      "--workdir",
      str(tmp_path / "run"),
      f"--config.data.data_dir={tmp_path / 'empty'}",
    ],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert run.returncode == errors.EXIT_DATA == 5, run.stderr[-2000:]
  assert (
    f"python -m resq_jax.data.build --dataset jhmdb --manual_dir <the unpacked download> "
    f"--data_dir {tmp_path / 'empty'} --height 128 --width 160 --num_frames 8" in run.stderr
  )
  assert "split1_128x160_t8s8" in run.stderr
