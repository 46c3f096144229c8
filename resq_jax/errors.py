"""The project's failure classes and their process exit codes (docs/failure_behaviour.md).

Each failure a user can act on has its own exception class and exit code, so that a scheduler
can tell "requeue me" (75, EX_TEMPFAIL from sysexits.h) from "fix the config" (2) or "look at
the checkpoints" (3). ``train.py``, ``eval.py`` and ``demo.py`` run through :func:`run_cli`,
which prints such an error as one line (plus a hint) on stderr, without a traceback, and exits
with its code. Anything else is a bug: its traceback is printed and the exit code is 1.

This module imports nothing from the project (every layer may raise these).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1  # an unexpected error (a bug): traceback printed
EXIT_CONFIG = 2  # invalid config or flags; resume with a changed config; init_from mismatch
EXIT_CHECKPOINT = 3  # no intact checkpoint to restore, or it does not fit the model
EXIT_NON_FINITE = 4  # non-finite loss / gradient norm / train state: stopped before saving
EXIT_DATA = 5  # a dataset split is missing, truncated or corrupted
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by SIGTERM after saving; rerun to resume


class ResqError(Exception):
  """Base of the failures that exit with their own code and a one-line message."""

  exit_code = EXIT_FAILURE


class InvalidConfigError(ResqError, ValueError):
  """The config (or a flag) is invalid."""

  exit_code = EXIT_CONFIG


class ConfigMismatchError(ResqError, ValueError):
  """A resumed run's config differs from the one it was started with, or ``init_from`` names a
  run of an incompatible model."""

  exit_code = EXIT_CONFIG


class CheckpointError(ResqError, RuntimeError):
  """A checkpoint exists but cannot be restored (damaged, or it does not fit the template)."""

  exit_code = EXIT_CHECKPOINT


class MissingCheckpointError(CheckpointError, FileNotFoundError):
  """No complete checkpoint where one was expected (e.g. ``init_from`` names a directory that
  holds none); also a ``FileNotFoundError``."""


class NonFiniteError(ResqError, FloatingPointError):
  """Training produced a non-finite loss, gradient norm or state; nothing of it was saved."""

  exit_code = EXIT_NON_FINITE


class DataError(ResqError, RuntimeError):
  """A dataset split is missing, truncated or corrupted."""

  exit_code = EXIT_DATA


class PreemptedError(ResqError):
  """Training stopped on a signal after saving a checkpoint: rerun the command to resume."""

  exit_code = EXIT_PREEMPTED


def exit_code_of(exc: BaseException) -> int | None:
  """The exit code of a known failure, or None for an unexpected exception (a bug)."""
  return exc.exit_code if isinstance(exc, ResqError) else None


def run_cli(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
  """Calls ``fn``; a known failure is printed on stderr without a traceback and ends the
  process with its exit code: ``config error: <problem>`` lines for an invalid config (as
  ``config_lib`` prints them), ``preempted: ...`` for a preemption, ``error: <message>``
  otherwise. Other exceptions (bugs) propagate with their traceback."""
  try:
    return fn(*args, **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    code = exit_code_of(e)
    if code is None:
      raise
    sys.stdout.flush()
    message = str(e).strip() or type(e).__name__
    if code == EXIT_CONFIG and not isinstance(e, ConfigMismatchError):
      lines = getattr(e, "problems", None) or [
        line.strip().removeprefix("- ")  # a problem list item, not a --flag
        for line in message.splitlines()
        if line.strip() and line.strip() != "invalid config:"
      ]
      message = "\n".join(f"config error: {line}" for line in lines)
    elif not isinstance(e, PreemptedError):
      message = f"error: {message}"
    print(message, file=sys.stderr, flush=True)
    sys.exit(code)
