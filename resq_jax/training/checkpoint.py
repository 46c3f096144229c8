"""Checkpoints of the train state and the input pipeline: periodic saves, resume, preemption.

Layout of one checkpoint (Orbax `CheckpointManager` with `ocp.args.Composite`):

    <directory>/<step>/state/      the train state pytree (`StandardSave`), params + opt state
    <directory>/<step>/data_iter/  grain iterator position, one JSON file per process
    <directory>/<step>/extra/      optional JSON (`JsonSave`), e.g. the epoch or the config

Decisions:

* The data iterator goes through grain's own Orbax handler (`grain.checkpoint.CheckpointSave`
  / `CheckpointRestore`, present in grain 0.2.18). It writes `process_<i>-of-<n>.json` from every
  process, which a `JsonSave` of `get_state()` (written by the primary process only) could not:
  on multi-host each process reads its own slice of the data. It is a synchronous handler, so the
  iterator's position is captured before `save` returns even when the arrays are written in the
  background.
* Atomicity is Orbax's: a step is written under `<step>.orbax-checkpoint-tmp-<t>` and renamed
  when complete, so an interrupted save leaves a temp directory that `latest_step` ignores.
  Temp directories are not deleted on start-up (`cleanup_tmp_directories=False`): another
  process (an eval job) may open the same directory while training is mid-save.
* Integrity: every saved step gets `<step>/checksums.json`, the sha256 of each of its files
  (except Orbax's `_CHECKPOINT_METADATA`, which Orbax rewrites after the commit). Asynchronous
  saves write it from Orbax's `post_finalization_callback`, i.e. into the temporary directory
  before it is renamed into place, so a committed step always has it, even if the process dies
  right after; synchronous saves write it right after the commit. `restore_latest` verifies the
  newest step; a damaged one (a checksum differs, a file is missing) is logged as one warning
  line, moved to `<directory>/damaged/<step>-<time>` (kept for inspection, no longer counted by
  keep-N, and its step number free to be saved again) and the next older intact step is
  restored. If no step is intact, `CheckpointError`. A step without `checksums.json` (written
  by an older version) is restored unverified; if that fails, `CheckpointError` names it.
* Orbax errors during a restore are re-raised as `CheckpointError` (one line naming the step),
  the cause chained.
* Preemption: the signal handler only sets a flag (no I/O or JAX inside a handler); the
  training loop's next `maybe_save` call sees it, forces a save of that step and reports
  `stop_requested`. On multi-host the flag is OR-ed over processes at every boundary so that all
  processes save and stop at the same step.

The item names, `checkpoint_dir` and the checksums live in `checkpoint_files`; the read-only
readers of another run's checkpoint (`restore_params_from`, `restore_fields_from`) in
`checkpoint_reader`. Their public names are re-exported here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grain.checkpoint as grain_checkpoint
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from resq_jax.errors import CheckpointError
from resq_jax.training.checkpoint_files import (
  CHECKSUM_FILE,
  DAMAGED_DIR,
  DATA_ITEM,
  EXTRA_ITEM,
  STATE_ITEM,
  damage_of,
  has_checksums,
  write_checksums,
)
from resq_jax.training.checkpoint_reader import (
  PyTree,
  _abstract,
)

# A child of the project's logger ``resq_jax`` (``resq_jax.experiment.log``): the entry points
# print its records in quiet mode too, unlike absl's, which quiet mode silences with Orbax's.
log = logging.getLogger(__name__)


def _any_process(flag: bool) -> bool:
  """OR of `flag` over all processes (a collective: every process must call it)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


