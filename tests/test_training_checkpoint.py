"""Checkpointer: exact round trips, keep-N, resume, preemption, read-only init_from, bad dirs."""

import hashlib
import json
import os
import shutil
import signal

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resq_jax import errors
from resq_jax.training import checkpoint as ckpt_lib
from resq_jax.training import checkpoint_files, checkpoint_reader
from resq_jax.training import parallel as par


@pytest.fixture(scope="module")
def mesh():
  return par.make_data_mesh()


OPTIMIZER = optax.adamw(1e-2)


def _state(mesh, seed: int, step: int = 2) -> par.TrainState:
  """A replicated TrainState whose every leaf depends on `seed` (Adam moments included)."""
  r = np.random.default_rng(seed)
  params = {
    "w": jnp.asarray(r.normal(size=(4, 3)), jnp.float32),
    "b": jnp.asarray(r.normal(size=(3,)), jnp.float32),
  }
  state = par.TrainState.create(
    params, OPTIMIZER, jax.random.PRNGKey(seed), {"mean": jnp.full((3,), seed, jnp.float32)}
  )
  opt_state = state.opt_state
  for _ in range(2):
    grads = jax.tree.map(lambda p: jnp.asarray(r.normal(size=p.shape), jnp.float32), params)
    with jax.numpy_dtype_promotion("standard"):  # optax is not strict-promotion clean
      _, opt_state = OPTIMIZER.update(grads, opt_state, params)
  state = state.replace(step=jnp.asarray(step, jnp.int32), opt_state=opt_state)
  return par.replicate(state, mesh)


def _assert_trees_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def _dataset():
  return grain.MapDataset.range(40).batch(4).to_iter_dataset()


def test_roundtrip_restores_state_optimizer_state_and_data_position(tmp_path, mesh):
  state = _state(mesh, seed=1)
  expected = jax.device_get(state)
  it = iter(_dataset())
  for _ in range(3):
    next(it)  # consumed batches 0..2
  with ckpt_lib.Checkpointer(tmp_path, save_every_steps=1, async_save=True) as ckpt:
    assert ckpt.save(2, state, data_iterator=it, extra={"epoch": 1})
    next(it)  # the live iterator moves on; the checkpoint must keep position 3
    # Donating the state right after an async save must not corrupt it: Orbax copies the
    # arrays to host before save() returns.
    jax.jit(lambda s: jax.tree.map(lambda x: x * 2, s), donate_argnums=0)(state)
    ckpt.wait_until_finished()

    template = _state(mesh, seed=9)  # other values, same structure
    fresh_it = iter(_dataset())
    restored = ckpt.restore_latest(template, data_iterator=fresh_it)
    _assert_trees_equal(restored, expected)
    assert restored.params["w"].sharding == template.params["w"].sharding
    np.testing.assert_array_equal(next(fresh_it), np.arange(12, 16))  # batch 3
    assert ckpt.read_extra() == {"epoch": 1}


def test_keep_n_periodic_saves_and_resume_from_latest(tmp_path, mesh):
  with ckpt_lib.Checkpointer(tmp_path, save_every_steps=2, max_to_keep=2, async_save=False) as ckpt:
    assert ckpt.restore_latest(_state(mesh, seed=0)) is None  # fresh start
    saved = [s for s in range(1, 8) if ckpt.maybe_save(s, _state(mesh, seed=s, step=s))]
    assert saved == [2, 4, 6]
    assert ckpt.all_steps() == [4, 6]  # keep-2 deleted step 2
    assert sorted(os.listdir(tmp_path)) == ["4", "6"]
    assert not ckpt.stop_requested

  # A restarted job opens the same directory and resumes from the newest step.
  with ckpt_lib.Checkpointer(tmp_path, save_every_steps=2, max_to_keep=2) as ckpt:
    assert ckpt.latest_step() == 6
    restored = ckpt.restore_latest(_state(mesh, seed=0))
    _assert_trees_equal(restored, jax.device_get(_state(mesh, seed=6, step=6)))
    with pytest.raises(errors.CheckpointError, match="no data iterator"):
      ckpt.restore_latest(_state(mesh, seed=0), data_iterator=iter(_dataset()))
    assert ckpt.read_extra() is None


