"""The README's API tour runs as written (its own asserts are the oracle: exact BOPs ratio of a
static ResQ clip, streaming equal to run_clip)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
  assert blocks, "README has no python example"
  for block in blocks:
    exec(compile(block, str(README), "exec"), {"__name__": "readme"})


def test_ci_runs_the_readme_test_command():
  text = README.read_text()
  commands = [line for line in text.splitlines() if line.startswith("python -m pytest")]
  assert len(commands) == 1
  ci = (README.parent / ".ci" / "run").read_text()
  assert "grep -m1 -E '^python -m pytest' README.md" in ci
