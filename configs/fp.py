"""Stage 1: float training of the segmentation network on SynthRes clips."""

from configs import default


def get_config():
  c = default.get_config()
  c.stage = "fp"
  c.quant.mode = "float"
  return c
