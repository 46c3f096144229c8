"""QAT: dynamic ResQ (W8A8 keyframes, residual weights 4 bits, fixed-step policy over
{0, 2, 4, 8} bits, K=4) from an FP run."""

from configs import default


def get_config():
  c = default.get_config()
  c.stage = "qat"
  c.quant.mode = "dynamic"
  c.optim.lr = 2e-4
  c.train.num_steps = 60
  return c
