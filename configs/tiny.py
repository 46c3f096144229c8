"""A seconds-long configuration for tests: tiny model, tiny dataset, a few steps."""

from configs import default


def get_config():
  c = default.get_config()
  c.data.height = 32
  c.data.width = 32
  c.data.num_frames = 4
  c.data.num_train = 16
  c.data.num_validation = 8
  c.data.num_test = 8
  c.data.batch_size = 8
  c.model.preset = "tiny"
  c.quant.period = 2
  c.calibration.num_batches = 1
  for key in ("weight", "key_act", "residual_act", "residual_weight"):
    c.calibration[key] = "minmax"  # compiles faster than the MSE search
  c.train.num_steps = 4
  c.train.log_every = 2
  c.train.checkpoint_every = 2
  c.optim.warmup_steps = 1
  c.eval.batch_size = 8
  c.eval.sweep = "tiny"
  return c
