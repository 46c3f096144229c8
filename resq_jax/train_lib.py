"""Training stages: FP training, PTQ calibration and QAT fine-tuning over clips.

``train_and_evaluate(config, workdir)`` is the entry point of ``train.py``: it validates the
config, prepares data, resumes from the newest checkpoint in ``workdir`` (or initialises: FP
from scratch; PTQ / QAT from the FP run ``init_from``, which is only read), trains data-parallel
over all devices (``jax.shard_map``) and evaluates the result on the validation split.
"""
from __future__ import annotations

import functools
import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import optax

from resq_jax import config_lib, errors, eval_lib, model_lib
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
  model_lib.check_init_from(config, config.init_from)
  fp_model, fp_vars = model_lib.load_fp(config, config.init_from)
  variables = model_lib.init_from_fp(model, fp_vars, config)
  period = max(2, config.quant.period)
  print(f"calibrating quantizers on {config.calibration.num_batches} batches", flush=True)
  return calibrate_model(model, fp_model, variables, model_lib.calibration_batches(config),
                         period=period,
                         methods=config_lib.calibration_methods_from(config.calibration))


# Keys that may differ when a run is resumed: where the data lives and how often progress is
# logged and saved. Every other key shapes the trained model and must match the saved config.
RESUME_IGNORED_KEYS = ("data.data_dir", "data.worker_count", "distributed", "train.log_every",
                       "train.checkpoint_every", "train.keep_checkpoints")
MAX_DIFF_LINES = 10


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def config_changes(saved: dict, config) -> list[str]:
  """``key: saved -> new`` for every key (but ``RESUME_IGNORED_KEYS``) whose value differs
  between a run's saved ``config.json`` and ``config``, in key order."""
  new = _flatten(json.loads(config.to_json_best_effort()))  # tuples -> lists, as saved
  old = _flatten(saved)
  ignored = lambda k: any(k == i or k.startswith(i + ".") for i in RESUME_IGNORED_KEYS)
  missing = object()
  return [f"{k}: {old.get(k, missing)!r} -> {new.get(k, missing)!r}".replace(
              repr(missing), "(absent)")
          for k in sorted(set(old) | set(new))
          if not ignored(k) and old.get(k, missing) != new.get(k, missing)]


def check_resume_config(config, workdir: pathlib.Path, *, allow_change: bool) -> list[str]:
  """Compare ``config`` with the ``config.json`` of the run being resumed in ``workdir``.

  Returns the changes (empty if none or if there is no saved config). Raises
  ``ConfigMismatchError`` listing them unless ``allow_change`` (``--allow_config_change``).
  """
  path = workdir / "config.json"
  if not path.is_file():
    return []
  changes = config_changes(json.loads(path.read_text()), config)
  if not changes:
    return []
  shown = changes[:MAX_DIFF_LINES] + (
      [f"... and {len(changes) - MAX_DIFF_LINES} more"] if len(changes) > MAX_DIFF_LINES else [])
  diff = "\n  ".join(shown)
  if not allow_change:
    raise errors.ConfigMismatchError(
        f"the config differs from the one the run in {workdir} was started with "
        f"(saved -> new):\n  {diff}\nTo resume with the new values pass "
        "--allow_config_change; to start a separate run use another --workdir.")
  print(f"resuming with a changed config (--allow_config_change):\n  {diff}", flush=True)
  return changes


def _save_config(config, workdir: pathlib.Path) -> None:
  path = workdir / "config.json"
  if jax.process_index() == 0:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(config.to_json_best_effort(indent=2))
    tmp.replace(path)


def _num_train_steps(config) -> int:
  return 0 if config.stage == "ptq" else config.train.num_steps  # PTQ: calibration only


def train_and_evaluate(config, workdir: str, *, allow_config_change: bool = False) -> dict:
  """Run the stage of ``config`` in ``workdir`` (resuming if possible) and evaluate it.

  Returns the final evaluation metrics (mIoU, BOPs) of the trained model on the validation
  split; they are also written to ``<workdir>/eval_metrics.json``. A rerun of a finished run
  (same config) returns that file's metrics without training or evaluating again.

  Resuming compares ``config`` with the run's saved ``config.json``
  (``check_resume_config``); ``allow_config_change`` adopts the new values. ``config.json``
  is written only after the restore (or the initialisation) succeeded.

  Raises (see ``resq_jax.errors`` for the exit codes of ``train.py``):
    InvalidConfigError / ConfigMismatchError: invalid config, changed config on resume, or
      ``init_from`` is a run of another model.
    DataError: a split of the dataset is missing, truncated or corrupted (checked up front).
    CheckpointError: no intact checkpoint restores into this model.
    NonFiniteError: a non-finite loss, gradient norm or state; nothing non-finite was saved.
    PreemptedError: SIGTERM arrived; the step reached was saved and evaluation skipped.
  """
  config_lib.validate(config)  # pure Python: before anything starts (exit code 2)
  if maybe_initialize_distributed(config.distributed):
    config_lib.validate(config)  # again: batch sizes against the global device count
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  model_lib.ensure_data(config)
  model_lib.verify_splits(config)
  model = model_lib.make_model(config)
  mesh = make_data_mesh()
  optimizer = make_optimizer(config)
  with Checkpointer(checkpoint_dir(workdir), save_every_steps=config.train.checkpoint_every,
                    max_to_keep=config.train.keep_checkpoints) as ckpt:
    resuming = ckpt.latest_step() is not None
    changes = (check_resume_config(config, workdir, allow_change=allow_config_change)
               if resuming else [])
    if resuming:  # only a template: the checkpoint overwrites it
      variables = model_lib.init_variables(model, config, jax.random.key(config.seed))
    else:
      variables = initial_variables(config, model)
    state = replicate(TrainState.create(variables["params"], optimizer,
                                        jax.random.key(config.seed), variables["batch_stats"]),
                      mesh)
    data = iter(model_lib.loader(config, "train", batch_size=config.data.batch_size,
                                 shuffle=True))
    restored = ckpt.restore_latest(state, data_iterator=data)
    state = state if restored is None else restored
    _save_config(config, workdir)
    eval_path = workdir / "eval_metrics.json"
    if int(state.step) >= _num_train_steps(config) and not changes and eval_path.is_file():
      print(f"{workdir}: already trained and evaluated; metrics from {eval_path}", flush=True)
      return json.loads(eval_path.read_text())
    eval_path.unlink(missing_ok=True)  # stale once the run trains or its config changed
    _train_loop(config, model, optimizer, mesh, state, data, ckpt, workdir)
  return evaluate_run(config, workdir, model)


