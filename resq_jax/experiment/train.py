"""Training stages: FP training, PTQ calibration and QAT fine-tuning over clips.

``train_and_evaluate(experiment, workdir)`` is what ``train.py`` runs once it has parsed its
config (``parse.parse``): it prepares data, resumes from the newest checkpoint in
``workdir`` (or initialises: FP from scratch; PTQ / QAT from the FP run ``init_from``, which is
only read), trains data-parallel over all devices (``jax.shard_map``) and evaluates the result
on the evaluation split (``eval.split``, validation by default). The task
(``experiment.task``) supplies the loss and the metric; the loop is the same for every task.
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

from resq_jax import errors
from resq_jax.experiment import evaluate, inputs, parse, runs, schema
from resq_jax.experiment.evaluate import EvalResult
from resq_jax.experiment.log import get_logger
from resq_jax.experiment.models import abstract_variables, init_from_fp, init_variables, make_model
from resq_jax.experiment.spec import Experiment, OptimSpec, Setting
from resq_jax.nn import calibrate_model, is_quantizer_param, run_clip
from resq_jax.nn.quantized import ACT_QUANTIZERS, zero_point_name
from resq_jax.training import (
  Checkpointer,
  ProgressBar,
  TrainState,
  checkpoint_dir,
  create_default_writer,
  make_data_mesh,
  make_train_step,
  maybe_initialize_distributed,
  replicate,
  shard_batch,
)

log = get_logger(__name__)


def scale_by_param_magnitude() -> optax.GradientTransformation:
  """Multiplies each update by ``|param|``: a learning rate relative to the parameter's size."""

  def update_fn(updates, state, params):
    return jax.tree.map(lambda u, p: u * jnp.abs(p), updates, params), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


_ZERO_POINTS = frozenset(zero_point_name(q) for q in ACT_QUANTIZERS)


def _optimizer_label(path) -> str:
  if not is_quantizer_param(path):
    return "weights"
  return (
    "quant_zero_point" if str(getattr(path[-1], "key", path[-1])) in _ZERO_POINTS else "quant_scale"
  )


def make_optimizer(optim: OptimSpec, num_steps: int) -> optax.GradientTransformation:
  """AdamW with warmup + cosine decay for weights; Adam at ``quant_lr``, without weight decay,
  for quantizer parameters (:func:`is_quantizer_param`). A scale's step is relative to its
  value (``quant_lr * |scale|`` at most, about): scales span 1e-3 (low-variance residuals) to 1
  (2-bit weights), and one absolute rate either freezes the large ones or throws the small ones
  around (an absolute 1e-3 moved 8-bit residual scales by up to 20% a step and made QAT worse
  than its PTQ start, docs/results.md). Zero points live on the integer grid: absolute steps."""
  steps = max(1, num_steps)
  schedule = optax.warmup_cosine_decay_schedule(
    0.0, optim.lr, min(optim.warmup_steps, steps - 1) or 1, steps
  )
  label = lambda params: jax.tree_util.tree_map_with_path(
    lambda path, _: _optimizer_label(path), params
  )
  return optax.chain(
    optax.clip_by_global_norm(optim.grad_clip),
    optax.multi_transform(
      {
        "weights": optax.adamw(schedule, weight_decay=optim.weight_decay),
        "quant_scale": optax.chain(
          optax.scale_by_adam(), scale_by_param_magnitude(), optax.scale(-optim.quant_lr)
        ),
        "quant_zero_point": optax.adam(optim.quant_lr),
      },
      label,
    ),
  )


def make_teacher(experiment: Experiment):
  """``frames [B, T, H, W, 3] -> outputs [B, T, ...]`` of the float run ``init_from`` (frozen),
  or None unless QAT with ``train.distill_weight > 0``."""
  if experiment.stage != "qat" or experiment.train.distill_weight <= 0:
    return None
  if not hasattr(experiment.task, "distill_loss"):
    raise errors.InvalidConfigError(
      f"train.distill_weight: task {experiment.task.name!r} has no distillation loss "
      "(allowed: 0 for it)"
    )
  fp_model, fp_vars = runs.load_fp(experiment, experiment.init_from)
  fp_vars = {k: fp_vars[k] for k in ("params", "batch_stats") if k in fp_vars}

  def teacher(frames):
    b, t = frames.shape[:2]
    y = fp_model.apply(fp_vars, frames.reshape(b * t, *frames.shape[2:]))
    return jax.lax.stop_gradient(y.reshape(b, t, *y.shape[1:]))

  return teacher


