"""Evaluation: jit-compiled clip evaluation, the quantization sweep and its report.

``evaluate_model`` scans whole validation clips with :func:`resq_jax.nn.run_clip` and returns
mIoU (one confusion matrix over the split, ignore 255) and BOPs. ``evaluate_sweep`` evaluates a
named list of settings (FP; FQ; static ResQ per period and reference mode; dynamic ResQ per
policy step; PTQ from the FP checkpoint and QAT runs) and writes ``results.json``,
``results.md`` and plots into ``<workdir>/report``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from resq_jax import config_lib, errors, model_lib
from resq_jax.data.spec import NUM_CLASSES
from resq_jax.evaluation import (ConfusionAccumulator, miou, plot_bit_map, plot_pareto,
                                 plot_variance, write_results)
from resq_jax.nn import (bops_report, calibrate_model, flatten_stats, layer_costs, observe,
                         residual_samples)
from resq_jax.nn import run_clip
from resq_jax.quant import FixedStepPolicy, dynamic_recipe, float_recipe, fq_recipe, resq_recipe
from resq_jax.quant.recipe import LayerRecipe


@dataclasses.dataclass(frozen=True)
class Setting:
  """One evaluated configuration: a recipe, its keyframe period and where weights come from
  ('fp': the float checkpoint; 'ptq': float weights + calibration; 'qat': a QAT run)."""
  name: str
  family: str  # fp | fq | resq | dynamic
  recipe: LayerRecipe
  period: int = 1
  source: str = "ptq"
  run_dir: str = ""


def _fq(w, a):
  return Setting(f"FQ W{w}A{a}", "fq", fq_recipe(w, a))


def _resq(k, mode="closed"):
  return Setting(f"ResQ K={k} {mode} W8A8/W4A4", "resq", resq_recipe((8, 8), (4, 4), mode), k)


def _dyn(step, k=4):
  policy = FixedStepPolicy(bits=(0, 2, 4, 8), step=step)
  return Setting(f"DynResQ K={k} step={step:g}", "dynamic", dynamic_recipe(policy), k)


FP_SETTING = Setting("FP32", "fp", float_recipe(), 1, "fp")
SWEEPS = {
    "demo": (FP_SETTING, _fq(8, 8), _fq(6, 6), _fq(4, 4), _fq(2, 2), _resq(2), _resq(4),
             _resq(8), _resq(4, "key"), _resq(4, "prev"), _dyn(1.0), _dyn(2.0), _dyn(4.0),
             _dyn(8.0)),
    "tiny": (FP_SETTING, _fq(8, 8), _resq(2), _dyn(1.0, 2)),
}


@functools.partial(jax.jit, static_argnames=("model", "period"))
def predict_clip(model, variables, frames, *, period):
  """Argmax labels ``[B, T, H, W]`` and per-layer stats of a clip batch."""
  result = run_clip(model, variables, frames, period=period)
  return jnp.argmax(result.outputs, axis=-1).astype(jnp.int32), result.stats


def evaluate_model(model, variables, batches, *, period: int) -> dict:
  """mIoU and BOPs of ``model`` over ``batches`` (an iterable of SynthRes batches)."""
  accumulator, reports, frames_timed, start = ConfusionAccumulator(NUM_CLASSES), [], 0, None
  costs = None
  for batch in batches:
    frames, labels = model_lib.preprocess(batch)
    if costs is None:
      costs = layer_costs(model, variables, frames[:, 0])
    pred, stats = predict_clip(model, variables, frames, period=period)
    accumulator.update(pred, labels)
    reports.append(bops_report(stats, costs))  # waits for the batch (host-side float64)
    if start is None:  # throughput excludes the first batch, which pays for compilation
      start = time.perf_counter()
    else:
      frames_timed += frames.shape[0] * frames.shape[1]
  if costs is None:
    raise ValueError("no evaluation batch: is the validation split empty?")
  mean_iou, per_class = miou(accumulator.result())
  bops = np.mean([r["bops_per_frame"] for r in reports], axis=0)
  w8a8 = 64.0 * reports[0]["macs_per_frame"]
  return {"miou": float(mean_iou), "per_class_iou": [float(v) for v in per_class],
          "gbops_avg": float(bops.mean()) / 1e9, "gbops_peak": float(bops.max()) / 1e9,
          "pct_w8a8": 100.0 * float(bops.mean()) / w8a8,
          "state_bytes": 4 * reports[0]["state_elements"],
          "frames_per_s": (frames_timed / (time.perf_counter() - start) if frames_timed
                           else float("nan"))}


def _setting_row(setting: Setting, metrics: dict) -> dict:
  r = setting.recipe
  row = {"name": setting.name, "family": setting.family, "mode": setting.source,
         "period": setting.period}
  if r.is_quantized:
    row.update(key_bits=list(r.key.bits), w_bits=r.key.bits[0], a_bits=r.key.bits[1])
  if r.has_state:
    row.update(residual_bits=list(r.residual.bits), ref_mode=r.ref_mode)
  if r.policy is not None:
    row["policy_step"] = getattr(r.policy, "step", None)
  return {**row, **metrics}


def _qat_settings(run_dirs: str) -> list[Setting]:
  settings = []
  for run_dir in [d for d in run_dirs.split(",") if d]:
    path = pathlib.Path(run_dir) / "config.json"
    if not path.is_file():
      raise errors.CheckpointError(f"QAT run {run_dir} (eval.qat_runs) has no config.json: "
                                   "is it the workdir of a finished QAT run?")
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    recipe = config_lib.recipe_from(config.quant)
    family = {"fq": "fq", "resq": "resq", "dynamic": "dynamic"}[recipe.mode]
    name = f"QAT {pathlib.Path(run_dir).name}"
    period = config.quant.period if recipe.has_state else 1
    settings.append(Setting(name, family, recipe, period, "qat", run_dir))
  return settings


def evaluate_sweep(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Evaluate ``SWEEPS[config.eval.sweep]`` (+ QAT runs) from the FP run ``config.init_from``;
  write the report into ``<workdir>/report`` and return its rows."""
  config_lib.validate(config, needs_init_from=True)
  model_lib.ensure_data(config)
  model_lib.verify_splits(config)
  model_lib.check_init_from(config, config.init_from)
  report_dir = pathlib.Path(workdir) / "report"
  report_dir.mkdir(parents=True, exist_ok=True)
  fp_model, fp_vars = model_lib.load_fp(config, config.init_from)
  calib = model_lib.calibration_batches(config)
  observations = observe(fp_model, fp_vars, calib)
  settings = list(SWEEPS[config.eval.sweep]) + _qat_settings(config.eval.qat_runs)
  rows, bit_map_done = [], False
  for i, setting in enumerate(settings):
    model, variables = _setting_variables(config, setting, fp_model, fp_vars, observations)
    metrics = evaluate_model(model, variables, model_lib.eval_batches(config),
                             period=setting.period)
    rows.append(_setting_row(setting, metrics))
    print(f"[{i + 1}/{len(settings)}] {setting.name}: mIoU {100 * metrics['miou']:.1f}%, "
          f"{metrics['pct_w8a8']:.1f}% of W8A8 BOPs", flush=True)
    if config.eval.plots and setting.family == "dynamic" and not bit_map_done:
      _plot_bit_map(config, model, variables, setting, report_dir / "bit_map.png")
      bit_map_done = True
  meta = {"config": config.to_dict(), "num_devices": jax.device_count(),
          "backend": jax.default_backend()}
  write_results(report_dir, rows, meta)
  if config.eval.plots:
    plot_pareto(rows, report_dir / "pareto.png")
    _plot_variances(observations, config.quant.period, report_dir / "variance.png")
  return rows


