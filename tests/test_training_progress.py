"""ProgressBar output with a fake clock: hand-computed throughput and ETA."""

import io

import jax.numpy as jnp

from resq_jax.training.progress import ProgressBar, format_duration


class FakeClock:
  def __init__(self):
    self.t = 0.0

  def __call__(self) -> float:
    return self.t


def test_non_tty_prints_periodic_log_lines():
  out, clock = io.StringIO(), FakeClock()
  bar = ProgressBar(100, stream=out, is_tty=False, log_every_secs=10.0, unit="clips", time_fn=clock)
  bar.update(1, items=32, loss=2.0)  # first call: printed, starts the clock (compile step)
  clock.t = 5.0
  bar.update(2, items=32, loss=1.75)  # within 10 s of the last line: silent
  clock.t = 10.0
  bar.update(3, items=32, loss=jnp.float32(1.5))
  clock.t = 12.0
  bar.update(100, items=3104)  # the last step is always printed
  bar.close()  # nothing new to show
  assert out.getvalue().splitlines() == [
    "step 1/100 (1%) | loss 2",
    # 64 clips in the 10 s after the first update; 2 steps per 10 s -> 97 steps in 485 s
    "step 3/100 (3%) | loss 1.5 | 6.4 clips/s | ETA 0:08:05",
    # 3168 clips in 12 s
    "step 100/100 (100%) | loss 1.5 | 264.0 clips/s | ETA 0:00:00",
  ]


def test_tty_redraws_one_line_at_most_every_refresh_interval():
  out, clock = io.StringIO(), FakeClock()
  bar = ProgressBar(10, stream=out, is_tty=True, refresh_secs=0.2, width=10, time_fn=clock)
  bar.update(5, loss=1.0)
  clock.t = 0.1
  bar.update(6, items=10)  # too soon after the last redraw
  clock.t = 0.3
  bar.update(7, items=10)  # 20 items in 0.3 s; 3 steps left at 2 steps / 0.3 s = 0.45 s
  bar.close()
  assert out.getvalue() == (
    "\rstep 5/10 (50%) [#####.....] | loss 1\x1b[K"
    "\rstep 7/10 (70%) [#######...] | loss 1 | 66.7 items/s | ETA 0:00:00\x1b[K"
    "\n"
  )


def test_resumed_run_and_disabled_bar():
  out, clock = io.StringIO(), FakeClock()
  bar = ProgressBar(
    1000, initial_step=400, stream=out, is_tty=False, log_every_secs=10.0, time_fn=clock
  )
  bar.close()  # no update yet: nothing to report
  assert out.getvalue() == ""
  bar = ProgressBar(
    1000, initial_step=400, stream=out, is_tty=False, log_every_secs=10.0, time_fn=clock
  )
  bar.update(401, items=8)
  clock.t = 10.0
  bar.update(402, items=8)
  bar.close()
  # Rates count only steps run in this process: 1 step in 10 s -> 598 steps in 5980 s.
  assert out.getvalue().splitlines() == [
    "step 401/1000 (40%)",
    "step 402/1000 (40%) | 0.8 items/s | ETA 1:39:40",
  ]
  out = io.StringIO()
  silent = ProgressBar(10, stream=out, is_tty=False, enabled=False, time_fn=clock)
  silent.update(10, loss=1.0)
  silent.close()
  assert out.getvalue() == ""
  assert format_duration(3725.9) == "1:02:05"
  assert format_duration(-3.0) == "0:00:00"
