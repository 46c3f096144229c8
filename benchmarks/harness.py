"""The benchmark scripts' shared harness: machine facts, an interleaved timer, Markdown tables.

  machine() / Machine.lines()      date, command, CPU model and cores, python / jax / jaxlib and
                                   other package versions, JAX backend and devices, load average
  load_text(), footer(start)       the load average (1/5/15 min) and the wall time at the end
  time_interleaved(fns, rounds)    warm-up, then round-robin rounds (the starting callable
                                   rotates), ``block_until_ready``: a ``Timings`` (median, min,
                                   per-round ratios with their interquartile range)
  timed(fn), compile_ahead(fn, *a) one timed call; ahead-of-time compilation and its seconds
  markdown_table(head, rows)       tables (``table_head`` / ``table_row`` to print row by row)
  BenchParser(doc, rounds=...)     argparse with ``--rounds`` (and ``--quick``) resolved on parse
  log(msg)                         progress on stderr (the tables go to stdout)

Interleaving: every alternative of one table is timed once per round in the same process, so a
load change on a shared machine hits all of them alike and the per-round ratio ``t / t[base]``
cancels it; the median of those ratios (with their IQR) is the number to quote.

The module imports neither JAX nor torch at import time: bench_gpu's parent process must not
initialise a backend (its jobs need the device memory), peer_torch's memory worker runs without
JAX, and ``--help`` stays fast. The scripts import it as ``harness`` (``python
benchmarks/x.py`` puts the script's folder first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

# --------------------------------------------------------------------------------------------
# Machine facts


def cpu_model() -> str:
  """``lscpu``'s model name, or ``platform.processor()`` where lscpu is unavailable."""
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
      if line.startswith("Model name"):
        return line.split(":", 1)[1].strip()
  except (OSError, subprocess.CalledProcessError):
    pass
  return platform.processor() or "unknown"


def load_average() -> tuple[float, float, float]:
  """The 1, 5 and 15 minute load averages (zeros where the OS has none)."""
  try:
    return tuple(os.getloadavg())
  except OSError:
    return (0.0, 0.0, 0.0)


def load_text(load: Sequence[float] | None = None) -> str:
  """``load average (1/5/15 min): 0.56 / 2.09 / 1.81`` (now, or of ``load``)."""
  load = load_average() if load is None else load
  return "load average (1/5/15 min): " + " / ".join(f"{v:.2f}" for v in load)


def version(distribution: str) -> str:
  """The installed version of a distribution (``'torch'``, ``'tensorflow-datasets'``), read
  from its metadata without importing it; ``'absent'`` where it is not installed."""
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return "absent"


@dataclasses.dataclass(frozen=True)
class Machine:
  """Facts for a benchmark's header, taken when ``machine()`` is called (the load at the start).

  ``backend`` and ``devices`` are None where the script does not use JAX in this process.
  """

  date: str  # local time, ISO 8601 to the second
  command: str  # the script's command line
  cpu: str
  cores: int
  load: tuple[float, float, float]
  python: str
  packages: tuple[tuple[str, str], ...]  # (distribution, version), in the order asked
  backend: str | None = None
  devices: str | None = None  # "<count> x <device kind>"

  def lines(self) -> list[str]:
    """The header as Markdown bullets (one fact per line)."""
    where = f"{self.cpu}, {self.cores} cores"
    if self.backend is not None:
      where += f"; jax backend {self.backend}, {self.devices}"
    software = ", ".join([f"python {self.python}"] + [f"{n} {v}" for n, v in self.packages])
    return [
      f"- date: {self.date}",
      f"- command: `{self.command}`",
      f"- machine: {where}",
      f"- software: {software}",
      f"- {load_text(self.load)} (at start)",
    ]

  def text(self) -> str:
    return "\n".join(self.lines())


