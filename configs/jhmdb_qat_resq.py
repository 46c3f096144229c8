"""JHMDB pose QAT: static ResQ (W8A8 keyframes, W4A4 residuals, K=4, closed loop) from the
JHMDB FP run (set --config.init_from).

Build the data as for configs/jhmdb_fp.py (same size, --num_frames 8), then:
  python train.py --config configs/jhmdb_qat_resq.py --workdir runs/jhmdb_qat_resq \\
    --config.init_from=runs/jhmdb_fp
"""

from configs import jhmdb_fp


def get_config():
  c = jhmdb_fp.get_config()  # same task, data and model as the FP run it starts from
  c.stage = "qat"
  c.quant.mode = "resq"
  c.optim.lr = 2e-4  # fine-tuning: a tenth of the FP peak
  c.optim.warmup_steps = 50
  c.train.num_steps = 1000
  c.train.checkpoint_every = 500
  return c
