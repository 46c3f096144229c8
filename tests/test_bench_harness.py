"""benchmarks/harness.py: the table writer, the interleaved timer (against a fake clock) and the
machine header."""

import datetime
import os
import platform
import sys

import numpy as np
import pytest

sys.path.insert(
  0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
)
import harness  # noqa: E402  pylint: disable=wrong-import-position


class FakeClock:
  """A clock that moves only when a timed callable says how long it took."""

  def __init__(self):
    self.now = 100.0

  def __call__(self) -> float:
    return self.now

  def step(self, seconds: float):
    def run():
      self.now += seconds
      return seconds

    return run


# --------------------------------------------------------------------------------------------
# Tables


def test_markdown_table_matches_a_hand_written_table():
  head = ["recipe", "ms (median)", "ratio"]
  rows = [["float", "1.0", "1.00x"], ["FQ W8A8", 12, "1.25x (1.1-1.3)"]]
  expected = (
    "| recipe | ms (median) | ratio |\n"
    "| --- | ---: | :---: |\n"
    "| float | 1.0 | 1.00x |\n"
    "| FQ W8A8 | 12 | 1.25x (1.1-1.3) |"
  )
  assert harness.markdown_table(head, rows, "lrc") == expected
  # Without an alignment every column has the plain rule, as the scripts' old writer had.
  assert harness.markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n| --- | --- |\n| 1 | 2 |"
  # Row by row: the same text.
  assert "\n".join([harness.table_head(head, "lrc")] + [harness.table_row(r) for r in rows]) == (
    expected
  )


def test_table_rejects_bad_shapes():
  with pytest.raises(ValueError, match="align"):
    harness.table_head(["a", "b"], "l")
  with pytest.raises(ValueError, match="align"):
    harness.table_head(["a"], "x")
  with pytest.raises(ValueError, match="rows must have 2 cells"):
    harness.markdown_table(["a", "b"], [["1"]])


# --------------------------------------------------------------------------------------------
# Timer


def test_timer_statistics_against_a_fake_clock():
  clock, cpu = FakeClock(), FakeClock()
  base = [0.010, 0.030, 0.020, 0.040, 0.050]  # seconds of "a" per timed round
  calls = {"a": 0, "b": 0}
  order = []

  def make(name, seconds):
    def run():
      calls[name] += 1
      order.append(name)
      s = seconds[calls[name] - 2] if calls[name] >= 2 else 1.0  # the 1st call: warm-up, 1 s
      clock.now += s
      cpu.now += s / 2  # half of the wall time on this process's CPU
      return s

    return run

  b = [2 * s for s in base[:3]] + [3 * base[3], base[4]]  # ratios b / a: 2, 2, 2, 3, 1
  t = harness.time_interleaved(
    {"a": make("a", base), "b": make("b", b)}, 5, sync=None, clock=clock, cpu_clock=cpu
  )
  assert t.rounds == 5 and calls == {"a": 6, "b": 6}  # one warm-up each, not timed
  assert t.wall["a"] == pytest.approx(base) and t.wall["b"] == pytest.approx(b)
  assert t.median_ms("a") == pytest.approx(30.0) and t.min_ms("a") == pytest.approx(10.0)
  assert t.cpu_median_ms("a") == pytest.approx(15.0)
  # Per-round ratios 2, 2, 2, 3, 1: median 2, quartiles 2 and 2 (NumPy's linear percentile).
  assert t.ratio("b", "a") == pytest.approx((2.0, 2.0, 2.0))
  assert t.ratio_text("b", "a") == "2.00x (2.00-2.00)"
  assert t.ratio_text("a", "a") == "1.00x"
  assert t.ratio_text("b", "a", unit="") == "2.00 (2.00-2.00)"
  # Warm-ups first, then the starting callable rotates every round.
  assert order == ["a", "b"] + ["a", "b", "b", "a"] * 2 + ["a", "b"]


def test_timer_interquartile_range_is_numpys():
  clock = FakeClock()
  ratios = [1.0, 2.0, 4.0, 8.0]
  fns = {"base": clock.step(1.0), "x": None}
  times = iter(ratios)
  fns["x"] = lambda: clock.step(next(times))()
  t = harness.time_interleaved(fns, 4, warmup=0, sync=None, clock=clock)
  q1, q3 = np.percentile(ratios, (25, 75))
  assert t.ratio("x", "base") == pytest.approx((np.median(ratios), q1, q3))


def test_timer_budget_adds_rounds_up_to_the_cap():
  clock = FakeClock()
  fns = {"a": clock.step(0.1), "b": clock.step(0.1)}  # 0.2 s per round
  t = harness.time_interleaved(fns, 3, budget_s=2.0, sync=None, clock=clock)
  assert t.rounds == 10  # 2.0 s / 0.2 s per round
  t = harness.time_interleaved(fns, 3, budget_s=2.0, max_rounds=6, sync=None, clock=clock)
  assert t.rounds == 6
  t = harness.time_interleaved(fns, 3, budget_s=0.1, sync=None, clock=clock)
  assert t.rounds == 3  # never fewer than asked


