"""QAT: static ResQ (W8A8 keyframes, W4A4 residuals, K=4, closed loop) from an FP run."""

from configs import default


def get_config():
  c = default.get_config()
  c.stage = "qat"
  c.quant.mode = "resq"
  c.optim.lr = 2e-4
  c.train.num_steps = 60
  return c
