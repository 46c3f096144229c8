"""Pose QAT: Frame Quantization W4A4 fine-tuned from the pose FP run (set --config.init_from)."""

from configs import pose_fp


def get_config():
  c = pose_fp.get_config()  # same task, data and model as the FP run it starts from
  c.stage = "qat"
  c.quant.mode = "fq"
  c.quant.key_bits = (4, 4)
  c.optim.lr = 2e-4  # fine-tuning: a tenth of the FP peak
  c.optim.warmup_steps = 10
  c.train.num_steps = 100
  c.train.checkpoint_every = 100
  c.train.log_every = 10
  return c
