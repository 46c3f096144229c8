"""A dependency-free progress bar: step/total, loss, throughput and ETA.

On a terminal it redraws one line in place (`\\r`); when stdout is not a TTY (CI, log files,
`nohup`) it prints a complete line every `log_every_secs` (10 s) instead, so logs stay
readable and a person watching a log file sees progress at least every 10 seconds.

Throughput and ETA are measured from the *first* `update` call on: that call's step includes
compilation, which would make every later estimate pessimistic.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def format_duration(seconds: float) -> str:
  """Seconds -> 'H:MM:SS' (rounded down to whole seconds)."""
  seconds = int(max(seconds, 0.0))
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressBar:
  """Reports training progress; call `update` after every step and `close` at the end.

  Example:
      bar = ProgressBar(total_steps, initial_step=start_step)
      for step in range(start_step, total_steps):
          state, metrics = train_step(state, batch)
          bar.update(step + 1, items=global_batch_size, loss=metrics["loss"])
      bar.close()
  """

  def __init__(
    self,
    total_steps: int,
    *,
    initial_step: int = 0,
    unit: str = "items",
    stream: TextIO | None = None,
    is_tty: bool | None = None,
    log_every_secs: float = 10.0,
    refresh_secs: float = 0.2,
    width: int = 25,
    enabled: bool = True,
    time_fn: Callable[[], float] = time.monotonic,
  ):
    """Args:
    total_steps: the step count at which training ends.
    initial_step: the step training (re)starts from, so a resumed run shows its progress.
    unit: name of what `items` counts (examples, clips, frames).
    stream: where to write; default sys.stdout.
    is_tty: force the mode; default `stream.isatty()`.
    log_every_secs: non-TTY mode: seconds between log lines.
    refresh_secs: TTY mode: minimum seconds between redraws.
    width: characters of the bar itself (TTY mode).
    enabled: False turns every call into a no-op (e.g. on non-primary processes).
    time_fn: clock in seconds (injectable for tests).
    """
    self._total = total_steps
    self._step = initial_step
    self._unit = unit
    self._stream = sys.stdout if stream is None else stream
    isatty = getattr(self._stream, "isatty", lambda: False)
    self._tty = isatty() if is_tty is None else is_tty
    self._interval = refresh_secs if self._tty else log_every_secs
    self._width = width
    self._enabled = enabled
    self._time = time_fn
    self._loss: Any = None
    self._t0: float | None = None  # time of the first update
    self._step0 = initial_step
    self._items = 0  # items processed after the first update
    self._last_render = -float("inf")
    self._drawn = False
    self._dirty = False  # an update not shown yet

  def update(self, step: int, *, items: int = 0, loss: Any = None) -> None:
    """Records that `step` steps are done; `items` were processed by the step(s) since the
    previous call. `loss` may be a device array: it is converted only when a line is drawn,
    so that the host does not wait for the device on every step.
    """
    if not self._enabled:
      return
    now = self._time()
    if self._t0 is None:
      self._t0, self._step0 = now, step
    else:
      self._items += items
    self._step = step
    if loss is not None:
      self._loss = loss
    self._dirty = True
    if now - self._last_render >= self._interval or step >= self._total:
      self._render(now)

  def _rates(self, now: float) -> tuple[float | None, float | None]:
    """(items per second, seconds remaining), None while not measurable yet."""
    elapsed = now - (self._t0 if self._t0 is not None else now)
    steps = self._step - self._step0
    if elapsed <= 0.0 or steps <= 0:
      return None, None
    remaining = max(self._total - self._step, 0) * elapsed / steps
    return self._items / elapsed, remaining

  def format_line(self, now: float) -> str:
    """The text of one report at time `now` (without `\\r` or newline)."""
    pct = 100.0 * self._step / self._total if self._total else 100.0
    parts = [f"step {self._step}/{self._total} ({pct:.0f}%)"]
    if self._tty:
      filled = int(self._width * min(pct, 100.0) / 100.0)
      parts[0] += " [" + "#" * filled + "." * (self._width - filled) + "]"
    if self._loss is not None:
      parts.append(f"loss {float(self._loss):.4g}")
    rate, remaining = self._rates(now)
    if rate is not None and remaining is not None:
      parts.append(f"{rate:.1f} {self._unit}/s")
      parts.append(f"ETA {format_duration(remaining)}")
    return " | ".join(parts)

  def _render(self, now: float) -> None:
    line = self.format_line(now)
    if self._tty:
      # Clear to the end of the line: the previous text may have been longer.
      self._stream.write("\r" + line + "\x1b[K")
      self._drawn = True
    else:
      self._stream.write(line + "\n")
    self._stream.flush()
    self._last_render = now
    self._dirty = False

  def close(self) -> None:
    """Draws the final state and ends the TTY line."""
    if not self._enabled:
      return
    if self._dirty:
      self._render(self._time())
    if self._tty and self._drawn:
      self._stream.write("\n")
      self._stream.flush()
    self._enabled = False