def _first_non_finite(pending: list) -> tuple[int, dict] | None:
  """(step, {name: value}) of the first entry of ``pending`` ([(step, loss, grad_norm)], device
  scalars) with a non-finite value, or None. One host transfer for all of them."""
  values = jax.device_get([(loss, grad_norm) for _, loss, grad_norm in pending])
  for (step, _, _), (loss, grad_norm) in zip(pending, values):
    if not (math.isfinite(float(loss)) and math.isfinite(float(grad_norm))):
      return step, {"loss": float(loss), "grad_norm": float(grad_norm)}
  return None


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return functools.reduce(jnp.logical_and, leaves, jnp.asarray(True))


def _check_finite(pending: list, state=None, step: int | None = None) -> None:
  """Raise ``NonFiniteError`` naming the first step of ``pending`` whose loss or gradient norm
  is not finite, or ``step`` if ``state`` (params, BN statistics, optimizer state) is not."""
  bad = _first_non_finite(pending) if pending else None
  if bad is not None:
    step_, values = bad
    raise errors.NonFiniteError(
        f"non-finite training at step {step_}: loss {values['loss']}, gradient norm "
        f"{values['grad_norm']}; stopped before saving it (check the learning rate and data)")
  pending.clear()
  if state is not None and not bool(_all_finite((state.params, state.model_state,
                                                  state.opt_state))):
    raise errors.NonFiniteError(
        f"non-finite train state after step {step} although loss and gradient norm were "
        "finite (an update with a non-finite learning rate?); stopped before saving it")


def _train_loop(config, model, optimizer, mesh, state, data, ckpt, workdir):
  """Train to ``train.num_steps``, saving on the checkpoint grid.

  Non-finite guard: every step's loss and gradient norm stay on the device in ``pending``
  (no host sync per step); they are checked at every log line (which syncs anyway) and before
  every save, where the whole state is checked too, so no non-finite state is ever saved and
  keep-N never rotates an intact checkpoint out for one.
  """
  step_fn = make_train_step(make_loss_fn(config, model), optimizer, mesh, has_model_state=True)
  writer = create_default_writer(str(workdir))
  start = int(state.step)
  total = _num_train_steps(config)
  bar = ProgressBar(total, initial_step=start, unit="clips")
  last_time, last_step = time.perf_counter(), start
  pending, preempted_at = [], None
  try:
    with ckpt.handle_signals():
      for step in range(start, total):
        state, metrics = step_fn(state, shard_batch(next(data), mesh))
        done = step + 1
        pending.append((done, metrics["loss"], metrics["grad_norm"]))
        if done % config.train.log_every == 0 or done == total:
          scalars = {k: float(v) for k, v in metrics.items()}  # float() waits for the step
          now = time.perf_counter()
          # Throughput since the last log line; the first window includes compilation.
          scalars["clips_per_s"] = (done - last_step) * config.data.batch_size / (now - last_time)
          last_time, last_step = now, done
          writer.write_scalars(done, scalars)
          bar.update(done, items=config.data.batch_size, loss=scalars["loss"])
          _check_finite(pending)
        else:
          bar.update(done, items=config.data.batch_size)
        if ckpt.should_save(done):
          _check_finite(pending, state, done)
          ckpt.save(done, state, data_iterator=data)
          writer.flush()
        if ckpt.stop_requested:
          preempted_at = done
          break
      if preempted_at is None and int(state.step) not in ckpt.all_steps():
        _check_finite(pending, state, int(state.step))
        ckpt.save(int(state.step), state, data_iterator=data)
  finally:
    bar.close()
    writer.close()
  if preempted_at is not None:
    raise errors.PreemptedError(
        f"preempted: saved step {preempted_at} to {ckpt.directory}, evaluation skipped; "
        "rerun the same command to resume")
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
