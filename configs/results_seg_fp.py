"""docs/results.md, segmentation: the float model (FP mIoU >= 70 on the 240-clip test split).

Float training needs scenes, not frames: frames of one clip are nearly the same image, so the
float net trains on 24,000 two-frame clips (16 per step, 32 frames) instead of few long clips:
on the same compute, 8 x more distinct scenes per step than the demo's 8-frame clips. The
'strong' preset's half-resolution refinement keeps the boundaries of the small shapes.

  python train.py --config configs/results_seg_fp.py --workdir runs/results/seg/fp

(train.py evaluates on this config's own 2-frame test split; the comparison evaluates the
same weights on configs/results_seg.py's 8-frame test clips.) The loss weights of
configs/results_seg.py (shapes 4x) apply here too. Measured: 78.9 mIoU [77.6, 80.1] on the 240
eight-frame test clips; 6,000 steps took 24.7 min on 2 CPU cores shared with another run
(BENCHMARKS.md section 9).
"""

from configs import results_seg


def get_config():
  c = results_seg.get_config()
  c.stage = "fp"
  c.quant.mode = "float"
  c.data.num_frames = 2
  c.data.num_train = 24000
  c.data.num_test = 48
  c.data.batch_size = 16
  c.optim.lr = 3e-3
  c.train.num_steps = 6000
  c.train.log_every = 250
  c.train.checkpoint_every = 500
  c.eval.sweep = "fp"
  return c
