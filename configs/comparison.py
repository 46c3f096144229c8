"""The plan of docs/results.md (data): per task, its configs, the QAT runs (one learning rate
per family), and the sweep of each motion regime. benchmarks/comparison.py runs it.

QAT: every run starts from the task's float run, distils from it (train.distill_weight) and
trains ``QAT_STEPS`` steps. Learning rates per family: frame quantization moves the weights
furthest from the float model (every frame at low precision) and gets the largest; static and
dynamic ResQ keep W8A8 keyframes and fine-tune gently.
"""

from configs import sweeps

QAT_STEPS = 150
QAT_WARMUP = 10
DISTILL_WEIGHT = 1.0
DISTILL_TEMPERATURE = 2.0
# Measured on pose validation clips (docs/results.md): ResQ W8A4 at 2e-4 ended further from
# float than its PTQ start (keypoint distance 0.634 vs 0.529, with the former absolute scale
# steps), at 5e-5 with relative scale steps closer (0.496).
FAMILY_LR = {"fq": 5e-4, "resq": 5e-5, "dynamic": 5e-5}


def _quant(setting: dict) -> dict:
  """A sweep setting of configs/sweeps.py as ``quant`` overrides (without its display keys)."""
  return {k: v for k, v in setting.items() if k not in ("name", "family")}


# Workdir name -> quant overrides. The FQ runs give QAT its own frame-quantization front
# (err/FQ of the QAT rows is measured against it); the ResQ runs sit between 25% and 50% of
# W8A8, the range where the PTQ comparison is closest.
QAT_RUNS = {
  "qat_fq_w2a2": _quant(sweeps.fq(2, 2)),
  "qat_fq_w3a3": _quant(sweeps.fq(3, 3)),
  "qat_fq_w4a4": _quant(sweeps.fq(4, 4)),
  "qat_fq_w5a5": _quant(sweeps.fq(5, 5)),
  "qat_resq_k4_w4a4": _quant(sweeps.resq(4, residual=(4, 4))),
  "qat_resq_k8_w4a4": _quant(sweeps.resq(8, residual=(4, 4))),
  "qat_resq_k4_w8a4": _quant(sweeps.resq(4, residual=(8, 4))),
  "qat_resq_k4_w2a2": _quant(sweeps.resq(4, residual=(2, 2))),
  "qat_dynamic_step2": _quant(sweeps.dynamic(2.0)),
}

# task -> its configs, its QAT runs, the sweep of the regime its float model was trained on
# (main) and the sweep of the other regimes (evaluated with the same float model: a shift of
# motion statistics, which is what the regimes vary). Sized for 2 CPU cores (about 1.5 hours
# for everything, docs/results.md).
TASKS = {
  "segmentation": {
    "fp_config": "configs/results.py:seg:fp",
    "config": "configs/results.py:seg",
    "qat_runs": tuple(QAT_RUNS),
    "main_regime": "slow_pan",
    "main_sweep": "comparison",
    "regimes": ("static_cam", "fast_pan", "flicker"),
    "regime_sweep": "core",
  },
  "pose": {
    "fp_config": "configs/results.py:pose:fp",
    "config": "configs/results.py:pose",
    "qat_runs": (
      "qat_fq_w3a3",
      "qat_fq_w4a4",
      "qat_fq_w5a5",
      "qat_resq_k4_w4a4",
      "qat_resq_k4_w8a4",
      "qat_dynamic_step2",
    ),
    "main_regime": "slow_pan",
    "main_sweep": "comparison",
    "regimes": ("static_cam", "fast_pan", "flicker"),
    "regime_sweep": "core",
  },
}
