"""QAT: Frame Quantization W4A4 fine-tuned from an FP run (set --config.init_from)."""

from configs import default


def get_config():
  c = default.get_config()
  c.stage = "qat"
  c.quant.mode = "fq"
  c.quant.key_bits = (4, 4)
  c.optim.lr = 2e-4
  c.train.num_steps = 60
  return c
