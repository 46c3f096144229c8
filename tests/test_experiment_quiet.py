"""Library calls are quiet without ``log.setup``: building SynthRes, reading it and restoring a
run print none of TFDS's, absl's or Orbax's lines, even in a program whose absl logging is at
INFO (as ``absl.app.run`` leaves it), and leave that program's logging levels as they were;
``log.setup(verbose=True)`` lets them through."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

_SCRIPT = """
import logging, sys
import jax, jax.numpy as jnp, optax
from absl import logging as absl_logging
sys.path.insert(0, sys.argv[3])
from configs import tiny
from resq_jax.experiment import inputs, log, models, parse, runs
from resq_jax.quant.recipe import float_recipe
from resq_jax.training import Checkpointer, TrainState, checkpoint_dir

tmp = sys.argv[1]
if sys.argv[2] == "verbose":
  log.setup(verbose=True)
config = tiny.get_config()
config.data.data_dir = tmp + "/data"
experiment = parse.parse(config, num_devices=1)
model = models.make_model(experiment.model, experiment.task, float_recipe())
shapes = models.abstract_variables(model, experiment.data.frame_shape)
variables = jax.tree.map(lambda s: jnp.full(s.shape, 0.5, s.dtype), shapes)
state = TrainState.create(
  variables["params"], optax.sgd(0.1), jax.random.key(0), variables["batch_stats"]
)
with Checkpointer(checkpoint_dir(tmp + "/run"), save_every_steps=1, async_save=False) as c:
  c.save(0, state)
print("saved")
absl_logging.set_verbosity(absl_logging.INFO)  # what absl.app.run does
inputs.ensure_data(experiment.data)
batch = next(iter(inputs.eval_batches(experiment.data, batch_size=2)))
_, restored = runs.load_fp(experiment, tmp + "/run")
kept = {k: variables[k] for k in ("params", "batch_stats")}
same = jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), restored, kept))
print("read", batch["frames"].shape, "restored equal", same)
print("absl level", logging.getLevelName(logging.getLogger("absl").getEffectiveLevel()))
"""


def _run(tmp_path, mode):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run(
    [sys.executable, "-c", _SCRIPT, str(tmp_path / mode), mode, str(ROOT)],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


def test_library_calls_print_nothing_but_the_callers_lines(tmp_path):
  quiet = _run(tmp_path, "quiet")
  assert quiet.returncode == 0, quiet.stderr[-3000:]
  assert quiet.stdout.splitlines() == [
    "saved",
    "read (2, 4, 32, 32, 3) restored equal True",
    "absl level INFO",  # the program's own setting, restored after each quiet call
  ]
  assert quiet.stderr == ""


def test_verbose_lets_the_libraries_lines_through(tmp_path):
  verbose = _run(tmp_path, "verbose")
  assert verbose.returncode == 0, verbose.stderr[-3000:]
  out = verbose.stdout + verbose.stderr
  assert "Downloading and preparing dataset" in out and "SynthRes slow_pan_32x32x4" in out
