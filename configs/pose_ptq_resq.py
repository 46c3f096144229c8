"""Pose PTQ: calibrate static ResQ (W8A8 keyframes, W4A4 residuals, K=4) from the pose FP run;
no training."""

from configs import pose_fp


def get_config():
  c = pose_fp.get_config()  # same task, data and model as the FP run it starts from
  c.stage = "ptq"
  c.quant.mode = "resq"
  return c