def _setting_variables(config, setting: Setting, fp_model, fp_vars, observations):
  model = fp_model.clone(recipe=setting.recipe)
  if setting.source == "fp":
    return model, fp_vars
  if setting.source == "qat":
    return model, model_lib.load_run(config, setting.run_dir, setting.recipe)[1]
  variables = model_lib.init_from_fp(model, fp_vars, config)
  methods = config_lib.calibration_methods_from(config.calibration)
  return model, calibrate_model(model, fp_model, variables, period=max(2, setting.period),
                                methods=methods, observations=observations)


def _plot_bit_map(config, model, variables, setting, path):
  batch = next(iter(model_lib.eval_batches(config)))
  frames, _ = model_lib.preprocess(batch)
  _, stats = predict_clip(model, variables, frames, period=setting.period)
  maps = [np.asarray(s["bit_map"]) for s in flatten_stats(stats).values() if "bit_map" in s]
  bit_maps = max(maps, key=lambda m: m[0, 0].size)[:, 0]  # finest layer, first clip: [T, h, w]
  keyframes = [t % setting.period == 0 for t in range(bit_maps.shape[0])]
  plot_bit_map(np.asarray(batch["frames"][0]), bit_maps, path,
               candidates=setting.recipe.policy.bits, keyframes=keyframes)


def _plot_variances(observations, period, path):
  names, act_var, res_var = [], [], []
  for name, entry in observations.layers.items():
    names.append(name)
    act_var.append(float(np.var(entry["x"])))
    res_var.append(float(np.var(residual_samples(entry["x"], max(2, period), "prev"))))
  plot_variance(names, np.asarray(act_var), np.asarray(res_var), path)
