"""docs/results.md, pose: the equal-cost comparison on SynthRes pose (PCK@0.2 with a 95%
bootstrap interval over 240 test clips, and the keypoint distance to the float model's
predictions). PTQ and QAT start from the float run of configs/results_pose_fp.py."""

from configs import pose_fp


def get_config():
  c = pose_fp.get_config()
  c.data.num_frames = 8
  c.data.num_train = 960
  c.data.num_validation = 48
  c.data.num_test = 240
  c.eval.batch_size = 16
  c.eval.split = "test"
  c.eval.sweep = "comparison"
  c.train.log_every = 50
  c.train.checkpoint_every = 200
  return c
