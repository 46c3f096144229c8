"""Pose PTQ: calibrate dynamic ResQ (W8A8 keyframes, fixed-step policy over {0, 2, 4, 8} bits,
K=4) from the pose FP run; no training."""

from configs import pose_fp


def get_config():
  c = pose_fp.get_config()  # same task, data and model as the FP run it starts from
  c.stage = "ptq"
  c.quant.mode = "dynamic"
  return c
