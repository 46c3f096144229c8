"""Cityscapes QAT: Frame Quantization W4A4 fine-tuned from the Cityscapes FP run (set
--config.init_from); the per-frame baseline of configs/cityscapes_qat_resq.py.

Build the data as for configs/cityscapes_fp.py (same size and clip length), then:
  python train.py --config configs/cityscapes_qat_fq.py --workdir runs/cityscapes_qat_fq \\
    --config.init_from=runs/cityscapes_fp
"""

from configs import cityscapes_qat_resq


def get_config():
  c = cityscapes_qat_resq.get_config()
  c.quant.mode = "fq"
  c.quant.key_bits = (4, 4)
  return c