def machine(packages: Iterable[str] = (), *, jax: bool = True) -> Machine:
  """The machine facts now. ``jax=True`` adds jax and jaxlib to ``packages`` and reads the
  default backend and its devices (this initialises the backend); ``packages`` are distribution
  names whose versions are listed after python's."""
  names = list(dict.fromkeys((["jax", "jaxlib"] if jax else []) + list(packages)))
  backend = devices = None
  if jax:
    import jax as jax_  # pylint: disable=import-outside-toplevel

    found = jax_.devices()
    backend, devices = jax_.default_backend(), f"{len(found)} x {found[0].device_kind}"
  return Machine(
    date=datetime.datetime.now().isoformat(timespec="seconds"),
    command="python " + " ".join(sys.argv),
    cpu=cpu_model(),
    cores=os.cpu_count() or 1,
    load=load_average(),
    python=platform.python_version(),
    packages=tuple((n, version(n)) for n in names),
    backend=backend,
    devices=devices,
  )


def footer(start: float, clock: Callable[[], float] = time.perf_counter) -> str:
  """``- load average (1/5/15 min): ... (at end); wall time 12 s`` (``start`` from ``clock``)."""
  return f"- {load_text()} (at end); wall time {clock() - start:.0f} s"


# --------------------------------------------------------------------------------------------
# Timing


def block(out):
  """``jax.block_until_ready(out)``: wait for asynchronous dispatch to finish."""
  import jax  # pylint: disable=import-outside-toplevel

  return jax.block_until_ready(out)


@dataclasses.dataclass
class Timings:
  """Seconds per round of each timed callable, ``{name: [s_round0, s_round1, ...]}``: wall
  (``clock``) and CPU (``cpu_clock``: this process's CPU time) time of each call."""

  wall: dict[Hashable, list[float]]
  cpu: dict[Hashable, list[float]]

  @property
  def rounds(self) -> int:
    return len(next(iter(self.wall.values())))

  def median_ms(self, name: Hashable) -> float:
    return 1e3 * float(np.median(self.wall[name]))

  def min_ms(self, name: Hashable) -> float:
    return 1e3 * float(np.min(self.wall[name]))

  def cpu_median_ms(self, name: Hashable) -> float:
    return 1e3 * float(np.median(self.cpu[name]))

  def ratios(self, name: Hashable, base: Hashable) -> np.ndarray:
    """Per round: ``t[name] / t[base]`` measured in the same round."""
    return np.asarray(self.wall[name]) / np.asarray(self.wall[base])

  def ratio(self, name: Hashable, base: Hashable) -> tuple[float, float, float]:
    """Median, first and third quartile of the per-round ratios ``t[name] / t[base]``."""
    r = self.ratios(name, base)
    q1, q3 = np.percentile(r, (25, 75))
    return float(np.median(r)), float(q1), float(q3)

  def ratio_text(self, name: Hashable, base: Hashable, unit: str = "x") -> str:
    """``1.23x (1.10-1.31)``: median (IQR) of the per-round ratios; ``1.00x`` for the base."""
    if name == base:
      return f"1.00{unit}"
    median, q1, q3 = self.ratio(name, base)
    return f"{median:.2f}{unit} ({q1:.2f}-{q3:.2f})"


def time_interleaved(
  fns: Mapping[Hashable, Callable[[], object]],
  rounds: int,
  *,
  warmup: int = 1,
  budget_s: float = 0.0,
  max_rounds: int = 60,
  sync: Callable[[object], object] | None = block,
  clock: Callable[[], float] = time.perf_counter,
  cpu_clock: Callable[[], float] = time.process_time,
) -> Timings:
  """Round-robin timing of zero-argument callables.

  Each callable is first called ``warmup`` times (compilation, caches). Then every round calls
  each of them once, the starting one rotating every round (round r starts at the r-th), so
  that no callable always runs right after the same neighbour. At least ``rounds`` rounds; more,
  up to ``max_rounds``, while the first round's duration times the rounds fits ``budget_s``, so
  that cheap callables get more samples. ``sync(out)`` runs inside the timed span (default
  ``jax.block_until_ready``; None: the callable's return means done).
  """
  if not fns:
    raise ValueError("fns must name at least one callable")
  if rounds < 1:
    raise ValueError(f"rounds must be >= 1, got {rounds}")
  names = list(fns)
  for name in names:
    for _ in range(warmup):
      out = fns[name]()
      if sync is not None:
        sync(out)
  wall = {k: [] for k in names}
  cpu = {k: [] for k in names}
  n_rounds, r = rounds, 0
  while r < n_rounds:
    t_round = clock()
    for name in names[r % len(names) :] + names[: r % len(names)]:
      c0, t0 = cpu_clock(), clock()
      out = fns[name]()
      if sync is not None:
        sync(out)
      wall[name].append(clock() - t0)
      cpu[name].append(cpu_clock() - c0)
    if r == 0:  # size the run from the first round
      per_round = clock() - t_round
      n_rounds = max(rounds, min(max_rounds, int(budget_s / max(per_round, 1e-9))))
    r += 1
  return Timings(wall, cpu)


