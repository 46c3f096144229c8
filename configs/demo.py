"""The CPU demo (python demo.py): SynthRes slow_pan 64x64, 8-frame clips, the 'demo' SegNet;
``configs/demo.py:pose`` (python demo.py --task pose) the pose demo.

demo.py derives every stage from this config: FP training, then QAT for each of
``QAT_STAGES`` (FQ W4A4, static ResQ, dynamic ResQ) from the FP checkpoint at learning rate
``QAT_LR``, then the evaluation sweep (FP, PTQ of FQ / ResQ / dynamic ResQ, and the QAT
runs). Sized for a 2-core CPU (see BENCHMARKS.md).

The pose demo: float training of the joint-heatmap network (configs/synthres.py:pose:fp), QAT
of each family and the sweep, scored by PCK@0.2 on the test split. 300 float steps (200
already reach 92% PCK@0.2, docs/pose.md) keep it near 10 minutes on 2 CPU cores.
"""

from configs import default, synthres

# QAT stages of the demo: workdir name -> overrides of the `quant` section.
QAT_STAGES = {
  "qat_fq_w4a4": {"mode": "fq", "key_bits": (4, 4)},
  "qat_resq": {"mode": "resq"},
  "qat_dynamic": {"mode": "dynamic"},
}
# optim.lr of the QAT stages per family (the FP stage keeps the config's): frame quantization
# moves furthest from the float weights; ResQ keeps W8A8 keyframes and fine-tunes gently (the
# rates of configs/comparison.py, measured there).
QAT_LR = {"fq": 5e-4, "resq": 5e-5, "dynamic": 5e-5}


def get_config(task: str = "segmentation"):
  if task == "pose":
    return _pose()
  if task != "segmentation":
    raise ValueError(f"configs/demo.py:{task}: expected segmentation | pose")
  c = default.get_config()
  c.data.num_train = 480
  c.data.num_validation = 48
  c.data.num_test = 48
  c.train.num_steps = 600  # FP steps; QAT stages use demo.py's --qat_steps
  c.train.checkpoint_every = 100
  c.eval.sweep = "demo"
  # The shape classes cover few pixels but count as much as the backdrop in mIoU: weight them
  # in the loss (as configs/results.py:seg; the float model was at 38 mIoU without).
  c.train.class_weights = (1.0, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0)
  # QAT distils from the float run (read by the QAT stages only).
  c.train.distill_weight = 1.0
  c.train.distill_temperature = 2.0
  return c


def _pose():
  c = synthres.fp_config("pose")
  c.train.num_steps = 300
  c.train.checkpoint_every = 100
  c.eval.split = "test"
  c.eval.sweep = default.get_config().eval.sweep  # the demo sweep
  c.train.distill_weight = 1.0  # QAT distils from the float run (as segmentation)
  c.train.distill_temperature = 2.0
  return c
