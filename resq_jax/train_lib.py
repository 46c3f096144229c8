"""Training stages: FP training, PTQ calibration and QAT fine-tuning over clips.

``train_and_evaluate(config, workdir)`` is the entry point of ``train.py``: it validates the
config, prepares data, resumes from the newest checkpoint in ``workdir`` (or initialises: FP
from scratch; PTQ / QAT from the FP run ``init_from``, which is only read), trains data-parallel
over all devices (``jax.shard_map``) and evaluates the result on the validation split.
"""
from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import optax

from resq_jax import config_lib, eval_lib, model_lib
from resq_jax.nn import calibrate_model, run_clip
from resq_jax.training import (Checkpointer, ProgressBar, TrainState, checkpoint_dir,
                               create_default_writer, make_data_mesh, make_train_step,
                               maybe_initialize_distributed, replicate, shard_batch)

IGNORE = 255
QUANT_PREFIXES = ("key_", "res_")  # quantizer scales / zero points get their own learning rate


def segmentation_loss(logits, labels):
  """Mean softmax cross-entropy over labelled pixels; ``logits [..., C]``, ``labels [...]``."""
  mask = labels != IGNORE
  safe = jnp.where(mask, labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
  n = jnp.maximum(jnp.sum(mask), 1).astype(ce.dtype)
  accuracy = jnp.sum((jnp.argmax(logits, -1) == labels) & mask).astype(ce.dtype) / n
  return jnp.sum(jnp.where(mask, ce, jnp.zeros_like(ce))) / n, accuracy


def make_optimizer(config) -> optax.GradientTransformation:
  """AdamW with warmup + cosine decay for weights, Adam at ``quant_lr`` for quantizers."""
  o, steps = config.optim, max(1, config.train.num_steps)
  schedule = optax.warmup_cosine_decay_schedule(0.0, o.lr, min(o.warmup_steps, steps - 1) or 1,
                                                steps)
  label = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: "quant" if str(path[-1].key).startswith(QUANT_PREFIXES) else "weights",
      params)
  return optax.chain(optax.clip_by_global_norm(o.grad_clip), optax.multi_transform(
      {"weights": optax.adamw(schedule, weight_decay=o.weight_decay),
       "quant": optax.adam(o.quant_lr)}, label))


def make_loss_fn(config, model):
  """``loss_fn(params, batch_stats, batch, rng)`` for the stage of ``config``."""
  period, unroll = config.quant.period, config.train.unroll

  def fp_loss(params, batch_stats, batch, rng):
    frames, labels = model_lib.preprocess(batch)
    flat = frames.reshape(-1, *frames.shape[2:])  # frames are independent in float training
    logits, mutated = model.apply({"params": params, "batch_stats": batch_stats}, flat,
                                  train=True, mutable=["batch_stats"])
    loss, acc = segmentation_loss(logits, labels.reshape(-1, *labels.shape[2:]))
    return loss, (mutated["batch_stats"], {"accuracy": acc})

  def qat_loss(params, batch_stats, batch, rng):
    frames, labels = model_lib.preprocess(batch)
    period_ = period if model.recipe.has_state else 1
    out = run_clip(model, {"params": params, "batch_stats": batch_stats}, frames,
                   period=period_, unroll=unroll).outputs
    loss, acc = segmentation_loss(out, labels)
    return loss, (batch_stats, {"accuracy": acc})

  return fp_loss if config.stage == "fp" else qat_loss


def initial_variables(config, model) -> dict:
  """FP: random init. PTQ / QAT: the FP run's weights, quantizers calibrated on clips."""
  if config.stage == "fp":
    return model_lib.init_variables(model, config, jax.random.key(config.seed))
  fp_model, fp_vars = model_lib.load_fp(config, config.init_from)
  variables = model_lib.init_from_fp(model, fp_vars, config)
  period = max(2, config.quant.period)
  print(f"calibrating quantizers on {config.calibration.num_batches} batches", flush=True)
  return calibrate_model(model, fp_model, variables, model_lib.calibration_batches(config),
                         period=period,
                         methods=config_lib.calibration_methods_from(config.calibration))


