"""Pose on SynthRes: float training to PCK@0.2 and a PTQ measurement, outside train_lib.

A standalone loop (until train_lib runs tasks other than segmentation) built from the
project's pieces: the SynthRes loader, ``SegNet(num_classes=15)``, ``resq_jax.tasks.pose``
(heatmap targets, loss, decoding, PCK accumulator) and ``resq_jax.training.make_train_step``.
It reads the same config keys as ``train.py`` (data, model, optim, train, seed) and writes
the checkpoint layout ``train.py`` writes (``<workdir>/checkpoints``, ``config.json``), so
the run can be the ``init_from`` of PTQ / QAT configs once the loops run pose.

  python benchmarks/train_pose.py --config configs/synthres.py:pose:fp --workdir runs/pose_fp
  python benchmarks/train_pose.py --config configs/synthres.py:pose:fp --workdir runs/pose_fp \\
      --notrain --ptq fp,fq8,fq4,resq4

Prints (and writes to ``<workdir>/pose_metrics.json``, or ``pose_ptq_metrics.json`` with
``--notrain``) the PCK of each evaluated setting on ``--eval_split`` with its 95% bootstrap
interval, GBOPs per frame, wall times and the load average; with more than one setting also
``<workdir>/pose_report/`` (results.json, results.md with the PCK column, pareto.png).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib
import sys
import time

import flax
import harness  # benchmarks/harness.py
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

from resq_jax.data import build_synthres, make_loader
from resq_jax.evaluation import plot_pareto, write_results
from resq_jax.nn import (
  SegNet,
  bops_report,
  calibrate_model,
  layer_costs,
  run_clip,
  segnet_preset,
)
from resq_jax.quant import (
  FixedStepPolicy,
  dynamic_recipe,
  float_recipe,
  fq_recipe,
  resq_recipe,
)
from resq_jax.tasks.pose import PoseTask
from resq_jax.training import (
  DATA_AXIS,
  Checkpointer,
  TrainState,
  checkpoint_dir,
  make_data_mesh,
  make_train_step,
  replicate,
  restore_fields_from,
  shard_batch,
)

_CONFIG = config_flags.DEFINE_config_file("config", "configs/synthres.py:pose:fp", "pose config")
_WORKDIR = flags.DEFINE_string("workdir", "runs/pose_fp", "run directory")
_TRAIN = flags.DEFINE_bool("train", True, "train (else evaluate the checkpoint in --workdir)")
_EVAL_SPLIT = flags.DEFINE_string("eval_split", "test", "split to evaluate")
_PTQ = flags.DEFINE_list(
  "ptq",
  ["fp"],
  "settings to evaluate: fp, fq8, fq6, fq4, resq2, "
  "resq4, resq8, dyn1, dyn4 (PTQ: calibrated from the float weights)",
)
_LOSS = flags.DEFINE_enum("loss_type", "softmax", ["softmax", "mse"], "PoseTask.loss_type")
_SIGMA = flags.DEFINE_float("sigma", 2.0, "PoseTask.sigma: Gaussian target width (pixels)")
_CALIB_BATCHES = flags.DEFINE_integer("calib_batches", 2, "training batches for calibration")

KEYS = ("frames", "joints", "joint_visible", "bbox")
FAMILY = {"float": "fp", "fq": "fq", "resq": "resq", "dynamic": "dynamic"}
SETTINGS = {
  "fp": ("FP32", float_recipe(), 1),
  "fq8": ("FQ W8A8", fq_recipe(8, 8), 1),
  "fq6": ("FQ W6A6", fq_recipe(6, 6), 1),
  "fq4": ("FQ W4A4", fq_recipe(4, 4), 1),
  "resq2": ("ResQ K=2 closed W8A8/W4A4", resq_recipe((8, 8), (4, 4)), 2),
  "resq4": ("ResQ K=4 closed W8A8/W4A4", resq_recipe((8, 8), (4, 4)), 4),
  "resq8": ("ResQ K=8 closed W8A8/W4A4", resq_recipe((8, 8), (4, 4)), 8),
  "dyn1": ("DynResQ K=4 step=1", dynamic_recipe(FixedStepPolicy(bits=(0, 2, 4, 8), step=1.0)), 4),
  "dyn4": ("DynResQ K=4 step=4", dynamic_recipe(FixedStepPolicy(bits=(0, 2, 4, 8), step=4.0)), 4),
}


def data_kwargs(config) -> dict:
  d = config.data
  return dict(
    regime=d.regime,
    height=d.height,
    width=d.width,
    num_frames=d.num_frames,
    num_train=d.num_train,
    num_validation=d.num_validation,
    num_test=d.num_test,
  )


def loader(config, split, *, batch_size, shuffle, num_epochs=None, seed=None):
  return make_loader(
    config.data.data_dir,
    split,
    batch_size=batch_size,
    shuffle=shuffle,
    num_epochs=num_epochs,
    drop_remainder=shuffle,
    seed=config.seed if seed is None else seed,
    **data_kwargs(config),
  )


def make_model(config, task, recipe=float_recipe()) -> SegNet:
  return SegNet(
    num_classes=task.num_outputs(),
    recipe=recipe,
    bn_axis_name=DATA_AXIS,
    **segnet_preset(config.model.preset),
  )


def init_variables(model, config, seed=0) -> dict:
  frame = jnp.zeros((1, config.data.height, config.data.width, 3), jnp.float32)
  return model.init(jax.random.key(seed), frame, phase="key")


def make_optimizer(config) -> optax.GradientTransformation:
  o, steps = config.optim, max(2, config.train.num_steps)
  schedule = optax.warmup_cosine_decay_schedule(
    0.0, o.lr, min(o.warmup_steps, steps - 1) or 1, steps
  )
  return optax.chain(
    optax.clip_by_global_norm(o.grad_clip), optax.adamw(schedule, weight_decay=o.weight_decay)
  )


def make_loss_fn(model, task):
  def loss_fn(params, batch_stats, batch, rng):
    del rng
    frames, targets = task.prepare(batch)
    fold = lambda x: x.reshape(-1, *x.shape[2:])  # frames are independent in float training
    outputs, mutated = model.apply(
      {"params": params, "batch_stats": batch_stats},
      fold(frames),
      train=True,
      mutable=["batch_stats"],
    )
    loss, metrics = task.loss(outputs, jax.tree.map(fold, targets))
    return loss, (mutated["batch_stats"], metrics)

  return loss_fn


def train(config, task, workdir: pathlib.Path) -> dict:
  model = make_model(config, task)
  mesh = make_data_mesh()
  optimizer = make_optimizer(config)
  variables = init_variables(model, config, config.seed)
  state = replicate(
    TrainState.create(
      variables["params"], optimizer, jax.random.key(config.seed), variables["batch_stats"]
    ),
    mesh,
  )
  step_fn = make_train_step(make_loss_fn(model, task), optimizer, mesh, has_model_state=True)
  data = iter(loader(config, "train", batch_size=config.data.batch_size, shuffle=True))
  total, log_every = config.train.num_steps, config.train.log_every
  start = last = time.perf_counter()
  log = []
  for step in range(total):
    batch = {k: v for k, v in next(data).items() if k in KEYS}
    state, metrics = step_fn(state, shard_batch(batch, mesh))
    done = step + 1
    if done % log_every == 0 or done == total:
      m = {k: float(v) for k, v in metrics.items()}
      now = time.perf_counter()
      m.update(step=done, seconds=now - start, window_s=now - last, load1=harness.load_average()[0])
      last = now
      log.append(m)
      print(
        f"step {done}/{total} loss {m['loss']:.4f} pixel_error {m['pixel_error']:.2f} "
        f"({m['window_s']:.1f} s, load {m['load1']:.1f})",
        flush=True,
      )
      if not np.isfinite(m["loss"]):
        raise FloatingPointError(f"non-finite loss at step {done}")
  with Checkpointer(checkpoint_dir(workdir), save_every_steps=total, max_to_keep=1) as ckpt:
    ckpt.save(int(state.step), state)
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  return {"train_seconds": time.perf_counter() - start, "log": log}


def load_float(config, task, workdir: pathlib.Path):
  model = make_model(config, task)
  template = init_variables(model, config)
  restored = restore_fields_from(
    str(workdir), params=template["params"], model_state=template["batch_stats"]
  )
  return model, {"params": restored["params"], "batch_stats": restored["model_state"]}


def quantized_variables(model, fp_model, fp_vars, config, calib, period) -> dict:
  """Float weights copied into the quantized model, quantizers calibrated on ``calib``."""
  fresh = flax.traverse_util.flatten_dict(init_variables(model, config)["params"])
  fresh.update(flax.traverse_util.flatten_dict(fp_vars["params"]))
  variables = {
    "params": flax.traverse_util.unflatten_dict(fresh),
    "batch_stats": fp_vars["batch_stats"],
  }
  return calibrate_model(
    model, float_model=fp_model, variables=variables, clips=calib, period=max(2, period)
  )


def evaluate(model, variables, task, batches, period: int) -> dict:
  @jax.jit
  def predict(variables, frames):
    result = run_clip(model, variables, frames, period=period)
    return task.predict(result.outputs), result.stats

  accumulator, costs, reports, start = task.new_accumulator(), None, [], time.perf_counter()
  for batch in batches:
    frames, targets = task.prepare(batch)
    if costs is None:
      costs = layer_costs(model, variables, frames[:, 0])
    pred, stats = predict(variables, frames)
    accumulator.update(np.asarray(pred), jax.device_get(targets))
    reports.append(bops_report(stats, costs))
  result = accumulator.result()
  bops = np.mean([r["bops_per_frame"] for r in reports], axis=0)
  w8a8 = 64.0 * reports[0]["macs_per_frame"]
  result.update(
    gbops_avg=float(bops.mean()) / 1e9,
    gbops_peak=float(bops.max()) / 1e9,
    pct_w8a8=100.0 * float(bops.mean()) / w8a8,
    state_bytes=4 * reports[0]["state_elements"],
    eval_seconds=time.perf_counter() - start,
  )
  return result


def setting_row(key: str) -> dict:
  """The report fields of a setting (as eval_lib writes them): name, family, bits, period."""
  name, r, period = SETTINGS[key]
  source = "fp" if key == "fp" else "ptq"
  row = {"name": name, "family": FAMILY[r.mode], "mode": source, "source": source, "period": period}
  if r.is_quantized:
    row.update(key_bits=list(r.key.bits), w_bits=r.key.bits[0], a_bits=r.key.bits[1])
  if r.has_state:
    row.update(residual_bits=list(r.residual.bits), ref_mode=r.ref_mode)
  if r.policy is not None:
    row["policy_step"] = getattr(r.policy, "step", None)
  return row


def main(argv):
  del argv
  config, task = _CONFIG.value, PoseTask(sigma=_SIGMA.value, loss_type=_LOSS.value)
  if config.get("task", "pose") != "pose":
    raise SystemExit(f"config task is {config.task!r}, this script trains 'pose'")
  workdir = pathlib.Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  t0, facts = time.perf_counter(), harness.machine()
  print(facts.text(), flush=True)
  build_synthres(config.data.data_dir, **data_kwargs(config))
  out = {
    "command": " ".join(sys.argv),
    "task": repr(task),
    "machine": dataclasses.asdict(facts),
    "build_seconds": time.perf_counter() - t0,
  }
  if _TRAIN.value:
    out.update(train(config, task, workdir))
  fp_model, fp_vars = load_float(config, task, workdir)
  calib = None
  rows = {}
  for key in _PTQ.value:
    name, recipe, period = SETTINGS[key]
    if recipe.is_quantized:
      if calib is None:
        data = loader(
          config,
          "train",
          batch_size=config.data.batch_size,
          shuffle=True,
          num_epochs=1,
          seed=config.seed + 1,
        )
        calib = [task.prepare(b)[0] for b in itertools.islice(iter(data), _CALIB_BATCHES.value)]
      model = fp_model.clone(recipe=recipe)
      variables = quantized_variables(model, fp_model, fp_vars, config, calib, period)
    else:
      model, variables = fp_model, fp_vars
    batches = iter(
      loader(
        config, _EVAL_SPLIT.value, batch_size=config.eval.batch_size, shuffle=False, num_epochs=1
      )
    )
    rows[name] = evaluate(model, variables, task, batches, period)
    r = rows[name]
    print(
      f"{name}: PCK@0.2 {100 * r['pck']:.2f}% (95% CI {100 * r['pck_ci95'][0]:.2f}-"
      f"{100 * r['pck_ci95'][1]:.2f}, {r['joints_evaluated']} joints, {r['clips']} clips), "
      f"{r['gbops_avg']:.4f} GBOPs/frame ({r['pct_w8a8']:.1f}% of W8A8)",
      flush=True,
    )
  out.update(settings=rows, wall_seconds=time.perf_counter() - t0, load_end=harness.load_average())
  if len(rows) > 1:
    report_rows = [
      {**setting_row(key), "metric_name": task.metric_name, **rows[SETTINGS[key][0]]}
      for key in _PTQ.value
    ]
    report_dir = workdir / "pose_report"
    write_results(
      report_dir,
      report_rows,
      {"config": config.to_dict(), "task": repr(task), "split": _EVAL_SPLIT.value},
    )
    plot_pareto(report_rows, report_dir / "pareto.png", metric=task.metric_name)
    print(f"report and Pareto plot in {report_dir}", flush=True)
  name = "pose_metrics.json" if _TRAIN.value else "pose_ptq_metrics.json"
  (workdir / name).write_text(json.dumps(out, indent=2))
  print(f"{harness.footer(t0)}; metrics in {workdir / name}", flush=True)


if __name__ == "__main__":
  # The config files import `configs` (the repository's package, not installed).
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  app.run(main)
