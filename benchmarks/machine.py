"""Machine facts for benchmark headers (shared by the scripts in this folder)."""

import platform
import subprocess


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
