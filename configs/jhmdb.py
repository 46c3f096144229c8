"""JHMDB pose, one experiment per STAGE (``--config=configs/jhmdb.py:STAGE``, STAGE as in
configs/synthres.py: ``fp`` by default, ``qat_resq``, ``qat_fq``, ``qat_dynamic``, ``ptq_*``).

fp: float training of the joint-heatmap network on 8-frame clips at 128x160 (task 'pose': 15
joint heatmaps, PCK@0.2 of the puppet-mask person box). JHMDB videos are 15-40 frames long; the
pipeline needs fixed-length clips, so build with --num_frames 8 (consecutive 8-frame clips,
stride 8, trailing frames dropped; official split 1). Split 1 has 660 training and 268 test
videos (roughly 2,000 and 800 clips); JHMDB has no validation split, so every evaluation reads
the test split (eval.split='test'). SegNet 'demo' preset with 15 output channels; 6,000 steps
of 8 clips is about 24 epochs (not measured here).

qat_*: the same task, data and model, fine-tuned from the FP run (--config.init_from) for 1000
steps at a tenth of the FP peak, e.g. static ResQ (W8A8 keyframes, W4A4 residuals, K=4, closed
loop).

Build the data first, once (Rename_Images, joint_positions, puppet_mask and splits unpacked
into one directory, docs/data.md "Real datasets"):
  python -m resq_jax.data.build --dataset jhmdb --manual_dir PATH/TO/jhmdb \\
    --data_dir runs/data --height 128 --width 160 --num_frames 8
Then:
  python train.py --config configs/jhmdb.py:fp --workdir runs/jhmdb_fp
  python train.py --config configs/jhmdb.py:qat_resq --workdir runs/jhmdb_qat_resq \\
    --config.init_from=runs/jhmdb_fp
"""

from configs import default, synthres

QAT = {
  "optim.lr": 2e-4,  # fine-tuning: a tenth of the FP peak
  "optim.warmup_steps": 50,
  "train.num_steps": 1000,
  "train.checkpoint_every": 500,
}


def get_config(arg: str = "fp"):
  c = default.get_config()
  c.task = "pose"
  c.stage = "fp"
  c.quant.mode = "float"
  c.data.dataset = "jhmdb"  # built by python -m resq_jax.data.build (above)
  c.data.height = 128
  c.data.width = 160
  c.data.num_frames = 8  # the build's --num_frames (whole videos have variable length)
  c.data.batch_size = 8
  c.model.preset = "demo"
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 200
  c.train.num_steps = 6000
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.eval.batch_size = 8
  c.eval.split = "test"  # JHMDB has train and test splits only
  return synthres.stage_config(c, arg, QAT)
