"""Cityscapes video segmentation, one experiment per STAGE
(``--config=configs/cityscapes.py:STAGE``, STAGE as in configs/synthres.py: ``fp`` by default,
``qat_resq``, ``qat_fq``, ``qat_dynamic``, ``ptq_*``).

fp: float training on 4-frame clips at 256x512. Each clip is frames 17-20 of a
leftImg8bit_sequence snippet, ending at the gtFine-annotated frame; only that last frame is
labelled (19 trainIds; the other frames are ignored by the loss and mIoU:
resq_jax.data.loader.CityscapesLabels), so training and evaluation score the annotated frame
while ResQ runs the three frames before it. SegNet 'base' preset (GPUs) with 19 output
channels. 2975 training clips: 372 steps of 8 clips per epoch, 30,000 steps is about 80 epochs
(not measured here). The validation split holds 500 clips; evaluation reads 496 (62 batches of
8; the last partial batch is dropped).

qat_*: the same task, data and model, fine-tuned from the FP run (--config.init_from) for 3000
steps at a tenth of the FP peak: static ResQ (W8A8 keyframes, W4A4 residuals, K=4, closed loop;
with 4-frame clips the annotated frame is the third residual frame), FQ W4A4 (the per-frame
baseline) or dynamic ResQ.

Build the data first, once (leftImg8bit_sequence_trainvaltest.zip and gtFine_trainvaltest.zip
unpacked into one directory, docs/data.md "Real datasets"):
  python -m resq_jax.data.build --dataset cityscapes_video --manual_dir PATH/TO/cityscapes \\
    --data_dir runs/data --height 256 --width 512 --num_frames 4
Then:
  python train.py --config configs/cityscapes.py:fp --workdir runs/cityscapes_fp
  python train.py --config configs/cityscapes.py:qat_resq --workdir runs/cityscapes_qat_resq \\
    --config.init_from=runs/cityscapes_fp
"""

from configs import default, synthres

QAT = {
  "optim.lr": 2e-4,  # fine-tuning: a tenth of the FP peak
  "optim.warmup_steps": 100,
  "train.num_steps": 3000,
  "train.checkpoint_every": 500,
}


def get_config(arg: str = "fp"):
  c = default.get_config()
  c.task = "segmentation"
  c.stage = "fp"
  c.quant.mode = "float"
  c.data.dataset = "cityscapes_video"  # built by python -m resq_jax.data.build (above)
  c.data.height = 256
  c.data.width = 512
  c.data.num_frames = 4  # at most 20: the snippet's frames up to the annotated one
  c.eval.sweep = "short"  # periods up to the clip length
  c.data.batch_size = 8
  c.model.preset = "base"
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 500
  c.train.num_steps = 30_000
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.eval.batch_size = 8
  c.eval.split = "validation"  # Cityscapes' test labels are not public (not built)
  return synthres.stage_config(c, arg, QAT)