def _save_config(config, workdir: pathlib.Path) -> None:
  path = workdir / "config.json"
  if jax.process_index() == 0:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(config.to_json_best_effort(indent=2))
    tmp.replace(path)


def train_and_evaluate(config, workdir: str) -> dict:
  """Run the stage of ``config`` in ``workdir`` (resuming if possible) and evaluate it.

  Returns the final evaluation metrics (mIoU, BOPs) of the trained model on the validation
  split; they are also written to ``<workdir>/eval_metrics.json``.
  """
  maybe_initialize_distributed(config.distributed)
  config_lib.validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  _save_config(config, workdir)
  model_lib.ensure_data(config)
  model = model_lib.make_model(config)
  mesh = make_data_mesh()
  optimizer = make_optimizer(config)
  ckpt = Checkpointer(checkpoint_dir(workdir), save_every_steps=config.train.checkpoint_every,
                      max_to_keep=config.train.keep_checkpoints)
  if ckpt.latest_step() is None:
    variables = initial_variables(config, model)
  else:  # only a template: the checkpoint overwrites it
    variables = model_lib.init_variables(model, config, jax.random.key(config.seed))
  state = replicate(TrainState.create(variables["params"], optimizer,
                                      jax.random.key(config.seed), variables["batch_stats"]),
                    mesh)
  data = iter(model_lib.loader(config, "train", batch_size=config.data.batch_size,
                               shuffle=True))
  restored = ckpt.restore_latest(state, data_iterator=data)
  state = state if restored is None else restored
  _train_loop(config, model, optimizer, mesh, state, data, ckpt, workdir)
  return evaluate_run(config, workdir, model)


def _train_loop(config, model, optimizer, mesh, state, data, ckpt, workdir):
  step_fn = make_train_step(make_loss_fn(config, model), optimizer, mesh, has_model_state=True)
  writer = create_default_writer(str(workdir))
  start = int(state.step)
  total = 0 if config.stage == "ptq" else config.train.num_steps  # PTQ: calibration only
  bar = ProgressBar(total, initial_step=start, unit="clips")
  last_time, last_step = time.perf_counter(), start
  with ckpt, ckpt.handle_signals():
    for step in range(start, total):
      state, metrics = step_fn(state, shard_batch(next(data), mesh))
      done = step + 1
      if done % config.train.log_every == 0 or done == total:
        scalars = {k: float(v) for k, v in metrics.items()}  # float() waits for the step
        now = time.perf_counter()
        # Throughput since the last log line; the first window includes compilation.
        scalars["clips_per_s"] = (done - last_step) * config.data.batch_size / (now - last_time)
        last_time, last_step = now, done
        writer.write_scalars(done, scalars)
        bar.update(done, items=config.data.batch_size, loss=scalars["loss"])
      else:
        bar.update(done, items=config.data.batch_size)
      ckpt.maybe_save(done, state, data_iterator=data)
      if ckpt.stop_requested:
        print(f"stop requested: saved step {done}; rerun the same command to resume",
              flush=True)
        break
    ckpt.save(int(state.step), state, data_iterator=data)
  bar.close()
  writer.close()
  return state


def evaluate_run(config, workdir: pathlib.Path, model=None) -> dict:
  """Evaluate the newest checkpoint of ``workdir`` on the validation split."""
  model = model_lib.make_model(config) if model is None else model
  _, variables = model_lib.load_run(config, str(workdir), model.recipe)
  period = config.quant.period if model.recipe.has_state else 1
  start = time.perf_counter()
  metrics = eval_lib.evaluate_model(model, variables, model_lib.eval_batches(config),
                                    period=period)
  metrics["eval_seconds"] = time.perf_counter() - start
  if jax.process_index() == 0:
    (workdir / "eval_metrics.json").write_text(json.dumps(metrics, indent=2))
  print(f"eval: mIoU {100 * metrics['miou']:.1f}%, {metrics['gbops_avg']:.4f} GBOPs/frame "
        f"({metrics['pct_w8a8']:.1f}% of W8A8 FQ)", flush=True)
  return metrics
