"""Worker of tests/test_multihost.py (not a test module): a few data-parallel float training
steps of the tiny SegNet on the tiny SynthRes config, over every device of every process.

  python tests/multihost_worker.py DATA_DIR OUT_FILE

With JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID set, the process joins a
multi-process run (`maybe_initialize_distributed`); each process feeds its own rows of the same
global batch (as the sharded loader does), and process 0 writes the losses and final parameters.
"""

import os
import sys

import numpy as np

STEPS, GLOBAL_BATCH = 3, 8


def main(data_dir: str, out_file: str) -> None:
  from resq_jax.training import parallel as par

  par.maybe_initialize_distributed(bool(os.environ.get(par.ENV_NUM_PROCESSES)))
  import grain
  import jax
  import jax.numpy as jnp
  import optax

  from resq_jax.data import make_loader
  from resq_jax.data.spec import NUM_CLASSES
  from resq_jax.nn.models import SegNet, segnet_preset

  model = SegNet(NUM_CLASSES, bn_axis_name=par.DATA_AXIS, **segnet_preset("tiny"))
  loader = make_loader(
    data_dir,
    "train",
    batch_size=GLOBAL_BATCH,
    shuffle=False,
    regime="slow_pan",
    height=32,
    width=32,
    num_frames=4,
    num_train=16,
    num_validation=8,
    num_test=8,
    shard_options=grain.sharding.NoSharding(),
  )
  batches = list(zip(range(STEPS), iter(loader)))
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32), phase="key")

  def loss_fn(params, batch_stats, batch, rng):
    del rng
    frames = (batch["frames"].astype(jnp.float32) / 255.0 - 0.5) / 0.25
    frames = frames.reshape(-1, *frames.shape[2:])
    logits, mutated = model.apply(
      {"params": params, "batch_stats": batch_stats}, frames, train=True, mutable=["batch_stats"]
    )
    labels = batch["semantic"].astype(jnp.int32).reshape(-1, *frames.shape[1:3])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.mean(ce), (mutated["batch_stats"], {})

  optimizer = optax.adam(1e-2)
  mesh = par.make_data_mesh()
  step = par.make_train_step(loss_fn, optimizer, mesh, has_model_state=True, donate=False)
  state = par.replicate(
    par.TrainState.create(
      variables["params"], optimizer, jax.random.key(0), variables["batch_stats"]
    ),
    mesh,
  )
  n, pid = jax.process_count(), jax.process_index()
  local = GLOBAL_BATCH // n
  losses = []
  for _, batch in batches:
    rows = {k: batch[k][pid * local : (pid + 1) * local] for k in ("frames", "semantic")}
    state, metrics = step(state, par.shard_batch(rows, mesh))
    losses.append(float(metrics["loss"]))
  # Replicated arrays span every process: read this process's copy.
  params = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), state.params)
  if pid == 0:
    flat = {
      "/".join(str(k.key) for k in path): v
      for path, v in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    np.savez(out_file, losses=np.asarray(losses), devices=jax.device_count(), processes=n, **flat)


if __name__ == "__main__":
  main(*sys.argv[1:])
