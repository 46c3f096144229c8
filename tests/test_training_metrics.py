"""Metric writers: what is read back from JSONL and TensorBoard files equals what was logged."""

import glob
import json
import math
import os
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.record_writer import masked_crc32c

from resq_jax.training import metrics as metrics_lib

# Values exactly representable in float32, so TensorBoard's float32 simple_value is exact too.
LOGGED = [
  (1, {"loss": jnp.float32(0.5), "acc": np.float64(0.25), "count": jnp.int32(7)}),
  (2, {"loss": 0.125, "acc": jnp.asarray([0.75], jnp.float32), "count": 9}),
]
EXPECTED = [
  {"step": 1, "loss": 0.5, "acc": 0.25, "count": 7},
  {"step": 2, "loss": 0.125, "acc": 0.75, "count": 9},
]


def _read_jsonl(path) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _read_tfrecords(path) -> list[bytes]:
  """Minimal TFRecord reader: [u64 len][u32 masked crc(len)][data][u32 masked crc(data)]."""
  records = []
  with open(path, "rb") as f:
    while header := f.read(8):
      (length,) = struct.unpack("<Q", header)
      (len_crc,) = struct.unpack("<I", f.read(4))
      data = f.read(length)
      (data_crc,) = struct.unpack("<I", f.read(4))
      assert len_crc == masked_crc32c(header) and data_crc == masked_crc32c(data)
      records.append(data)
  return records


def _read_tensorboard_scalars(logdir) -> list[dict]:
  """Event files in `logdir` -> one {"step", tag: value, ...} dict per step, in step order."""
  by_step: dict[int, dict] = {}
  for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    for record in _read_tfrecords(path):
      event = Event.FromString(record)
      for value in event.summary.value:
        by_step.setdefault(event.step, {"step": event.step})[value.tag] = value.simple_value
  return [by_step[s] for s in sorted(by_step)]


def test_jsonl_lines_equal_the_logged_values_and_resume_appends(tmp_path):
  path = tmp_path / "sub" / "train_metrics.jsonl"
  with metrics_lib.JsonlWriter(path) as writer:
    for step, scalars in LOGGED:
      writer.write_scalars(step, scalars)
  records = _read_jsonl(path)
  assert records == EXPECTED
  assert all(isinstance(r["count"], int) for r in records)

  with metrics_lib.JsonlWriter(path) as writer:  # a resumed run appends
    writer.write_scalars(3, {"loss": float("nan")})
  last = _read_jsonl(path)[-1]
  assert last["step"] == 3 and math.isnan(last["loss"])
  assert len(_read_jsonl(path)) == 3


def test_non_scalar_metric_is_rejected(tmp_path):
  with metrics_lib.JsonlWriter(tmp_path / "m.jsonl") as writer:
    with pytest.raises(ValueError, match="not a scalar"):
      writer.write_scalars(0, {"v": jnp.zeros((2,), jnp.float32)})


def test_tensorboard_events_read_back_equal_the_logged_values(tmp_path):
  with metrics_lib.TensorBoardWriter(tmp_path) as writer:
    for step, scalars in LOGGED:
      writer.write_scalars(step, scalars)
  assert _read_tensorboard_scalars(tmp_path) == EXPECTED


def test_default_writer_fans_out_to_jsonl_and_tensorboard(tmp_path):
  writer = metrics_lib.create_default_writer(tmp_path, name="eval")
  for step, scalars in LOGGED:
    writer.write_scalars(step, scalars)
  writer.flush()
  assert _read_jsonl(tmp_path / "eval_metrics.jsonl") == EXPECTED
  writer.close()
  assert _read_tensorboard_scalars(tmp_path / "tensorboard" / "eval") == EXPECTED


def test_jsonl_rows_reach_the_file_as_written_without_flush_or_close(tmp_path):
  """What a SIGKILL leaves: the rows written so far, although the writer was never closed."""
  path = tmp_path / "train_metrics.jsonl"
  writer = metrics_lib.JsonlWriter(path)
  for i, (step, scalars) in enumerate(LOGGED):
    writer.write_scalars(step, scalars)
    assert _read_jsonl(path) == EXPECTED[: i + 1]
  writer.close()
