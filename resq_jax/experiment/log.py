"""The project's logger: one mechanism for every message of the library and the entry points.

``get_logger(__name__)`` gives a child of the ``resq_jax`` logger; :func:`setup` (called by
``train.py``, ``eval.py`` and ``demo.py``) prints its records as plain lines on stdout and, by
default, silences the libraries' chatter, so that what a person sees is the project's own
lines (stage headers, progress, one line per evaluated setting, where the report is).
``setup(verbose=True)`` (``--verbose``) leaves every library's logging as it was.

What is silenced, at its source:

- absl logging (Orbax checkpointing INFO lines, TFDS's ``Using custom data configuration`` and
  ``Downloading and preparing dataset`` for the offline SynthRes build, grain): absl
  verbosity and the ``absl`` logger at ERROR;
- Python loggers of jax, orbax, tensorflow_datasets, grain at ERROR; this includes JAX's
  ``Unable to initialize backend 'tpu'`` (``jax._src.xla_bridge``), logged while JAX probes
  for accelerators.

Without :func:`setup` (the library used from Python) nothing is changed globally, but the
calls that drive those libraries (building SynthRes, ``stream.compare.stream_video``) run inside
:func:`quiet_libraries`, which raises their loggers to ERROR for the duration of the call only,
and drop TFDS's printed banners and progress bars: a library call prints none of their INFO or
WARNING lines unless the user asks (``setup(verbose=True)``). The project's own lines go to the
``resq_jax`` logger, which has no handler until :func:`setup` (Python's default: warnings on
stderr).

Errors are never silenced. Library code logs; it does not print (entry points may print their
final one-line result).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

ROOT = "resq_jax"
QUIET_LOGGERS = (
  "absl",
  "jax",
  "jax._src.xla_bridge",
  "orbax",
  "orbax.checkpoint",
  "tensorflow_datasets",
  "grain",
  "etils",
  "tensorflow",
)
_HANDLER_NAME = "resq_jax.stdout"
_verbose = False  # the libraries' chatter is dropped unless the user asks: setup(verbose=True)


def get_logger(name: str | None = None) -> logging.Logger:
  """The logger ``resq_jax`` (or its child ``name``; a module's ``__name__`` works)."""
  if not name or name == ROOT:
    return logging.getLogger(ROOT)
  return logging.getLogger(name if name.startswith(ROOT + ".") else f"{ROOT}.{name}")


class _StdoutHandler(logging.StreamHandler):
  """Writes to the *current* ``sys.stdout`` (pytest and redirections replace it)."""

  def __init__(self):
    super().__init__(sys.stdout)
    self.set_name(_HANDLER_NAME)

  def emit(self, record):
    self.setStream(sys.stdout)
    super().emit(record)


def is_verbose() -> bool:
  """True only after ``setup(verbose=True)``; otherwise library output is to be dropped."""
  return _verbose


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
  """Within the block, unless verbose, the loggers of ``QUIET_LOGGERS`` (absl, and through it
  Orbax and TFDS; jax, grain, ...) drop records below ERROR; their levels are restored on exit,
  so a library user's own logging configuration is left as it was."""
  if _verbose:
    yield
    return
  loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
  previous = [logger.level for logger in loggers]
  for logger in loggers:
    if logger.getEffectiveLevel() < logging.ERROR:
      logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    for logger, level in zip(loggers, previous):
      logger.setLevel(level)


def setup(verbose: bool = False) -> None:
  """Route the project's INFO lines to stdout (once) and quiet the libraries unless
  ``verbose``. Safe to call more than once."""
  global _verbose  # pylint: disable=global-statement
  _verbose = verbose
  logger = get_logger()
  logger.setLevel(logging.INFO)
  logger.propagate = False  # absl's root handler would prefix and duplicate our lines
  if not any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
  if verbose:
    return
  for name in QUIET_LOGGERS:
    logging.getLogger(name).setLevel(logging.ERROR)
  try:
    from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel

    absl_logging.set_verbosity(absl_logging.ERROR)
    absl_logging.set_stderrthreshold(absl_logging.ERROR)
  except ImportError:  # absl is a dependency; this only guards odd environments
    pass
