"""Builds a real dataset from its manual download into a TFDS data directory (no TensorFlow).

  python -m resq_jax.data.build --dataset cityscapes_video --manual_dir PATH --data_dir DIR
  python -m resq_jax.data.build --dataset jhmdb --manual_dir PATH --data_dir DIR
  python -m resq_jax.data.build --dataset davis2017 --manual_dir PATH --data_dir DIR

Options --height/--width/--num_frames/--stride override the dataset's defaults (see
docs/data.md, "Real datasets"); --num_workers reads images in that many threads. Prints
progress about every 10 seconds and, at the end, the name to pass to `tfds.data_source`.
A second run with the same settings does nothing.
"""

from __future__ import annotations

import argparse
import sys

from resq_jax.data import cityscapes_video, davis, jhmdb

BUILDERS = {
  "cityscapes_video": cityscapes_video.build_cityscapes_video,
  "jhmdb": jhmdb.build_jhmdb,
  "davis2017": davis.build_davis2017,
}


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m resq_jax.data.build", description=__doc__.split("\n")[0]
  )
  parser.add_argument("--dataset", required=True, choices=sorted(BUILDERS))
  parser.add_argument("--manual_dir", required=True, help="the downloaded, unpacked data")
  parser.add_argument("--data_dir", required=True, help="TFDS data directory to write")
  parser.add_argument("--height", type=int, help="output height (default per dataset)")
  parser.add_argument("--width", type=int, help="output width (default per dataset)")
  parser.add_argument(
    "--num_frames",
    type=int,
    help="frames per clip (cityscapes_video: 1-20, default 4; jhmdb, "
    "davis2017: 0 = whole videos, the default)",
  )
  parser.add_argument(
    "--stride",
    type=int,
    help="jhmdb, davis2017: first-frame step between clips (default num_frames)",
  )
  parser.add_argument(
    "--split_number", type=int, choices=(1, 2, 3), help="jhmdb: official split (default 1)"
  )
  parser.add_argument("--num_workers", type=int, default=2, help="image reading threads")
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  settings = {
    k: getattr(args, k)
    for k in ("height", "width", "num_frames", "stride", "split_number")
    if getattr(args, k) is not None
  }
  if args.dataset == "cityscapes_video" and {"stride", "split_number"} & set(settings):
    print("--stride and --split_number do not apply to cityscapes_video", file=sys.stderr)
    return 2
  if args.dataset == "davis2017" and "split_number" in settings:
    print("--split_number applies to jhmdb only", file=sys.stderr)
    return 2
  try:
    builder = BUILDERS[args.dataset](
      args.data_dir, args.manual_dir, num_workers=args.num_workers, verbose=True, **settings
    )
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  splits = {name: info.num_examples for name, info in builder.info.splits.items()}
  print(
    f"done: tfds.data_source('{builder.name}/{builder.builder_config.name}', "
    f"data_dir='{args.data_dir}') -> {splits}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
