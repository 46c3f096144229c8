"""Pose PTQ: calibrate Frame Quantization W4A4 from the pose FP run; no training."""

from configs import pose_fp


def get_config():
  c = pose_fp.get_config()  # same task, data and model as the FP run it starts from
  c.stage = "ptq"
  c.quant.mode = "fq"
  c.quant.key_bits = (4, 4)
  return c
