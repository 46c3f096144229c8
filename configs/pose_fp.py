"""Pose, stage 1: float training of the joint-heatmap network on SynthRes (task 'pose').

The same multi-resolution backbone as segmentation (SegNet 'demo' preset) with one output
channel per joint (15); the head, loss and decoding are `resq_jax.tasks.pose.PoseTask`'s
defaults: Gaussian targets of sigma 2 px at 64x64, spatial-softmax KL loss over visible
joints, argmax + parabolic sub-pixel decoding, PCK@0.2 of the person box (docs/pose.md).

Measured on 2 shared CPU cores (docs/pose.md): 95.8% PCK@0.2 on the test split in 3-10
minutes, depending on the load:
  python benchmarks/train_pose.py --config configs/pose_fp.py --workdir runs/pose_fp  # test
  python train.py --config configs/pose_fp.py --workdir runs/pose_fp  # validation split
"""

from configs import default


def get_config():
  c = default.get_config()
  c.task = "pose"
  c.stage = "fp"
  c.quant.mode = "float"
  c.data.num_train = 960  # twice the segmentation default: 960 figures, 3 actions
  c.data.num_validation = 48
  c.data.num_test = 96  # PCK with a bootstrap interval over clips: more test clips
  c.data.batch_size = 8
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 30
  c.train.num_steps = 600
  c.train.checkpoint_every = 200
  c.train.log_every = 50
  return c
