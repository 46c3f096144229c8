"""Cityscapes QAT: static ResQ (W8A8 keyframes, W4A4 residuals, K=4, closed loop) from the
Cityscapes FP run (set --config.init_from). With 4-frame clips and K=4 the annotated (last)
frame is the third residual frame.

Build the data as for configs/cityscapes_fp.py (same size and clip length), then:
  python train.py --config configs/cityscapes_qat_resq.py --workdir runs/cityscapes_qat_resq \\
    --config.init_from=runs/cityscapes_fp
"""

from configs import cityscapes_fp


def get_config():
  c = cityscapes_fp.get_config()  # same task, data and model as the FP run it starts from
  c.stage = "qat"
  c.quant.mode = "resq"
  c.optim.lr = 2e-4  # fine-tuning: a tenth of the FP peak
  c.optim.warmup_steps = 100
  c.train.num_steps = 3000
  c.train.checkpoint_every = 500
  return c
