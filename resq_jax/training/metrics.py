"""Scalar metric writers: JSONL and TensorBoard event files, without TensorFlow.

`clu.metric_writers` needs TensorFlow, hence these small writers. Every writer takes
`write_scalars(step, {name: scalar})`, where a scalar is a Python number, a NumPy scalar or a
one-element (jax) array; values are fetched to the host and converted to Python numbers once.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from tensorboardX import SummaryWriter


def to_python_scalars(scalars: Mapping[str, Any]) -> dict[str, int | float]:
  """{name: scalar-like} -> {name: int | float} (bool and integer dtypes stay int).

  Raises:
    ValueError: a value has more than one element.
  """
  host = jax.device_get(dict(scalars))  # one transfer for all values
  out: dict[str, int | float] = {}
  for name, value in host.items():
    arr = np.asarray(value)
    if arr.size != 1:
      raise ValueError(f"metric {name!r} is not a scalar: shape {arr.shape}")
    item = arr.reshape(()).item()
    out[name] = int(item) if isinstance(item, (bool, int)) else float(item)
  return out


class MetricWriter(abc.ABC):
  """Interface shared by the writers below."""

  @abc.abstractmethod
  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Records `scalars` (name -> scalar-like) at `step`."""

  def flush(self) -> None:  # noqa: B027 (optional hook: writers without a buffer keep it)
    """Pushes buffered records to disk."""

  def close(self) -> None:  # noqa: B027 (optional hook)
    """Flushes and releases the underlying file(s); the writer is unusable afterwards."""

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()


class JsonlWriter(MetricWriter):
  """Appends one JSON object per call, `{"step": step, name: value, ...}`, to a file.

  Appending (not truncating) keeps the history of a run that is resumed in the same workdir;
  readers keep the last record of a step that appears twice. Non-finite floats are written as
  Python's json does (`NaN`, `Infinity`), which `json.loads` reads back.

  Every row is flushed to the operating system when written, so a killed process (SIGKILL,
  out of memory) loses no row; `fsync=True` also forces it to the disk (power loss), at the
  cost of a disk round trip per row.
  """

  def __init__(self, path: str | os.PathLike, *, fsync: bool = False):
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    self._file = open(path, "a", encoding="utf-8")
    self._fsync = fsync

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    record = {"step": int(step), **to_python_scalars(scalars)}
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._fsync:
      os.fsync(self._file.fileno())

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()


class TensorBoardWriter(MetricWriter):
  """Scalars as TensorBoard `simple_value` summaries through tensorboardX (no TensorFlow).

  Events are buffered and written every `flush_secs` or on `flush()`; `train_lib` flushes
  at every checkpoint, so a killed run loses at most the events since its last checkpoint
  (the JSONL file holds every row).
  """

  def __init__(self, logdir: str | os.PathLike, *, flush_secs: int = 30):
    self._writer = SummaryWriter(logdir=os.fspath(logdir), flush_secs=flush_secs)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for name, value in to_python_scalars(scalars).items():
      self._writer.add_scalar(name, value, global_step=int(step))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class MultiWriter(MetricWriter):
  """Forwards every call to each of `writers`, in order."""

  def __init__(self, writers: Sequence[MetricWriter]):
    self._writers = list(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    scalars = to_python_scalars(scalars)  # convert (and fetch from device) once
    for w in self._writers:
      w.write_scalars(step, scalars)

  def flush(self) -> None:
    for w in self._writers:
      w.flush()

  def close(self) -> None:
    for w in self._writers:
      w.close()


class _NullWriter(MetricWriter):
  """Accepts and drops everything (non-primary processes)."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    del step, scalars


def create_default_writer(
  workdir: str | os.PathLike, *, name: str = "train", primary_only: bool = True
) -> MetricWriter:
  """`<workdir>/<name>_metrics.jsonl` plus TensorBoard events in `<workdir>/tensorboard/<name>`.

  With `primary_only` (default) only process 0 writes, since the metrics of the step are
  already averaged over all devices of all processes; other processes get a writer that drops
  everything.
  """
  if primary_only and jax.process_index() != 0:
    return _NullWriter()
  workdir = os.fspath(workdir)
  return MultiWriter(
    [
      JsonlWriter(os.path.join(workdir, f"{name}_metrics.jsonl")),
      TensorBoardWriter(os.path.join(workdir, "tensorboard", name)),
    ]
  )
