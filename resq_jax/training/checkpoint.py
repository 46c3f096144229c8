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
* A step directory that exists but cannot be read (truncated by hand, disk full) raises
  `CheckpointError` naming the step instead of silently falling back to an older step: a
  fallback would leave the broken directory in place, where keep-N would then count it as the
  newest checkpoint and a later save of that step would collide with it.
* Preemption: the signal handler only sets a flag (no I/O or JAX inside a handler); the
  training loop's next `maybe_save` call sees it, forces a save of that step and reports
  `stop_requested`. On multi-host the flag is OR-ed over processes at every boundary so that all
  processes save and stop at the same step.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any, Iterator, Sequence

import grain.checkpoint as grain_checkpoint
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

STATE_ITEM = "state"
DATA_ITEM = "data_iter"
EXTRA_ITEM = "extra"

PyTree = Any


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be restored."""


def checkpoint_dir(workdir: str | os.PathLike) -> str:
    """The checkpoint directory of a training workdir: `<workdir>/checkpoints`."""
    return os.path.join(os.fspath(workdir), "checkpoints")


def _abstract(template: PyTree) -> PyTree:
    """jax.Array leaves -> ShapeDtypeStruct with the same sharding (restore target, no data);
    other leaves (ShapeDtypeStruct, numpy) are kept as given."""

    def leaf(x: Any) -> Any:
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return x

    return jax.tree.map(leaf, template)


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
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            cleanup_tmp_directories=False,
            enable_async_checkpointing=async_save,
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
        items: dict[str, Any] = {STATE_ITEM: ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items[DATA_ITEM] = grain_checkpoint.CheckpointSave(data_iterator)
        if extra is not None:
            items[EXTRA_ITEM] = ocp.args.JsonSave(extra)
        # force=True: maybe_save makes the periodic decision; Orbax must not veto a save.
        return self._manager.save(step, args=ocp.args.Composite(**items), force=True)

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
        self._stop_requested = _any_process(self._signal_received)
        # Our own grid, not Orbax's should_save, which also saves the first step it sees.
        if not (self._stop_requested or step % self._save_every == 0):
            return False
        saved = self.save(step, state, data_iterator=data_iterator, extra=extra)
        if self._stop_requested:
            logging.warning("stop requested: saved step %d to %s", step, self._directory)
        return saved

    @property
    def stop_requested(self) -> bool:
        """Whether the last `maybe_save` saw a stop signal (on any process): leave the loop."""
        return self._stop_requested

    @contextlib.contextmanager
    def handle_signals(
        self, signals: Sequence[signal.Signals] = (signal.SIGTERM,)
    ) -> Iterator["Checkpointer"]:
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

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- restoring ----------------------------------------------------------------------------

    def restore(
        self, step: int, template: PyTree, *, data_iterator: Any | None = None
    ) -> PyTree:
        """Restores the state saved at `step` into `template`'s structure, dtypes and shardings.

        Args:
          template: a pytree like the saved state (e.g. a freshly initialised, replicated
            TrainState); only its structure, shapes, dtypes and shardings are used.
          data_iterator: if given, its position is set to the saved one (in place).
        Raises:
          CheckpointError: the step directory is unreadable or does not match `template`.
        """
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
            raise CheckpointError(
                f"checkpoint step {step} in {self._directory} cannot be restored "
                f"({type(e).__name__}: {e}). If that directory is truncated, move it away to "
                "resume from an earlier step."
            ) from e
        return restored[STATE_ITEM]

    def restore_latest(
        self, template: PyTree, *, data_iterator: Any | None = None
    ) -> PyTree | None:
        """`restore` of the newest complete step, or None when there is none (fresh start)."""
        step = self._manager.latest_step()
        if step is None:
            return None
        logging.info("resuming from step %d in %s", step, self._directory)
        return self.restore(step, template, data_iterator=data_iterator)

    def read_extra(self, step: int | None = None) -> dict[str, Any] | None:
        """The `extra` JSON saved with `step` (default: the latest), or None if absent."""
        step = self._manager.latest_step() if step is None else step
        if step is None or not (self._step_dir(step) / EXTRA_ITEM).exists():
            return None
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{EXTRA_ITEM: ocp.args.JsonRestore()})
        )
        return restored[EXTRA_ITEM]


def _resolve_step_dir(path: epath.Path) -> epath.Path:
    """A workdir, a checkpoint directory or one step directory -> the step directory to read."""
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if path.is_dir():
        step_paths = ocp.utils.checkpoint_steps_paths(path)  # finalised steps only
        if step_paths:
            return max(step_paths, key=lambda p: ocp.utils.step_from_checkpoint_name(p.name))
    if (path / STATE_ITEM).is_dir():
        return path
    raise FileNotFoundError(f"no complete checkpoint found in {path}")


def restore_params_from(path: str | os.PathLike, params_template: PyTree) -> PyTree:
    """Reads only the params of another run's checkpoint, e.g. to initialise fine-tuning.

    Args:
      path: that run's workdir, its checkpoint directory (newest step is used) or a step dir.
      params_template: pytree like the saved `state.params`; its leaves' shapes, dtypes and
        shardings (jax.Array or ShapeDtypeStruct) decide how the arrays are restored.
    Returns:
      The saved params, in the structure of `params_template`.
    """
    return restore_fields_from(path, params=params_template)["params"]


def restore_fields_from(path: str | os.PathLike, **templates: PyTree) -> dict[str, PyTree]:
    """Reads some fields of another run's saved `TrainState` (e.g. `params=..., model_state=...`).

    The other run's directory is only read: no `CheckpointManager` (which may create
    directories, delete old steps or clean temp dirs) is opened on it, just a pytree reader on
    `<step>/state`, restoring the named subtrees (partial restore; e.g. the optimizer state is
    not read). `path`: a workdir, a checkpoint directory (newest step) or a step directory.
    """
    step_dir = _resolve_step_dir(epath.Path(os.path.abspath(path)))
    target = {name: _abstract(t) for name, t in templates.items()}
    args = ocp.args.PyTreeRestore(
        item=target,
        restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True,
    )
    with ocp.PyTreeCheckpointer() as reader:
        return reader.restore(step_dir / STATE_ITEM, args=args)