class Checkpointer:
  """Saves and restores `TrainState`-like pytrees plus a grain iterator under one directory.

  Typical loop (`train_lib`):

      ckpt = Checkpointer(checkpoint_dir(workdir), save_every_steps=1000, max_to_keep=3)
      restored = ckpt.restore_latest(state, data_iterator=it)  # None on a fresh start
      state = state if restored is None else restored
      with ckpt, ckpt.handle_signals():
          for step in range(int(state.step), total_steps):
              state, metrics = train_step(state, shard_batch(next(it), mesh))
              ckpt.maybe_save(step + 1, state, data_iterator=it)
              if ckpt.stop_requested:
                  break
          ckpt.save(int(state.step), state, data_iterator=it)  # no-op if already saved
      # leaving the `with ckpt` block waits for the last asynchronous save.
  """

  def __init__(
    self,
    directory: str | os.PathLike,
    *,
    save_every_steps: int,
    max_to_keep: int | None = 3,
    async_save: bool = True,
  ):
    """Args:
    directory: where step directories go; created if missing.
    save_every_steps: `maybe_save` saves steps that are multiples of this.
    max_to_keep: keep only the newest N checkpoints (None keeps all).
    async_save: write arrays in a background thread after the device-to-host copy.
    """
    if save_every_steps < 1:
      raise ValueError(f"save_every_steps must be >= 1, got {save_every_steps}")
    self._save_every = save_every_steps
    self._async = async_save
    self._pending_step: int | None = None  # the step an asynchronous save is writing
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      create=True,
      cleanup_tmp_directories=False,
      enable_async_checkpointing=async_save,
      # Runs in Orbax's finalize thread once every item is written, before the rename.
      async_options=(
        ocp.AsyncOptions(post_finalization_callback=self._on_save_finalized) if async_save else None
      ),
    )
    # Orbax's tensorstore backend rejects relative paths: resolve against the working directory.
    self._directory = epath.Path(os.path.abspath(directory))
    self._manager = ocp.CheckpointManager(self._directory, options=options)
    self._signal_received = False  # written by the signal handler only
    self._stop_requested = False  # agreed over processes at the last boundary

  # -- bookkeeping --------------------------------------------------------------------------

  @property
  def directory(self) -> epath.Path:
    return self._directory

  def all_steps(self) -> list[int]:
    """Finalised (complete) checkpoint steps, ascending."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def _step_dir(self, step: int) -> epath.Path:
    return self._directory / str(step)  # default Orbax step naming (no prefix, no padding)

  # -- saving -------------------------------------------------------------------------------

  def save(
    self,
    step: int,
    state: PyTree,
    *,
    data_iterator: Any | None = None,
    extra: dict[str, Any] | None = None,
  ) -> bool:
    """Saves `state` (and the iterator's position, and `extra`) as `step` now.

    `data_iterator` must be a grain iterator: a `grain.DatasetIterator` (dict state) or a
    `grain.DataLoader` iterator (bytes state), as grain's handler requires.
    Returns False (and writes nothing) if `step` is already saved. Asynchronous unless
    `async_save=False`: call `wait_until_finished` before reading the files.
    """
    if step in self._manager.all_steps():
      return False
    # The callback of the previous asynchronous save reads `_pending_step`: let it finish.
    self._manager.wait_until_finished()
    self._pending_step = step
    items: dict[str, Any] = {STATE_ITEM: ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items[DATA_ITEM] = grain_checkpoint.CheckpointSave(data_iterator)
    if extra is not None:
      items[EXTRA_ITEM] = ocp.args.JsonSave(extra)
    # force=True: maybe_save makes the periodic decision; Orbax must not veto a save.
    saved = self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    if saved and not self._async and jax.process_index() == 0:
      write_checksums(self._step_dir(step))  # the step is committed already
    return saved

  def _on_save_finalized(self) -> None:
    """Orbax's post-finalization callback: checksums into the step's temporary directory,
    which Orbax renames to `<step>` next (so the commit includes them)."""
    step = self._pending_step
    if step is None or jax.process_index() != 0:
      return
    try:
      candidates = list(self._directory.glob(f"{step}.orbax-checkpoint-tmp*"))
      target = max(candidates, key=lambda p: p.stat().mtime) if candidates else self._step_dir(step)
      write_checksums(target)
    except Exception:  # pylint: disable=broad-except
      # The save itself is complete: the step restores unverified rather than failing.
      log.exception("could not write %s for step %d", CHECKSUM_FILE, step)

  def should_save(self, step: int) -> bool:
    """Whether `maybe_save(step, ...)` would save: `step` is on the save grid or a stop
    signal arrived (on any process) since the last call; updates `stop_requested`.
    A collective on multi-host: every process must call it at every boundary."""
    self._stop_requested = _any_process(self._signal_received)
    # Our own grid, not Orbax's should_save, which also saves the first step it sees.
    return self._stop_requested or step % self._save_every == 0

  def maybe_save(
    self,
    step: int,
    state: PyTree,
    *,
    data_iterator: Any | None = None,
    extra: dict[str, Any] | None = None,
  ) -> bool:
    """Call at every step boundary (on every process): saves if `step` is a multiple of
    `save_every_steps` or a stop signal arrived since the last call. Returns True if saved.
    """
    if not self.should_save(step):
      return False
    saved = self.save(step, state, data_iterator=data_iterator, extra=extra)
    if self._stop_requested:
      log.warning("stop requested: saved step %d to %s", step, self._directory)
    return saved

  @property
  def stop_requested(self) -> bool:
    """Whether the last `maybe_save` saw a stop signal (on any process): leave the loop."""
    return self._stop_requested

  @contextlib.contextmanager
  def handle_signals(
    self, signals: Sequence[signal.Signals] = (signal.SIGTERM,)
  ) -> Iterator[Checkpointer]:
    """Within the block, `signals` only set a flag that the next `maybe_save` acts on.

    The previous handlers are restored on exit. Must be entered from the main thread
    (Python delivers signals there only).
    """

    def on_signal(signum: int, frame: Any) -> None:
      del frame
      # Only a flag: I/O, locks or JAX calls inside a handler can deadlock the thread
      # that the signal interrupted.
      self._signal_received = True

    previous = {s: signal.getsignal(s) for s in signals}
    for s in signals:
      signal.signal(s, on_signal)
    try:
      yield self
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)

  def wait_until_finished(self) -> None:
    """Blocks until the pending asynchronous save (if any) is committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases Orbax's threads."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()

  # -- restoring ----------------------------------------------------------------------------

  def restore(self, step: int, template: PyTree, *, data_iterator: Any | None = None) -> PyTree:
    """Restores the state saved at `step` into `template`'s structure, dtypes and shardings.

    Args:
      template: a pytree like the saved state (e.g. a freshly initialised, replicated
        TrainState); only its structure, shapes, dtypes and shardings are used.
      data_iterator: if given, its position is set to the saved one (in place).
    Raises:
      CheckpointError: the step is damaged (see `damage_of`), unreadable or does not match
        `template`.
    """
    damage = damage_of(self._step_dir(step))
    if damage is not None:
      raise CheckpointError(f"checkpoint step {step} in {self._directory} is damaged: {damage}")
    return self._restore_unverified(step, template, data_iterator)

  def _restore_unverified(self, step: int, template: PyTree, data_iterator: Any | None) -> PyTree:
    items: dict[str, Any] = {STATE_ITEM: ocp.args.StandardRestore(_abstract(template))}
    if data_iterator is not None:
      if not (self._step_dir(step) / DATA_ITEM).exists():
        raise CheckpointError(
          f"checkpoint step {step} in {self._directory} holds no data iterator state"
        )
      items[DATA_ITEM] = grain_checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # re-raised with the step named; the cause stays chained
      verified = has_checksums(self._step_dir(step))
      reason = (
        "its files are intact (checksums match), so it does not fit this model"
        if verified
        else "it has no checksums to tell damage from a mismatch"
      )
      first_line = (str(e).strip().splitlines() or [""])[0][:300]
      raise CheckpointError(
        f"checkpoint step {step} in {self._directory} cannot be restored: {reason} "
        f"({type(e).__name__}: {first_line})"
      ) from e
    return restored[STATE_ITEM]

  def newest_intact_step(self) -> tuple[int | None, dict[int, str]]:
    """(the newest step whose files match their checksums, {newer damaged step: what is
    wrong}); (None, {...}) when no step is intact or there is none."""
    damaged: dict[int, str] = {}
    for step in reversed(self.all_steps()):
      damage = damage_of(self._step_dir(step))
      if damage is None:
        return step, damaged
      damaged[step] = damage
    return None, damaged

  def _quarantine(self, steps: Sequence[int]) -> None:
    """Moves damaged steps to `<directory>/damaged/<step>-<unix time>`: kept for
    inspection, no longer a step for Orbax (keep-N, latest_step, a new save of it)."""
    if jax.process_index() == 0:
      target = self._directory / DAMAGED_DIR
      target.mkdir(parents=True, exist_ok=True)
      for step in steps:
        self._step_dir(step).rename(target / f"{step}-{int(time.time())}")
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("resq_jax_checkpoint_quarantine")
    self._manager.reload()

  def restore_latest(self, template: PyTree, *, data_iterator: Any | None = None) -> PyTree | None:
    """`restore` of the newest intact step, or None when there is no step (fresh start).

    Damaged newer steps are logged (one warning line each) and moved aside (`_quarantine`).
    Raises:
      CheckpointError: there are steps but none is intact, or the newest intact step does
        not restore into `template`.
    """
    step, damaged = self.newest_intact_step()
    if step is None:
      if damaged:
        raise CheckpointError(
          f"no intact checkpoint in {self._directory}: steps {sorted(damaged)} are "
          f"all damaged ({'; '.join(f'{k}: {v}' for k, v in damaged.items())})"
        )
      return None
    for bad, damage in damaged.items():
      log.warning(
        "checkpoint step %d in %s is damaged (%s): moved to %s/",
        bad,
        self._directory,
        damage,
        self._directory / DAMAGED_DIR,
      )
    if damaged:
      self._quarantine(sorted(damaged))
    log.info("resuming from step %d in %s", step, self._directory)
    return self._restore_unverified(step, template, data_iterator)

  def read_extra(self, step: int | None = None) -> dict[str, Any] | None:
    """The `extra` JSON saved with `step` (default: the latest), or None if absent."""
    step = self._manager.latest_step() if step is None else step
    if step is None or not (self._step_dir(step) / EXTRA_ITEM).exists():
      return None
    restored = self._manager.restore(
      step, args=ocp.args.Composite(**{EXTRA_ITEM: ocp.args.JsonRestore()})
    )
    return restored[EXTRA_ITEM]
