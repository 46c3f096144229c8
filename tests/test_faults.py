"""Faults through the real entry points: SIGKILL keeps the logged rows, SIGTERM saves and exits
75 (no evaluation), known failures print one line with their exit code, the demo stops."""

import glob
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from resq_jax import errors
from resq_jax.experiment import demo, schema, train
from resq_jax.training import checkpoint_files

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _rows(workdir) -> list[dict]:
  path = pathlib.Path(workdir) / "train_metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines()]


def _tensorboard_steps(workdir) -> set[int]:
  from tensorboardX.proto.event_pb2 import Event  # pylint: disable=import-outside-toplevel

  steps = set()
  for path in glob.glob(str(pathlib.Path(workdir) / "tensorboard" / "train" / "events.*")):
    data = pathlib.Path(path).read_bytes()
    offset = 0
    while offset + 12 <= len(data):
      length = int.from_bytes(data[offset : offset + 8], "little")
      if offset + 12 + length + 4 > len(data):
        break
      event = Event.FromString(data[offset + 12 : offset + 12 + length])
      if event.summary.value:
        steps.add(event.step)
      offset += 12 + length + 4
  return steps


def _train(workdir, data_dir):
  """train.py on configs/tiny.py for 200 steps (far more than the test lets it run)."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)
  cmd = [
    sys.executable,
    str(ROOT / "train.py"),
    "--config",
    str(ROOT / "configs" / "tiny.py"),
    "--workdir",
    str(workdir),
    f"--config.data.data_dir={data_dir}",
    "--config.train.num_steps=200",
    "--config.train.log_every=1",
    "--config.train.checkpoint_every=2",
  ]
  return subprocess.Popen(
    cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )


def _wait_for(predicate, proc, timeout=240.0):
  deadline = time.monotonic() + timeout
  while not predicate():
    if proc.poll() is not None:
      out, err = proc.communicate()
      pytest.fail(f"train.py ended early with {proc.returncode}:\n{out[-2000:]}\n{err[-3000:]}")
    if time.monotonic() > deadline:
      proc.kill()
      pytest.fail("timed out")
    time.sleep(0.05)


def test_sigkill_keeps_logged_rows_and_sigterm_saves_and_exits_75(tmp_path):
  workdir, data_dir = tmp_path / "run", tmp_path / "data"
  ckpt_dir = pathlib.Path(checkpoint_files.checkpoint_dir(workdir))

  # 1. SIGKILL once step 4 is committed: every row logged before it must be in the file (the
  #    row of a step is written before its checkpoint), and TensorBoard flushed at step 2.
  proc = _train(workdir, data_dir)
  _wait_for(lambda: (ckpt_dir / "4").is_dir(), proc)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  rows = _rows(workdir)
  steps = [r["step"] for r in rows]
  assert steps[:4] == [1, 2, 3, 4] and steps == list(range(1, len(steps) + 1))
  assert {1, 2} <= _tensorboard_steps(workdir)

  # 2. Rerun; SIGTERM once it trains past the resumed step: it saves the step it reached,
  #    skips the evaluation and exits 75 with one line and no traceback.
  resumed_from = max(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
  before = len(rows)
  proc = _train(workdir, data_dir)
  _wait_for(lambda: any(r["step"] > resumed_from + 1 for r in _rows(workdir)[before:]), proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=240)
  assert proc.returncode == errors.EXIT_PREEMPTED, err[-3000:]
  saved = max(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
  assert f"preempted: saved step {saved} " in err and "Traceback" not in err
  assert saved == _rows(workdir)[-1]["step"] < 200
  assert checkpoint_files.damage_of(ckpt_dir / str(saved)) is None
  assert (ckpt_dir / str(saved) / checkpoint_files.CHECKSUM_FILE).is_file()
  assert not (workdir / "eval_metrics.json").exists()
  assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == 200


@pytest.mark.parametrize(
  "exc, code, line",
  [
    (errors.CheckpointError("no intact checkpoint in x"), 3, "error: no intact checkpoint in x"),
    (
      errors.NonFiniteError("non-finite training at step 3"),
      4,
      "error: non-finite training at step 3",
    ),
    (errors.PreemptedError("preempted: saved step 6"), 75, "preempted: saved step 6"),
    (errors.DataError("validation split: truncated"), 5, "error: validation split: truncated"),
    (
      errors.InvalidConfigError("invalid config:\n  - a\n  - b"),
      2,
      "config error: a\nconfig error: b",
    ),
  ],
)
def test_run_cli_prints_one_line_and_exits_with_the_failure_code(exc, code, line, capsys):
  def fail():
    raise exc

  with pytest.raises(SystemExit) as info:
    errors.run_cli(fail)
  assert info.value.code == code
  captured = capsys.readouterr()
  assert captured.err.strip() == line


def test_run_cli_lets_bugs_through_and_returns_results():
  assert errors.run_cli(lambda x: x + 1, 1) == 2
  with pytest.raises(KeyError):
    errors.run_cli(lambda: {}["missing"])


def test_demo_stops_at_a_preempted_stage(monkeypatch, tmp_path):
  calls = []

  def fake_train(config, workdir, **kwargs):
    calls.append(pathlib.Path(workdir).name)
    raise errors.PreemptedError("preempted: saved step 3")

  monkeypatch.setattr(train, "train_and_evaluate", fake_train)
  base = schema.default_config()
  with pytest.raises(errors.PreemptedError):
    demo.run_demo(base, str(tmp_path), qat_stages={"qat_fq": {"mode": "fq"}}, qat_lr=1e-4)
  assert calls == ["fp"]  # no QAT stage starts from the half-trained FP run


_DAMAGED_RESUME = """
import pathlib, sys
import jax.numpy as jnp
from resq_jax.experiment import log
from resq_jax.training import Checkpointer

log.setup()  # quiet mode, as train.py runs without --verbose
directory = pathlib.Path(sys.argv[1])
with Checkpointer(directory, save_every_steps=1, async_save=False) as ckpt:
  ckpt.save(1, {"w": jnp.zeros(8)})
  ckpt.save(2, {"w": jnp.ones(8)})
data = max((p for p in (directory / "2").rglob("*") if p.is_file() and "ocdbt.process" in str(p)),
           key=lambda p: p.stat().st_size)
blob = bytearray(data.read_bytes())
blob[len(blob) // 2] ^= 0xFF
data.write_bytes(bytes(blob))
with Checkpointer(directory, save_every_steps=1, async_save=False) as ckpt:
  restored = ckpt.restore_latest({"w": jnp.zeros(8)})
print("restored sum", float(restored["w"].sum()))
"""


def test_a_damaged_checkpoint_and_the_step_resumed_from_are_printed_in_quiet_mode(tmp_path):
  """The warning about a damaged newest step and the 'resuming from step N' line are the
  project's own lines (logger ``resq_jax.training.checkpoint``): quiet mode prints them, and
  nothing else (no Orbax or absl line), where absl's logging would have been silenced."""
  directory = tmp_path / "ckpt"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
    [sys.executable, "-c", _DAMAGED_RESUME, str(directory)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  (moved,) = (directory / checkpoint_files.DAMAGED_DIR).iterdir()
  damage = checkpoint_files.damage_of(moved)  # what is wrong, as the checker sees it
  assert moved.name.startswith("2-") and damage.endswith("does not match its checksum")
  assert proc.stdout.splitlines() == [
    f"checkpoint step 2 in {directory} is damaged ({damage}): moved to {moved.parent}/",
    f"resuming from step 1 in {directory}",
    "restored sum 0.0",  # step 1's zeros, not the damaged step 2's ones
  ]
  assert proc.stderr == ""
