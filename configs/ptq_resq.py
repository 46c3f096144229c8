"""PTQ: calibrate static ResQ (W8A8 keyframes, W4A4 residuals, K=4) from an FP run; no training."""

from configs import default


def get_config():
  c = default.get_config()
  c.stage = "ptq"
  c.quant.mode = "resq"
  return c
