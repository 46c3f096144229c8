"""A seconds-long plan for benchmarks/comparison.py's test: the tiny config, one QAT run, the
'tiny' sweep on two regimes."""

QAT_STEPS = 2
QAT_WARMUP = 1
DISTILL_WEIGHT = 1.0
DISTILL_TEMPERATURE = 2.0
FAMILY_LR = {"fq": 1e-3, "resq": 1e-3, "dynamic": 1e-3}
QAT_RUNS = {"qat_resq": {"mode": "resq", "key_bits": (8, 8), "residual_bits": (4, 4), "period": 2}}
TASKS = {
  "segmentation": {
    "fp_config": "configs/tiny.py",
    "config": "configs/tiny.py",
    "qat_runs": ("qat_resq",),
    "main_regime": "slow_pan",
    "main_sweep": "tiny",
    "regimes": ("fast_pan",),
    "regime_sweep": "tiny",
  },
}
