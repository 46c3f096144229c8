"""The experiment schema: every config key with its documented default.

``default_config()`` is the reference key set: ``config_lib.RULES`` holds one rule per key
(``tests/test_config_validation.py`` keeps the two equal), and every config file of
``configs/`` starts from it (``configs/default.py`` re-exports it and adds the repository's
named evaluation sweeps, ``configs/sweeps.py``). It lives inside the package so that an
installed (non-editable) resq_jax validates configs without the repository.

Run: python train.py --config configs/<name>.py --workdir DIR [--config.optim.lr=1e-3 ...]
"""

import ml_collections

# The sweep every config has: the float model alone (and any eval.qat_runs). Named sweeps of
# quantization settings are experiment data: configs/sweeps.py.
FP_SWEEP = ({"mode": "float"},)


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # fp: float training; ptq: calibrate quantizer ranges on a few clips (no training);
  # qat: quantization-aware fine-tuning over clips (scan over frames) from `init_from`.
  c.stage = "fp"
  c.init_from = ""  # workdir (or checkpoint dir) of the FP run that ptq / qat start from
  c.distributed = False  # jax.distributed.initialize() for multi-host runs
  c.task = "segmentation"  # segmentation | pose (resq_jax.tasks)

  c.data = ml_collections.ConfigDict()
  # synth_res | cityscapes_video | jhmdb | davis2017. SynthRes is built on first use; a real
  # dataset is built beforehand, once, by `python -m resq_jax.data.build` (README, "Real
  # datasets") at data.height x data.width with data.num_frames-frame clips, and the SynthRes
  # keys (regime, num_train, num_validation, num_test) are then unused.
  c.data.dataset = "synth_res"
  c.data.data_dir = "runs/data"  # where SynthRes is built (offline, on first use) or read
  c.data.regime = "slow_pan"  # static_cam | slow_pan | fast_pan | flicker
  c.data.height = 64
  c.data.width = 64
  c.data.num_frames = 8  # frames per clip
  c.data.num_train = 480
  c.data.num_validation = 48  # a multiple of eval.batch_size (no clip left unevaluated)
  c.data.num_test = 48  # may be 0: nothing reads the test split yet
  c.data.batch_size = 8  # clips per step, over all devices (divisible by the device count)
  c.data.worker_count = 0  # grain worker processes (0: read in the main process)

  c.model = ml_collections.ConfigDict()
  c.model.preset = "demo"  # tiny | demo | base (resq_jax.nn.models.segnet_preset)

  # The quantization recipe of every conv (resq_jax.quant.recipe.LayerRecipe).
  c.quant = ml_collections.ConfigDict()
  # float | fq | resq | dynamic | frame_precision (VideoIQ-style: each frame runs at one of the
  # FQ precisions quant.frame_bits, picked by quant.frame_thresholds; evaluation sweeps only,
  # not a ptq / qat stage).
  c.quant.mode = "float"
  c.quant.key_bits = (8, 8)  # (weight, activation) bits of keyframes (and of FQ)
  c.quant.residual_bits = (4, 4)  # (weight, activation) bits of residual frames
  c.quant.period = 4  # K: keyframe every K frames (float and fq have no keyframes: K = 1)
  c.quant.ref_mode = "closed"  # closed | key | prev
  # Dynamic ResQ policy: fixed_step | ladder | gate | hold. gate: skip a location whose
  # max_c |r| < gate_threshold, else policy_bits[-1] bits at policy_step (policy_bits = (0, b));
  # hold: skip every residual (with ref_mode closed: keyframe hold). docs/baselines.md maps the
  # peer baselines (keyframe hold, Skip-Conv, DeltaCNN, VideoIQ) onto these keys.
  c.quant.policy = "fixed_step"
  c.quant.policy_bits = (0, 2, 4, 8)  # candidate residual bits (0 = skip)
  c.quant.policy_step = 1.0  # fixed_step, gate: step in units of the layer's residual step
  c.quant.thresholds = (0.5, 1.5, 7.5, 127.5)  # ladder: one per candidate, same units
  c.quant.gate_threshold = 1.0  # gate: skip threshold, same units
  # frame_precision: candidate (weight, activation) bits, ascending, and the thresholds on a
  # frame's mean |x_t - x_{t-1}| (normalised input units; one fewer) that pick among them.
  c.quant.frame_bits = ((4, 4), (6, 6), (8, 8))
  c.quant.frame_thresholds = (0.05, 0.15)
  c.quant.stop_ref_gradient = False  # truncate BPTT at the input reference

  c.calibration = ml_collections.ConfigDict()
  c.calibration.num_batches = 2  # training batches used to set ranges (ptq, and qat's start)
  c.calibration.weight = "minmax"  # minmax | percentile | mse
  c.calibration.key_act = "mse"
  c.calibration.residual_act = "mse"
  c.calibration.residual_weight = "mse"

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 2e-3  # peak learning rate of weights (AdamW, warmup + cosine decay)
  # Learning rate of quantizer parameters (Adam, no decay): relative for scales (a step moves a
  # scale by about quant_lr times its value), in grid steps for zero points.
  c.optim.quant_lr = 1e-2
  c.optim.weight_decay = 1e-4
  c.optim.warmup_steps = 20  # in [0, train.num_steps)
  c.optim.grad_clip = 1.0

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 300  # >= 2 at every stage (PTQ trains none, but builds the LR schedule)
  c.train.log_every = 10
  c.train.checkpoint_every = 100
  c.train.keep_checkpoints = 2
  # QAT's residual scan: rolled (False) or unrolled (True). Rolled compiles in a time
  # independent of K, and QConv's conv_impl='auto' then uses the im2col conv VJP on CPU, which
  # avoids XLA:CPU's scan trap: 0.24-0.94x the unrolled step for K = 32..4 (BENCHMARKS.md).
  c.train.unroll = False
  c.train.remat = False  # rematerialise the residual scan in the backward pass (less memory)
  # QAT only: weight of a distillation loss from the float teacher's outputs (0: none) and
  # the softmax temperature of teacher and student.
  c.train.distill_weight = 0.0
  c.train.distill_temperature = 1.0
  # Segmentation only: one loss weight per class (() : every pixel counts the same), in FP and
  # QAT training; e.g. heavier weights for classes that cover few pixels, since mIoU weighs
  # every class equally.
  c.train.class_weights = ()

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 8
  c.eval.split = "validation"  # validation | test: the split every evaluation reports
  c.eval.num_batches = 0  # 0: the whole split
  # Named sweeps: name -> tuple of settings, each a dict of `quant` keys overriding this
  # config's `quant` section (plus an optional display "name" and "family", e.g. "hold",
  # "skipconv", "deltacnn", "videoiq"); configs/sweeps.py holds the
  # repository's. The float setting {"mode": "float"} evaluates the FP run itself.
  c.eval.sweeps = ml_collections.ConfigDict({"fp": FP_SWEEP})
  c.eval.sweep = "fp"  # the key of eval.sweeps that eval.py evaluates
  c.eval.qat_runs = ""  # comma-separated workdirs of QAT runs to evaluate too
  c.eval.plots = True
  return c
