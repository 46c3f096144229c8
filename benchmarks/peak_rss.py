"""Resident-set high-water mark of this process (Linux ``/proc/self/status``), resettable.

``reset_peak()`` first returns freed heap to the OS (``malloc_trim``), then writes 5 to
``/proc/self/clear_refs`` (Linux >= 4.0), which sets ``VmHWM`` back to the current RSS, so that
one phase's peak (compilation, then the steps) can be read apart from earlier ones. Where that is
not possible it returns False and the peak stays cumulative.
"""

from __future__ import annotations

import resource


def _status_kib(field: str) -> int | None:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1])
  except OSError:
    pass
  return None


def rss_mib() -> float:
  """Current resident set size (MiB); the peak where /proc is unavailable."""
  kib = _status_kib("VmRSS")
  return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def peak_mib() -> float:
  """High-water mark of the resident set since the start or the last ``reset_peak`` (MiB)."""
  kib = _status_kib("VmHWM")
  return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def trim() -> bool:
  """Return freed heap memory to the OS (glibc ``malloc_trim(0)``), so that memory a previous
  phase freed (e.g. XLA's compiler) neither counts in the RSS nor hides the next phase's rise."""
  try:
    import ctypes  # pylint: disable=import-outside-toplevel

    return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
  except (OSError, AttributeError):
    return False


def reset_peak() -> bool:
  """``trim()``, then set the high-water mark to the current RSS; False if not possible."""
  trim()
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False
