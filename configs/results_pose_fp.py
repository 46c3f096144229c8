"""docs/results.md, pose: the float model (configs/pose_fp.py's recipe: 600 steps, 95.8%
PCK@0.2 on its 96 test clips, docs/pose.md), trained on the clips of configs/results_pose.py.

  python train.py --config configs/results_pose_fp.py --workdir runs/results/pose/fp
"""

from configs import results_pose


def get_config():
  c = results_pose.get_config()
  c.stage = "fp"
  c.quant.mode = "float"
  c.optim.lr = 2e-3
  c.train.num_steps = 600
  c.eval.sweep = "fp"
  return c
