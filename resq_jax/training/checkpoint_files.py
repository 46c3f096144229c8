"""The files of a checkpoint: the names of its items, its directory, and the integrity check of
one step.

One step of a `Checkpointer` directory (`resq_jax.training.checkpoint`) holds the items
`<step>/state/` (`STATE_ITEM`), `<step>/data_iter/` (`DATA_ITEM`) and `<step>/extra/`
(`EXTRA_ITEM`), and `<step>/checksums.json` (`CHECKSUM_FILE`, `write_checksums`): the sha256 of
each of its files, except Orbax's `_CHECKPOINT_METADATA`, which Orbax rewrites after the commit.
`damage_of` checks a step against it; a step without one (written by an older version,
`has_checksums`) is not reported as damaged. Damaged steps are moved to `<directory>/damaged/`
(`DAMAGED_DIR`).
"""

from __future__ import annotations

import hashlib
import json
import os

STATE_ITEM = "state"
DATA_ITEM = "data_iter"
EXTRA_ITEM = "extra"
CHECKSUM_FILE = "checksums.json"
DAMAGED_DIR = "damaged"
# Files Orbax rewrites after the commit (step metadata with the commit time): not checksummed.
_UNHASHED = frozenset({CHECKSUM_FILE, "_CHECKPOINT_METADATA"})


def checkpoint_dir(workdir: str | os.PathLike) -> str:
  """The checkpoint directory of a training workdir: `<workdir>/checkpoints`."""
  return os.path.join(os.fspath(workdir), "checkpoints")


def _file_digests(step_dir: str | os.PathLike) -> dict[str, str]:
  """{path relative to `step_dir`: sha256 hex} of every file below it, except `_UNHASHED`
  at its top level."""
  root = os.fspath(step_dir)
  out = {}
  for dirpath, _, filenames in os.walk(root):
    for name in filenames:
      path = os.path.join(dirpath, name)
      rel = os.path.relpath(path, root)
      if rel in _UNHASHED:
        continue
      digest = hashlib.sha256()
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          digest.update(block)
      out[rel] = digest.hexdigest()
  return out


def write_checksums(step_dir: str | os.PathLike) -> None:
  """Writes `<step_dir>/checksums.json` (sha256 of every file, see `_UNHASHED`)."""
  digests = _file_digests(step_dir)
  path = os.path.join(os.fspath(step_dir), CHECKSUM_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump({"sha256": digests}, f, indent=0, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def damage_of(step_dir: str | os.PathLike) -> str | None:
  """What is wrong with a step directory according to its `checksums.json`: None if every
  listed file is present with its checksum (or if there is no `checksums.json` to check
  against: see `has_checksums`), else a short description naming the first bad file."""
  path = os.path.join(os.fspath(step_dir), CHECKSUM_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      expected = json.load(f)["sha256"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    return f"{CHECKSUM_FILE} is unreadable ({type(e).__name__})"
  actual = _file_digests(step_dir)
  for rel, digest in sorted(expected.items()):
    if rel not in actual:
      return f"{rel} is missing"
    if actual[rel] != digest:
      return f"{rel} does not match its checksum"
  return None


def has_checksums(step_dir: str | os.PathLike) -> bool:
  return os.path.exists(os.path.join(os.fspath(step_dir), CHECKSUM_FILE))