def test_timer_syncs_inside_the_timed_span():
  clock = FakeClock()
  synced = []

  def sync(out):
    clock.now += 0.5  # e.g. block_until_ready waiting for the device
    synced.append(out)

  t = harness.time_interleaved({"a": clock.step(1.0)}, 2, sync=sync, clock=clock)
  assert t.wall["a"] == pytest.approx([1.5, 1.5]) and synced == [1.0] * 3
  out, seconds = harness.timed(clock.step(2.0), sync=sync, clock=clock)
  assert (out, seconds) == (2.0, pytest.approx(2.5))


def test_timer_rejects_bad_arguments():
  with pytest.raises(ValueError, match="fns"):
    harness.time_interleaved({}, 3)
  with pytest.raises(ValueError, match="rounds"):
    harness.time_interleaved({"a": lambda: None}, 0, sync=None)


def test_compile_ahead_times_lower_and_compile():
  clock = FakeClock()

  class Jitted:
    def lower(self, *args):
      assert args == (1, 2)
      clock.now += 3.0
      return self

    def compile(self):
      clock.now += 4.0
      return "compiled"

  assert harness.compile_ahead(Jitted(), 1, 2, clock=clock) == ("compiled", pytest.approx(7.0))


# --------------------------------------------------------------------------------------------
# Machine header


def test_machine_header_lines():
  m = harness.Machine(
    date="2026-11-29T01:25:00",
    command="python benchmarks/bench_x.py --quick",
    cpu="AMD EPYC",
    cores=2,
    load=(3.6, 3.25, 1.0),
    python="3.11.7",
    packages=(("jax", "0.10.2"), ("torch", "2.13.0")),
    backend="cpu",
    devices="1 x cpu",
  )
  assert m.lines() == [
    "- date: 2026-11-29T01:25:00",
    "- command: `python benchmarks/bench_x.py --quick`",
    "- machine: AMD EPYC, 2 cores; jax backend cpu, 1 x cpu",
    "- software: python 3.11.7, jax 0.10.2, torch 2.13.0",
    "- load average (1/5/15 min): 3.60 / 3.25 / 1.00 (at start)",
  ]
  no_jax = harness.Machine(m.date, m.command, m.cpu, m.cores, m.load, m.python, ())
  assert no_jax.lines()[2] == "- machine: AMD EPYC, 2 cores"
  assert no_jax.lines()[3] == "- software: python 3.11.7"


def test_machine_reads_this_process():
  import jax  # pylint: disable=import-outside-toplevel

  before = datetime.datetime.now().replace(microsecond=0)
  m = harness.machine(["numpy", "no-such-distribution"])
  assert before <= datetime.datetime.fromisoformat(m.date) <= datetime.datetime.now()
  assert m.cores == os.cpu_count() and m.python == platform.python_version()
  assert m.cpu and len(m.load) == 3
  assert dict(m.packages) == {
    "jax": jax.__version__,
    "jaxlib": harness.version("jaxlib"),
    "numpy": np.__version__,
    "no-such-distribution": "absent",
  }
  assert [n for n, _ in m.packages] == ["jax", "jaxlib", "numpy", "no-such-distribution"]
  assert m.backend == jax.default_backend()
  assert m.devices == f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  assert m.command == "python " + " ".join(sys.argv)
  # Without JAX: no backend facts, jax only where asked for.
  m = harness.machine(["jax"], jax=False)
  assert (m.backend, m.devices) == (None, None) and dict(m.packages) == {"jax": jax.__version__}


def test_load_text_and_footer():
  assert harness.load_text((0.5, 1.25, 10.0)) == "load average (1/5/15 min): 0.50 / 1.25 / 10.00"
  clock = FakeClock()
  line = harness.footer(clock() - 42.4, clock=clock)
  assert line.startswith("- load average (1/5/15 min): ") and line.endswith(
    " (at end); wall time 42 s"
  )


# --------------------------------------------------------------------------------------------
# Command line


def test_parser_resolves_rounds():
  p = harness.BenchParser("Title line.\n\nMore.", rounds=7, quick_rounds=3)
  assert p.description == "Title line."
  assert p.parse_args([]).rounds == 7
  assert p.parse_args(["--quick"]).rounds == 3
  assert p.parse_args(["--quick", "--rounds", "5"]).rounds == 5
  plain = harness.BenchParser("Doc.", rounds=30)
  assert plain.parse_args([]).rounds == 30 and not hasattr(plain.parse_args([]), "quick")
  with pytest.raises(SystemExit):
    plain.parse_args(["--rounds", "0"])
