"""Two processes on localhost (CPU, gloo collectives) train like one process with the same
devices and global batch: the multi-host path of `resq_jax.training` (distributed init from
the environment, process-local batches, replicated state, synchronised BatchNorm)."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from resq_jax.data import build_synthres

WORKER = os.path.join(os.path.dirname(__file__), "multihost_worker.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(**extra) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  env.update(JAX_PLATFORMS="cpu", **extra)
  return env


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
  data_dir = str(tmp_path / "data")
  build_synthres(
    data_dir,
    regime="slow_pan",
    height=32,
    width=32,
    num_frames=4,
    num_train=16,
    num_validation=8,
    num_test=8,
    verbose=False,
  )
  # Reference: one process with two devices and the whole global batch.
  ref_out = str(tmp_path / "single.npz")
  subprocess.run(
    [sys.executable, WORKER, data_dir, ref_out],
    check=True,
    timeout=300,
    env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"),
  )
  # Two processes of one device each, rendezvous at a local coordinator.
  multi_out = str(tmp_path / "multi.npz")
  coordinator = f"127.0.0.1:{_free_port()}"
  procs = [
    subprocess.Popen(
      [sys.executable, WORKER, data_dir, multi_out],
      env=_env(JAX_COORDINATOR_ADDRESS=coordinator, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  logs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)
  single, multi = np.load(ref_out), np.load(multi_out)
  assert (int(single["devices"]), int(single["processes"])) == (2, 1)
  assert (int(multi["devices"]), int(multi["processes"])) == (2, 2)
  np.testing.assert_allclose(multi["losses"], single["losses"], rtol=1e-5)
  assert single["losses"][-1] < single["losses"][0]  # it trained
  params = [k for k in single.files if k not in ("losses", "devices", "processes")]
  assert len(params) > 10
  for key in params:
    np.testing.assert_allclose(multi[key], single[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_distributed_env_reads_the_launcher_variables():
  from resq_jax.training.parallel import distributed_env

  env = {
    "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
    "JAX_NUM_PROCESSES": "4",
    "JAX_PROCESS_ID": "3",
  }
  assert distributed_env(env) == dict(
    coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3
  )
  assert distributed_env({}) == {}
  with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
    distributed_env({"JAX_PROCESS_ID": "first"})
