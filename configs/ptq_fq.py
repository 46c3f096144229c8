"""PTQ: calibrate Frame Quantization W4A4 from an FP run; no training."""

from configs import default


def get_config():
  c = default.get_config()
  c.stage = "ptq"
  c.quant.mode = "fq"
  c.quant.key_bits = (4, 4)
  return c