def test_sigterm_triggers_a_save_at_the_next_step_boundary(tmp_path, mesh):
  state = _state(mesh, seed=3)
  previous = signal.getsignal(signal.SIGTERM)
  with ckpt_lib.Checkpointer(tmp_path, save_every_steps=100) as ckpt:
    with ckpt.handle_signals():
      assert not ckpt.maybe_save(1, state)  # off the save grid, no signal
      os.kill(os.getpid(), signal.SIGTERM)
      assert not ckpt.stop_requested  # acted on at the boundary, not in the handler
      assert ckpt.all_steps() == []
      assert ckpt.maybe_save(2, state)
      assert ckpt.stop_requested
    assert signal.getsignal(signal.SIGTERM) is previous
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [2]
    _assert_trees_equal(ckpt.restore(2, _state(mesh, seed=0)), jax.device_get(state))


def _digest(root) -> dict:
  """{relative path: sha256 of the content (None for directories)} of a whole tree."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for d in dirnames:
      out[os.path.relpath(os.path.join(dirpath, d), root)] = None
    for f in filenames:
      path = os.path.join(dirpath, f)
      with open(path, "rb") as fh:
        out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
  return out


def test_restore_params_from_reads_params_and_never_writes(tmp_path, mesh):
  init_workdir = tmp_path / "pretrained"
  init_dir = checkpoint_files.checkpoint_dir(init_workdir)
  with ckpt_lib.Checkpointer(init_dir, save_every_steps=1) as ckpt:
    ckpt.save(3, _state(mesh, seed=4, step=3), data_iterator=iter(_dataset()))
    ckpt.save(5, _state(mesh, seed=5, step=5), data_iterator=iter(_dataset()))
  before = _digest(init_workdir)

  template = _state(mesh, seed=0).params
  expected = jax.device_get(_state(mesh, seed=5).params)
  for path in (init_workdir, init_dir, os.path.join(init_dir, "5")):
    params = checkpoint_reader.restore_params_from(path, template)
    _assert_trees_equal(params, expected)
    assert params["w"].sharding == template["w"].sharding
  _assert_trees_equal(
    checkpoint_reader.restore_params_from(os.path.join(init_dir, "3"), template),
    jax.device_get(_state(mesh, seed=4).params),
  )
  assert _digest(init_workdir) == before
  with pytest.raises(FileNotFoundError):
    checkpoint_reader.restore_params_from(tmp_path / "nothing_here", template)


def test_half_written_temp_dir_is_ignored(tmp_path, mesh):
  with ckpt_lib.Checkpointer(tmp_path, save_every_steps=1, async_save=False) as ckpt:
    ckpt.save(1, _state(mesh, seed=1, step=1))
    ckpt.save(2, _state(mesh, seed=2, step=2))
  # What an interrupted save of step 3 leaves behind: Orbax's temp name, incomplete content.
  tmp_dir = tmp_path / "3.orbax-checkpoint-tmp-1700000000000000"
  shutil.copytree(tmp_path / "2", tmp_dir)
  for dirpath, _, filenames in os.walk(tmp_dir / "state"):
    for f in filenames:
      with open(os.path.join(dirpath, f), "r+b") as fh:
        fh.truncate(0)

  with ckpt_lib.Checkpointer(tmp_path, save_every_steps=1) as ckpt:
    assert ckpt.all_steps() == [1, 2]
    restored = ckpt.restore_latest(_state(mesh, seed=0))
  _assert_trees_equal(restored, jax.device_get(_state(mesh, seed=2, step=2)))
  params = checkpoint_reader.restore_params_from(tmp_path, _state(mesh, seed=0).params)
  _assert_trees_equal(params, jax.device_get(_state(mesh, seed=2).params))


def _flip_bytes(step_dir, n=16):
  """Flips `n` bytes in the middle of the largest array data file of a step (a bit rot)."""
  files = [
    os.path.join(d, f)
    for d, _, fs in os.walk(os.path.join(step_dir, "state"))
    for f in fs
    if "ocdbt.process" in d and os.sep + "d" in d
  ]
  path = max(files, key=os.path.getsize)
  size = os.path.getsize(path)
  with open(path, "r+b") as fh:
    fh.seek(size // 2)
    data = fh.read(n)
    fh.seek(size // 2)
    fh.write(bytes(b ^ 0xFF for b in data))
  return path


def test_truncated_step_dir_falls_back_to_the_newest_intact_step(tmp_path, mesh, caplog):
  with ckpt_lib.Checkpointer(tmp_path, save_every_steps=1, async_save=False) as ckpt:
    ckpt.save(1, _state(mesh, seed=1, step=1))
    ckpt.save(2, _state(mesh, seed=2, step=2))
  shutil.rmtree(tmp_path / "2" / "state")
  (tmp_path / "2" / "state").mkdir()  # step 2 looks complete by name but holds no arrays

  with ckpt_lib.Checkpointer(tmp_path, save_every_steps=1) as ckpt:
    with pytest.raises(errors.CheckpointError, match="step 2 .* is damaged"):
      ckpt.restore(2, _state(mesh, seed=0))
    with caplog.at_level("INFO", logger="resq_jax"):
      restored = ckpt.restore_latest(_state(mesh, seed=0))
    assert ckpt.all_steps() == [1]
  _assert_trees_equal(restored, jax.device_get(_state(mesh, seed=1, step=1)))
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert len(warnings) == 1 and "step 2" in warnings[0] and "damaged" in warnings[0]
  infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
  assert [m.split(" in ")[0] for m in infos] == ["resuming from step 1"]


def test_every_save_gets_checksums_even_when_the_process_ends_right_after(tmp_path, mesh):
  with ckpt_lib.Checkpointer(tmp_path, save_every_steps=1) as ckpt:  # asynchronous
    ckpt.save(1, _state(mesh, seed=1, step=1))
    ckpt.save(2, _state(mesh, seed=2, step=2))
  # Leaving the block only waits; the checksums were part of each committed step.
  for step in ("1", "2"):
    with open(tmp_path / step / checkpoint_files.CHECKSUM_FILE) as f:
      listed = json.load(f)["sha256"]
    assert any(k.startswith("state" + os.sep) for k in listed)
    assert checkpoint_files.damage_of(tmp_path / step) is None
  assert not list(tmp_path.glob("*.orbax-checkpoint-tmp*"))


def test_bit_flip_in_newest_step_falls_back_and_the_step_can_be_saved_again(tmp_path, mesh):
  with ckpt_lib.Checkpointer(tmp_path, save_every_steps=2, max_to_keep=2) as ckpt:
    for step in (2, 4):
      ckpt.save(step, _state(mesh, seed=step, step=step), data_iterator=iter(_dataset()))
  _flip_bytes(tmp_path / "4")
  assert "does not match its checksum" in checkpoint_files.damage_of(tmp_path / "4")

  # A read-only reader (init_from, evaluation) skips it too, without moving anything.
  params = checkpoint_reader.restore_params_from(tmp_path, _state(mesh, seed=0).params)
  _assert_trees_equal(params, jax.device_get(_state(mesh, seed=2).params))
  assert (tmp_path / "4").is_dir()

  with ckpt_lib.Checkpointer(tmp_path, save_every_steps=2, max_to_keep=2) as ckpt:
    restored = ckpt.restore_latest(_state(mesh, seed=0), data_iterator=iter(_dataset()))
    _assert_trees_equal(restored, jax.device_get(_state(mesh, seed=2, step=2)))
    assert ckpt.all_steps() == [2]
    assert [p.name.split("-")[0] for p in (tmp_path / "damaged").iterdir()] == ["4"]
    # The resumed run saves step 4 again; keep-2 then holds the intact steps 2 and 4.
    assert ckpt.save(4, _state(mesh, seed=44, step=4))
  with ckpt_lib.Checkpointer(tmp_path, save_every_steps=2, max_to_keep=2) as ckpt:
    assert ckpt.all_steps() == [2, 4]
    _assert_trees_equal(
      ckpt.restore_latest(_state(mesh, seed=0)), jax.device_get(_state(mesh, seed=44, step=4))
    )


def test_no_intact_step_and_a_mismatching_template_raise_checkpoint_errors(tmp_path, mesh):
  with ckpt_lib.Checkpointer(tmp_path, save_every_steps=1, async_save=False) as ckpt:
    ckpt.save(1, _state(mesh, seed=1, step=1))
  wrong = _state(mesh, seed=0).replace(params={"w": jnp.zeros((5, 3), jnp.float32)})
  with (
    ckpt_lib.Checkpointer(tmp_path, save_every_steps=1) as ckpt,
    pytest.raises(errors.CheckpointError, match="intact .* does not fit"),
  ):
    ckpt.restore_latest(wrong)
  _flip_bytes(tmp_path / "1")
  with ckpt_lib.Checkpointer(tmp_path, save_every_steps=1) as ckpt:
    with pytest.raises(errors.CheckpointError, match="no intact checkpoint"):
      ckpt.restore_latest(_state(mesh, seed=0))
    assert ckpt.all_steps() == [1]  # nothing moved when nothing is left to resume from
  with pytest.raises(errors.CheckpointError, match="no intact checkpoint"):
    checkpoint_reader.restore_params_from(tmp_path, _state(mesh, seed=0).params)
