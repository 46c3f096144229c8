"""The pose demo (`python demo.py --task pose`): float training of the joint-heatmap network,
QAT of each family (the stages of configs/demo.py) and the sweep, scored by PCK@0.2 on the test
split. 300 float steps (200 already reach 92% PCK@0.2, docs/pose.md) keep it near 10 minutes on
2 CPU cores."""

from configs import default, pose_fp


def get_config():
  c = pose_fp.get_config()
  c.train.num_steps = 300
  c.train.checkpoint_every = 100
  c.eval.split = "test"
  c.eval.sweep = default.get_config().eval.sweep  # the demo sweep
  c.train.distill_weight = 1.0  # QAT distils from the float run (as configs/demo.py)
  c.train.distill_temperature = 2.0
  return c