def make_loss_fn(experiment: Experiment, model):
  """``loss_fn(params, batch_stats, batch, rng)`` of the stage: FP folds frames into the batch
  (they are independent in float training); PTQ / QAT scan clips with ``run_clip``. QAT with
  ``train.distill_weight = w > 0`` minimises ``task loss + w * KL(teacher || student)`` at
  ``train.distill_temperature``, the teacher being the float run it starts from."""
  task, period, unroll = experiment.task, experiment.quant.period, experiment.train.unroll
  teacher = make_teacher(experiment)

  def fold(tree):
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), tree)

  def fp_loss(params, batch_stats, batch, rng):
    frames, targets = task.prepare(batch)
    outputs, mutated = model.apply(
      {"params": params, "batch_stats": batch_stats},
      fold(frames),
      train=True,
      mutable=["batch_stats"],
    )
    loss, extra = task.loss(outputs, fold(targets))
    return loss, (mutated["batch_stats"], extra)

  def qat_loss(params, batch_stats, batch, rng):
    frames, targets = task.prepare(batch)
    outputs = run_clip(
      model,
      {"params": params, "batch_stats": batch_stats},
      frames,
      period=period,
      unroll=unroll,
      remat=experiment.train.remat,
    ).outputs
    loss, extra = task.loss(outputs, targets)
    if teacher is not None:
      distill = task.distill_loss(outputs, teacher(frames), experiment.train.distill_temperature)
      extra = {**extra, "task_loss": loss, "distill": distill}
      loss = loss + experiment.train.distill_weight * distill
    return loss, (batch_stats, extra)

  return fp_loss if experiment.stage == "fp" else qat_loss


def initial_variables(experiment: Experiment, model) -> dict:
  """FP: random init. PTQ / QAT: the FP run's weights, quantizers calibrated on clips."""
  frame_shape = experiment.data.frame_shape
  if experiment.stage == "fp":
    return init_variables(model, frame_shape, jax.random.key(experiment.seed))
  runs.check_init_from(experiment, experiment.init_from)
  fp_model, fp_vars = runs.load_fp(experiment, experiment.init_from)
  variables = init_from_fp(model, fp_vars, frame_shape)
  plan = experiment.quant
  log.info(f"calibrating quantizers on {plan.calibration_batches} batches")
  clips = [
    experiment.task.prepare(b)[0]
    for b in inputs.calibration_batches(experiment.data, experiment.seed, plan.calibration_batches)
  ]
  return calibrate_model(
    model,
    float_model=fp_model,
    variables=variables,
    clips=clips,
    period=plan.calibration_period,
    methods=plan.calibration,
  )


def state_template(experiment: Experiment, model, optimizer, mesh) -> TrainState:
  """The ``TrainState`` a checkpoint of ``experiment``'s run restores into, abstract: the
  shapes, dtypes and replicated sharding of ``replicate(TrainState.create(init_variables(...)))``,
  traced only (a Flax init of a quantized model takes ~20 s on 2 busy cores)."""
  variables = abstract_variables(model, experiment.data.frame_shape)
  state = jax.eval_shape(
    lambda params, batch_stats: TrainState.create(
      params, optimizer, jax.random.key(experiment.seed), batch_stats
    ),
    variables["params"],
    variables["batch_stats"],
  )
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), state)


# Keys that may differ when a run is resumed: where the data lives and how often progress is
# logged and saved. Every other key shapes the trained model and must match the saved config.
RESUME_IGNORED_KEYS = (
  "data.data_dir",
  "data.worker_count",
  "distributed",
  "train.log_every",
  "train.checkpoint_every",
  "train.keep_checkpoints",
)
MAX_DIFF_LINES = 10


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def config_changes(saved: dict, new: dict, defaults: dict | None = None) -> list[str]:
  """``key: saved -> new`` for every key (but ``RESUME_IGNORED_KEYS``) whose value differs
  between a run's saved ``config.json`` and ``new`` (both as JSON: tuples are lists), in key
  order. A key absent from the saved config (added to the schema after that run) whose new value
  is its default (``defaults``, flattened JSON) is not a change."""
  new, old = _flatten(new), _flatten(saved)
  defaults = _flatten(defaults or {})
  ignored = lambda k: any(k == i or k.startswith(i + ".") for i in RESUME_IGNORED_KEYS)
  missing = object()
  added_at_default = lambda k: k not in old and k in defaults and new.get(k) == defaults[k]
  return [
    f"{k}: {old.get(k, missing)!r} -> {new.get(k, missing)!r}".replace(repr(missing), "(absent)")
    for k in sorted(set(old) | set(new))
    if not ignored(k) and old.get(k, missing) != new.get(k, missing) and not added_at_default(k)
  ]


