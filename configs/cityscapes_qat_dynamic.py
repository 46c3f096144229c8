"""Cityscapes QAT: dynamic ResQ (W8A8 keyframes, fixed-step policy over {0, 2, 4, 8} residual
bits, K=4) from the Cityscapes FP run (set --config.init_from).

Build the data as for configs/cityscapes_fp.py (same size and clip length), then:
  python train.py --config configs/cityscapes_qat_dynamic.py \\
    --workdir runs/cityscapes_qat_dynamic --config.init_from=runs/cityscapes_fp
"""

from configs import cityscapes_qat_resq


def get_config():
  c = cityscapes_qat_resq.get_config()
  c.quant.mode = "dynamic"
  return c