def timed(
  fn: Callable[[], object],
  *,
  sync: Callable[[object], object] | None = block,
  clock: Callable[[], float] = time.perf_counter,
) -> tuple[object, float]:
  """``(fn(), seconds)`` of one call, ``sync`` included (e.g. a first, compiling call)."""
  t0 = clock()
  out = fn()
  if sync is not None:
    sync(out)
  return out, clock() - t0


def compile_ahead(fn, *args, clock: Callable[[], float] = time.perf_counter):
  """``(compiled, seconds)``: ``fn.lower(*args).compile()`` of a jitted function (tracing,
  lowering and XLA compilation), timed apart from the steps."""
  t0 = clock()
  compiled = fn.lower(*args).compile()
  return compiled, clock() - t0


_T0 = time.perf_counter()


def log(msg: str) -> None:
  """``[  12 s] msg`` on stderr: progress, seconds since the harness was imported."""
  print(f"[{time.perf_counter() - _T0:6.0f} s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Markdown tables

_RULES = {"l": "---", "r": "---:", "c": ":---:"}


def table_row(cells: Iterable[object]) -> str:
  """``| a | b |`` (cells formatted by the caller; anything else through ``str``)."""
  return "| " + " | ".join(str(c) for c in cells) + " |"


def table_head(head: Sequence[str], align: str | None = None) -> str:
  """The header row and the rule: ``align`` one letter per column, ``l`` (``---``, the
  default), ``r`` (``---:``) or ``c`` (``:---:``)."""
  align = align or "l" * len(head)
  if len(align) != len(head) or set(align) - set(_RULES):
    raise ValueError(
      f"align must be one of l, r, c per column ({len(head)} columns), got {align!r}"
    )
  return table_row(head) + "\n|" + "|".join(f" {_RULES[a]} " for a in align) + "|"


def markdown_table(
  head: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None
) -> str:
  """A Markdown table: ``table_head(head, align)`` and one ``table_row`` per row."""
  lines = [table_head(head, align)]
  for row in rows:
    if len(row) != len(head):
      raise ValueError(f"rows must have {len(head)} cells like head, got {len(row)}: {row!r}")
    lines.append(table_row(row))
  return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line


class BenchParser(argparse.ArgumentParser):
  """``argparse.ArgumentParser`` described by the first line of ``doc``, with ``--rounds``
  (minimum timed rounds; default ``rounds``) where ``rounds`` is given, and ``--quick`` where
  ``quick_rounds`` is: after parsing, ``args.rounds`` is the explicit ``--rounds``, else
  ``quick_rounds`` with ``--quick``, else ``rounds``."""

  def __init__(
    self,
    doc: str,
    *,
    rounds: int | None = None,
    quick_rounds: int | None = None,
    quick_help: str = "a short run",
    **kwargs,
  ):
    kwargs.setdefault("description", doc.strip().split("\n")[0])
    super().__init__(**kwargs)
    self._rounds = (rounds, quick_rounds)
    if quick_rounds is not None:
      self.add_argument("--quick", action="store_true", help=quick_help)
    if rounds is not None:
      quick = f", {quick_rounds} with --quick" if quick_rounds is not None else ""
      self.add_argument(
        "--rounds", type=int, default=None, help=f"minimum timed rounds (default {rounds}{quick})"
      )

  def parse_args(self, args=None, namespace=None):  # pylint: disable=signature-differs
    ns = super().parse_args(args, namespace)
    rounds, quick_rounds = self._rounds
    if rounds is not None and ns.rounds is None:
      ns.rounds = quick_rounds if getattr(ns, "quick", False) else rounds
    if rounds is not None and ns.rounds < 1:
      self.error(f"--rounds must be >= 1, got {ns.rounds}")
    return ns
