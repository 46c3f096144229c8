"""The CPU demo (python demo.py): SynthRes slow_pan 64x64, 8-frame clips, the 'demo' SegNet.

demo.py derives every stage from this config: FP training, then QAT for FQ W4A4, static ResQ
and dynamic ResQ from the FP checkpoint, then the evaluation sweep (FP, PTQ of FQ / ResQ /
dynamic ResQ, and the QAT runs). Sized for a 2-core CPU (see BENCHMARKS.md).
"""
from configs import default


def get_config():
  c = default.get_config()
  c.data.num_train = 480
  c.data.num_validation = 48
  c.data.num_test = 48
  c.train.num_steps = 600  # FP steps; QAT stages use demo.py's --qat_steps
  c.train.checkpoint_every = 100
  c.eval.sweep = "demo"
  return c