def check_resume_config(
  experiment: Experiment, workdir: pathlib.Path, *, allow_change: bool
) -> list[str]:
  """Compare ``experiment``'s config with the ``config.json`` of the run being resumed in
  ``workdir``.

  Returns the changes (empty if none or if there is no saved config). Raises
  ``ConfigMismatchError`` listing them unless ``allow_change`` (``--allow_config_change``).
  """
  path = workdir / "config.json"
  if not path.is_file():
    return []
  defaults = json.loads(schema.default_config().to_json_best_effort())
  changes = config_changes(
    json.loads(path.read_text()), json.loads(experiment.config_json), defaults
  )
  if not changes:
    return []
  shown = changes[:MAX_DIFF_LINES] + (
    [f"... and {len(changes) - MAX_DIFF_LINES} more"] if len(changes) > MAX_DIFF_LINES else []
  )
  diff = "\n  ".join(shown)
  if not allow_change:
    raise errors.ConfigMismatchError(
      f"the config differs from the one the run in {workdir} was started with "
      f"(saved -> new):\n  {diff}\nTo resume with the new values pass "
      "--allow_config_change; to start a separate run use another --workdir."
    )
  log.info(f"resuming with a changed config (--allow_config_change):\n  {diff}")
  return changes


def _save_config(experiment: Experiment, workdir: pathlib.Path) -> None:
  path = workdir / "config.json"
  if jax.process_index() == 0:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(experiment.config_json)
    tmp.replace(path)


