"""SynthRes experiments, one per ``TASK:STAGE`` (``--config=configs/synthres.py:TASK:STAGE``).

TASK: ``segmentation`` (the default schema's SegNet 'demo' on slow_pan 64x64, 8-frame clips)
or ``pose`` (the same backbone with one heatmap per joint, 15; the head, loss and decoding are
``resq_jax.tasks.pose.PoseTask``'s defaults: Gaussian targets of sigma 2 px at 64x64,
spatial-softmax KL loss over visible joints, argmax + parabolic sub-pixel decoding, PCK@0.2 of
the person box, docs/pose.md; 960 training and 96 test clips).

STAGE: ``fp`` (float training), ``ptq_RECIPE`` (calibrate from the FP run, no training) or
``qat_RECIPE`` (fine-tune from the FP run at a tenth of the FP peak learning rate), with
RECIPE ``fq`` (Frame Quantization W4A4), ``resq`` (static ResQ: W8A8 keyframes, W4A4
residuals, K=4, closed loop) or ``dynamic`` (dynamic ResQ: W8A8 keyframes, fixed-step policy
over {0, 2, 4, 8} residual bits, K=4). PTQ and QAT start from ``--config.init_from``:

  python train.py --config configs/synthres.py:segmentation:fp --workdir runs/fp
  python train.py --config configs/synthres.py:segmentation:qat_resq --workdir runs/qat_resq \\
    --config.init_from=runs/fp

Pose, measured on 2 shared CPU cores (docs/pose.md): 95.8% PCK@0.2 on the test split in 3-10
minutes, depending on the load:
  python benchmarks/train_pose.py --config configs/synthres.py:pose:fp --workdir runs/pose_fp
"""

from configs import default

TASKS = ("segmentation", "pose")
RECIPES = {"fq": {"mode": "fq", "key_bits": (4, 4)}, "resq": {"mode": "resq"}}
RECIPES["dynamic"] = {"mode": "dynamic"}
STAGES = ("fp", *(f"{stage}_{r}" for stage in ("ptq", "qat") for r in RECIPES))
# QAT fine-tuning per task: a tenth of the FP peak learning rate, a short run.
QAT = {
  "segmentation": {"optim.lr": 2e-4, "train.num_steps": 60},
  "pose": {
    "optim.lr": 2e-4,
    "optim.warmup_steps": 10,
    "train.num_steps": 100,
    "train.checkpoint_every": 100,
    "train.log_every": 10,
  },
}


def fp_config(task: str):
  """The float run of ``task``: what every PTQ / QAT stage of it starts from."""
  c = default.get_config()
  c.task = task
  c.stage = "fp"
  c.quant.mode = "float"
  if task == "pose":
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


def apply(c, overrides: dict):
  """``c`` with dotted-key ``overrides`` set (``{'optim.lr': 1e-3}``); returns ``c``."""
  for key, value in overrides.items():
    section, _, leaf = key.rpartition(".")
    (c[section] if section else c)[leaf] = value
  return c


def stage_config(c, stage: str, qat: dict):
  """``c`` (a float run's config) at ``stage`` (fp | ptq_RECIPE | qat_RECIPE), ``qat``: the
  overrides of the QAT stages. ValueError for an unknown stage."""
  if stage not in STAGES:
    raise ValueError(f"stage {stage!r}: expected one of {' | '.join(STAGES)}")
  if stage != "fp":
    c.stage, _, recipe = stage.partition("_")
    apply(c, {f"quant.{k}": v for k, v in RECIPES[recipe].items()})
    if c.stage == "qat":
      apply(c, qat)
  return c


def get_config(arg: str = "segmentation:fp"):
  task, _, stage = arg.partition(":")
  if task not in TASKS:
    raise ValueError(f"configs/synthres.py:{arg}: task {task!r}, expected one of {TASKS}")
  return stage_config(fp_config(task), stage or "fp", QAT[task])
