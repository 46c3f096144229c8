"""Command line: print the temporal-redundancy table of the SynthRes regimes.

  python -m resq_jax.data.stats --n_clips 64 [--split validation] [--regimes fast_pan ...]

The library functions live in resq_jax.data.redundancy (this module is kept out of the package
imports so that `python -m` runs it cleanly).
"""

from __future__ import annotations

import argparse

from resq_jax.data import redundancy, spec


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n_clips", type=int, default=64)
  parser.add_argument("--split", default="validation", choices=spec.SPLITS)
  parser.add_argument("--regimes", nargs="+", default=list(spec.REGIMES), choices=spec.REGIMES)
  parser.add_argument("--height", type=int, default=spec.DEFAULT_HEIGHT)
  parser.add_argument("--width", type=int, default=spec.DEFAULT_WIDTH)
  parser.add_argument("--num_frames", type=int, default=spec.DEFAULT_NUM_FRAMES)
  args = parser.parse_args(argv)
  results = [
    redundancy.temporal_redundancy(
      r,
      args.n_clips,
      split=args.split,
      height=args.height,
      width=args.width,
      num_frames=args.num_frames,
    )
    for r in args.regimes
  ]
  print(redundancy.markdown_table(results))


if __name__ == "__main__":
  main()