def train_and_evaluate(
  experiment: Experiment, workdir: str, *, allow_config_change: bool = False
) -> EvalResult:
  """Run the stage of ``experiment`` in ``workdir`` (resuming if possible) and evaluate it.

  Returns the evaluation (task metric, BOPs) of the trained model on ``eval.split``;
  it is also written to ``<workdir>/eval_metrics.json`` (``EvalResult.to_row()``). A rerun of
  a finished run (same config) returns that file's result without training or evaluating
  again. ``experiment`` comes from ``parse.parse`` (validated before anything starts).

  Resuming compares the config with the run's saved ``config.json``
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
  if experiment.stage in ("ptq", "qat") and not experiment.init_from:  # before anything starts
    raise errors.InvalidConfigError(
      f"init_from: empty, but stage {experiment.stage!r} needs init_from (allowed: the workdir "
      "of an FP run)"
    )
  if maybe_initialize_distributed(experiment.distributed):
    parse.check_device_count(experiment, jax.device_count())  # the global count
  workdir = runs.make_workdir(workdir)
  inputs.ensure_data(experiment.data)
  inputs.verify_splits(experiment.data)
  model = make_model(experiment.model, experiment.task, experiment.quant.recipe)
  mesh = make_data_mesh()
  optimizer = make_optimizer(experiment.optim, experiment.train.num_steps)
  train = experiment.train
  with Checkpointer(
    checkpoint_dir(workdir),
    save_every_steps=train.checkpoint_every,
    max_to_keep=train.keep_checkpoints,
  ) as ckpt:
    resuming = ckpt.latest_step() is not None
    changes = (
      check_resume_config(experiment, workdir, allow_change=allow_config_change) if resuming else []
    )
    if resuming:  # only a template (abstract: no Flax init): the checkpoint overwrites it
      state = state_template(experiment, model, optimizer, mesh)
    else:
      variables = initial_variables(experiment, model)
      state = replicate(
        TrainState.create(
          variables["params"], optimizer, jax.random.key(experiment.seed), variables["batch_stats"]
        ),
        mesh,
      )
    data = inputs.train_batches(experiment.data, experiment.seed)
    restored = ckpt.restore_latest(state, data_iterator=data)
    if resuming and restored is None:  # not expected: latest_step() saw a step
      raise errors.CheckpointError(f"{checkpoint_dir(workdir)} has a step but none restored")
    state = state if restored is None else restored
    _save_config(experiment, workdir)
    eval_path = workdir / "eval_metrics.json"
    if int(state.step) >= experiment.num_train_steps and not changes and eval_path.is_file():
      log.info(f"{workdir}: already trained and evaluated; metrics from {eval_path}")
      return EvalResult.from_row(json.loads(eval_path.read_text()))
    eval_path.unlink(missing_ok=True)  # stale once the run trains or its config changed
    _train_loop(experiment, model, optimizer, mesh, state, data, ckpt, workdir)
  return evaluate_run(experiment, workdir, model)


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
  leaves = [
    jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return functools.reduce(jnp.logical_and, leaves, jnp.asarray(True))


def _check_finite(pending: list, state=None, step: int | None = None) -> None:
  """Raise ``NonFiniteError`` naming the first step of ``pending`` whose loss or gradient norm
  is not finite, or ``step`` if ``state`` (params, BN statistics, optimizer state) is not."""
  bad = _first_non_finite(pending) if pending else None
  if bad is not None:
    step_, values = bad
    raise errors.NonFiniteError(
      f"non-finite training at step {step_}: loss {values['loss']}, gradient norm "
      f"{values['grad_norm']}; stopped before saving it (check the learning rate and data)"
    )
  pending.clear()
  if state is not None and not bool(
    _all_finite((state.params, state.model_state, state.opt_state))
  ):
    raise errors.NonFiniteError(
      f"non-finite train state after step {step} although loss and gradient norm were "
      "finite (an update with a non-finite learning rate?); stopped before saving it"
    )


def _train_loop(experiment: Experiment, model, optimizer, mesh, state, data, ckpt, workdir):
  """Train to ``train.num_steps``, saving on the checkpoint grid.

  Non-finite guard: every step's loss and gradient norm stay on the device in ``pending``
  (no host sync per step); they are checked at every log line (which syncs anyway) and before
  every save, where the whole state is checked too, so no non-finite state is ever saved and
  keep-N never rotates an intact checkpoint out for one.
  """
  step_fn = make_train_step(make_loss_fn(experiment, model), optimizer, mesh, has_model_state=True)
  batch_size, log_every = experiment.data.batch_size, experiment.train.log_every
  writer = create_default_writer(str(workdir))
  start = int(state.step)
  total = experiment.num_train_steps
  bar = ProgressBar(total, initial_step=start, unit="clips")
  last_time, last_step = time.perf_counter(), start
  pending, preempted_at = [], None
  try:
    with ckpt.handle_signals():
      for step in range(start, total):
        state, metrics = step_fn(state, shard_batch(next(data), mesh))
        done = step + 1
        pending.append((done, metrics["loss"], metrics["grad_norm"]))
        if done % log_every == 0 or done == total:
          scalars = {k: float(v) for k, v in metrics.items()}  # float() waits for the step
          now = time.perf_counter()
          # Throughput since the last log line; the first window includes compilation.
          scalars["clips_per_s"] = (done - last_step) * batch_size / (now - last_time)
          last_time, last_step = now, done
          writer.write_scalars(done, scalars)
          bar.update(done, items=batch_size, loss=scalars["loss"])
          _check_finite(pending)
        else:
          bar.update(done, items=batch_size)
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
      "rerun the same command to resume"
    )
  return state


def evaluate_run(experiment: Experiment, workdir: pathlib.Path, model=None) -> EvalResult:
  """Evaluate the newest checkpoint of ``workdir`` on ``eval.split``; write
  ``<workdir>/eval_metrics.json`` and log one line."""
  recipe = experiment.quant.recipe
  _, variables = runs.load_run(experiment, str(workdir), recipe)
  source = {"fp": "fp", "ptq": "ptq", "qat": "qat"}[experiment.stage]
  setting = Setting(
    name=pathlib.Path(workdir).name,
    recipe=recipe,
    period=experiment.quant.period,
    source=source,
    run_dir=str(workdir),
  )
  model = make_model(experiment.model, experiment.task, recipe) if model is None else model
  batches = evaluate.eval_batches(experiment)
  result = evaluate.evaluate_model(experiment.task, model, variables, batches, setting)
  if jax.process_index() == 0:
    (workdir / "eval_metrics.json").write_text(json.dumps(result.to_row(), indent=2))
  log.info(f"eval: {evaluate.result_line(result)}")
  return result
