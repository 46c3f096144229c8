"""Evaluation: jit-compiled clip evaluation, the quantization sweep and its report.

``evaluate_model`` scans whole clips of the evaluation split (``eval.split``) with
:func:`resq_jax.nn.run_clip` and measures one :class:`EvalResult`: the task's metric (mIoU for
segmentation, PCK for pose; the task's accumulator sums it over the split) with a 95% bootstrap
interval over clips, its fidelity to the float model when given one (per-clip ``agreement`` /
``kp_dist`` and ``rel_l2``) and the cost (BOPs per frame, % of W8A8 frame quantization, ResQ
state memory). ``evaluate_sweep`` evaluates the experiment's sweep (``Experiment.eval.sweep``:
FP; FQ; static ResQ per period and reference mode; dynamic ResQ per policy step; PTQ from the FP
checkpoint) and the QAT runs of ``eval.qat_runs``, every one against the FP model, and writes
``results.json`` (one :class:`EvalResult` row per setting), ``results.md`` (with the equal-cost
comparison to frame quantization, err/FQ) and plots into ``<workdir>/report``.

One setting the way the sweep evaluates it: :func:`evaluate_setting` (built from
:func:`setting_variables`, :func:`eval_batches` and :func:`calibration_clips`). A setting's
programs are compiled once per (model recipe, period) and reused by every later evaluation of
an equal setting, whatever its weights or calibration values (``tests/test_experiment_evaluate``
counts the compiles).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np

from resq_jax import errors
from resq_jax.evaluation import plot_bit_map, plot_pareto, plot_variance, write_results
from resq_jax.evaluation.metrics import PER_CLIP, FidelityAccumulator
from resq_jax.evaluation.plots import variance_ratio_pct
from resq_jax.experiment import inputs, runs
from resq_jax.experiment.log import get_logger
from resq_jax.experiment.models import init_from_fp
from resq_jax.experiment.parse import qat_setting
from resq_jax.experiment.spec import Experiment, Setting, calibration_period
from resq_jax.nn import (
  bops_report,
  calibrate_model,
  flatten_stats,
  layer_costs,
  observe,
  residual_samples,
  run_clip,
)
from resq_jax.nn.frame_precision import run_clip_frame_precision
from resq_jax.quant.cost import pct_of_w8a8, state_memory_bytes, w8a8_bops

log = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """One evaluated setting: a row of ``results.json`` (:meth:`to_row`).

  ``source``: where the weights come from ('fp' | 'ptq' | 'qat'); ``family``: the recipe's
  report family ('fp' | 'fq' | 'resq' | 'dynamic', or any other string such as a control
  family: the report sorts unknown families after the known ones). ``metric`` is the task's
  headline value (``metric_name``: 'miou' | 'pck', a fraction, higher is better); ``metrics``
  everything the task's accumulator returned (with ``<metric>_ci``, its 95% bootstrap
  interval over clips) and, when evaluated against the float model, the fidelity values
  (``agreement`` or ``kp_dist``, ``rel_l2``, each with ``_ci`` and ``_by_t``);
  ``fidelity_error`` names the one the report compares at equal cost (None without a
  reference), whose per-clip values, in evaluation order, are ``<fidelity_error>_per_clip``
  (absent from rows written before they existed). Costs are per frame, clip average and peak,
  in 1e9 BOPs; ``state_bytes`` is the ResQ carry of one clip (0 without state).
  """

  name: str
  family: str
  source: str
  period: int
  metric_name: str
  metric: float
  gbops_avg: float
  gbops_peak: float
  gbops_w8a8: float
  pct_w8a8: float
  state_bytes: int
  frames_per_s: float
  key_bits: tuple[int, int] | None = None
  residual_bits: tuple[int, int] | None = None
  ref_mode: str | None = None
  policy: str | None = None
  policy_step: float | None = None
  eval_seconds: float | None = None
  fidelity_error: str | None = None
  metrics: dict = dataclasses.field(default_factory=dict)

  def to_row(self) -> dict:
    """A flat dict: the fields, with ``metrics`` spread (so ``row['miou']`` is the mIoU)."""
    row = dataclasses.asdict(self)
    return {
      **{k: v for k, v in row.items() if k != "metrics"},
      **row["metrics"],
      self.metric_name: self.metric,
    }

  @classmethod
  def from_row(cls, row: dict) -> EvalResult:
    names = {f.name for f in dataclasses.fields(cls)} - {"metrics"}
    fields = {k: v for k, v in row.items() if k in names}
    for key in ("key_bits", "residual_bits"):
      if fields.get(key) is not None:
        fields[key] = tuple(fields[key])
    return cls(**fields, metrics={k: v for k, v in row.items() if k not in names})


@functools.partial(jax.jit, static_argnames=("model", "task", "period"))
def predict_clip(model, task, variables, frames, *, period):
  """The task's predictions ``[B, T, ...]``, per-layer stats and the final ResQ carry."""
  result = run_clip(model, variables, frames, period=period)
  return task.predict(result.outputs), result.stats, result.state


@functools.partial(jax.jit, static_argnames=("model", "task", "period", "trigger"))
def outputs_and_predict_clip(model, task, variables, frames, *, period, trigger=None):
  """:func:`predict_clip` plus the raw outputs ``[B, T, H, W, C]`` (they stay on the device).

  The float reference of :func:`evaluate_model` runs through this same function with
  ``period=1``, so that the FP setting and its reference are one compiled program and agree
  bit for bit. ``trigger``: adaptive keyframes (``period`` is then its ``max_period``)."""
  result = run_clip(model, variables, frames, period=period, trigger=trigger)
  return result.outputs, task.predict(result.outputs), result.stats, result.state


@functools.partial(jax.jit, static_argnames=("task",))
def clip_fidelity(task, outputs, reference_outputs):
  """``task.fidelity`` jitted: a few floats per clip leave the device, not the outputs."""
  return task.fidelity(outputs, reference_outputs)


@functools.partial(jax.jit, static_argnames=("models", "task", "policy"))
def frame_precision_clip(models, task, variables, frames, *, policy):
  """VideoIQ-style per-frame precision (``resq_jax.nn.frame_precision``): ``models`` /
  ``variables`` one per candidate; the same outputs as :func:`outputs_and_predict_clip`."""
  result, _ = run_clip_frame_precision(models, variables, frames, policy, check=False)
  return result.outputs, task.predict(result.outputs), result.stats, result.state


def _last(x):
  """The most precise candidate of a frame-precision setting (a tuple), else ``x`` itself."""
  return x[-1] if isinstance(x, tuple) else x


class ReferenceCache:
  """The float model's outputs on a sweep's evaluation batches, computed once and reused.

  Every setting of a sweep reads the same split in the same order (unshuffled), so batch ``i``
  holds the same clips for every setting, and the float forward they are all compared with is
  the same: it is kept on the host (segmentation, 240 clips of 8 64x64 frames: 220 MB) instead
  of being recomputed per setting (a third of each setting's evaluation time). A batch whose
  frames differ from those first seen at its index raises ``ValueError`` (a different split
  or order would otherwise compare settings with the wrong reference).
  """

  def __init__(self, model, variables):
    self.model, self.variables = model, variables
    self._outputs: dict[int, tuple[tuple, np.ndarray, np.ndarray]] = {}

  def outputs(self, task, index: int, frames, own_outputs=None) -> np.ndarray:
    """The float outputs of batch ``index`` (``frames [B, T, H, W, 3]``); ``own_outputs``: the
    outputs of the setting being evaluated when it is the float model itself (no forward)."""
    clip_sums = np.asarray(frames, np.float64).reshape(frames.shape[0], -1).sum(axis=1)
    if index in self._outputs:
      seen_shape, seen_sums, out = self._outputs[index]
      if tuple(frames.shape) != seen_shape or not np.array_equal(clip_sums, seen_sums):
        raise ValueError(
          f"evaluation batch {index} differs from the one the float reference was computed on "
          f"(shape {tuple(frames.shape)} vs {seen_shape}, or other clips): settings of one "
          "sweep must read the same split in the same order"
        )
      return out
    if own_outputs is None:
      own_outputs = outputs_and_predict_clip(self.model, task, self.variables, frames, period=1)[0]
    out = np.asarray(jax.device_get(own_outputs))
    self._outputs[index] = (tuple(frames.shape), clip_sums, out)
    return out


def _reference_outputs(task, reference, index, model, variables, frames, outputs, period: int):
  """The float model's outputs on ``frames`` (``run_clip`` with period 1): the setting's own
  ``outputs`` when the setting is the reference itself (the FP row: no second forward);
  ``reference``: ``(model, variables)`` or a :class:`ReferenceCache`."""
  ref_model, ref_vars = (
    (reference.model, reference.variables) if isinstance(reference, ReferenceCache) else reference
  )
  own = outputs if ref_model == model and ref_vars is variables and period == 1 else None
  if isinstance(reference, ReferenceCache):
    return reference.outputs(task, index, frames, own)
  if own is not None:
    return own
  return outputs_and_predict_clip(ref_model, task, ref_vars, frames, period=1)[0]


def evaluate_model(task, model, variables, batches, setting: Setting, reference=None) -> EvalResult:
  """The task metric and cost of ``model`` (run with ``setting.period``) over ``batches``.

  ``reference``: ``(float_model, float_variables)``, a :class:`ReferenceCache` of them (a
  sweep: one float forward per batch for all its settings) or None. When given, the float
  model's outputs on the same clips (period 1) are the reference, and ``task.fidelity`` of
  the setting's outputs to it is kept per clip (never the outputs): ``metrics`` gains, for
  each fidelity value (``agreement`` / ``kp_dist``, ``rel_l2``), the mean over clips, its 95%
  bootstrap interval (``<name>_ci``) and the per-frame-index curve (``<name>_by_t``), and the
  result's ``fidelity_error`` names the task's error (``task.fidelity_error_name``), whose
  value per clip, in the order of ``batches``, is ``<name>_per_clip``. ``frames_per_s``
  excludes the reference's forward and the fidelity computation.
  """
  accumulator, reports, frames_timed, start = task.new_accumulator(), [], 0, None
  fidelity = FidelityAccumulator() if reference is not None else None
  costs, state_bytes, begin, reference_seconds = None, 0, time.perf_counter(), 0.0
  for index, batch in enumerate(batches):
    frames, targets = task.prepare(batch)
    if costs is None:  # frame precision: the candidates share layers; stats carry the bits
      costs = layer_costs(_last(model), _last(variables), frames[:, 0])
    if setting.frame_precision is not None:
      outputs, pred, stats, state = frame_precision_clip(
        model, task, variables, frames, policy=setting.frame_precision.policy
      )
    else:  # with or without a reference: one compiled program per (model, period)
      # trigger only when set: an explicit None would be another jit signature than the
      # reference's call, and the FP setting would no longer share its program.
      extra = {} if setting.trigger is None else {"trigger": setting.trigger}
      outputs, pred, stats, state = outputs_and_predict_clip(
        model, task, variables, frames, period=setting.period, **extra
      )
    accumulator.update(pred, targets)
    reports.append(bops_report(stats, costs))  # waits for the batch (host-side float64)
    if fidelity is not None:
      t0 = time.perf_counter()
      ref = _reference_outputs(
        task, reference, index, model, variables, frames, outputs, setting.period
      )
      fidelity.update(jax.device_get(clip_fidelity(task, outputs, ref)))
      del outputs, ref
      if start is not None:
        reference_seconds += time.perf_counter() - t0
    if start is None:  # throughput excludes the first batch, which pays for compilation
      start = time.perf_counter()
      state_bytes = state_memory_bytes(state) // frames.shape[0]  # shapes only: no transfer
    else:
      frames_timed += frames.shape[0] * frames.shape[1]
  if costs is None:
    raise ValueError("no evaluation batch: is the evaluation split empty?")
  metrics = accumulator.result()
  if fidelity is not None:
    metrics.update(fidelity.result())
    metrics.update(_per_clip(fidelity, task.fidelity_error_name))
  bops = np.mean([r["bops_per_frame"] for r in reports], axis=0)
  macs = reports[0]["macs_per_frame"]
  timed_seconds = time.perf_counter() - start - reference_seconds
  r = setting.recipe if setting.frame_precision is None else setting.frame_precision.top
  return EvalResult(
    name=setting.name,
    family=setting.family,
    source=setting.source,
    period=setting.period,
    metric_name=task.metric_name,
    metric=float(metrics.pop(task.metric_name)),
    gbops_avg=float(bops.mean()) / 1e9,
    gbops_peak=float(bops.max()) / 1e9,
    gbops_w8a8=w8a8_bops(macs) / 1e9,
    pct_w8a8=pct_of_w8a8(float(bops.mean()), macs),
    state_bytes=int(state_bytes),
    frames_per_s=(frames_timed / timed_seconds if frames_timed else float("nan")),
    key_bits=tuple(r.key.bits) if r.is_quantized else None,
    residual_bits=tuple(r.residual.bits) if r.has_state else None,
    ref_mode=r.ref_mode if r.has_state else None,
    policy=None if r.policy is None else type(r.policy).__name__,
    policy_step=getattr(r.policy, "step", None),
    eval_seconds=time.perf_counter() - begin,
    fidelity_error=None if fidelity is None else task.fidelity_error_name,
    metrics=metrics,
  )


def _per_clip(fidelity: FidelityAccumulator, name: str) -> dict:
  """``{name + '_per_clip': [N] floats}``: the fidelity error of every clip, in evaluation order.

  Every setting of a sweep reads the split in the same order (``inputs.eval_batches``: no
  shuffling, one pass), so these lists are paired clip by clip across the rows of a sweep (the
  claims' paired bootstrap, ``resq_jax.evaluation.claims``). Only the compared error is kept,
  rounded to 7 significant digits (the float32 precision it was computed in), so that
  ``results.json`` grows by one short number per clip and row."""
  values = fidelity.clip_values(name)
  return {f"{name}{PER_CLIP}": [float(f"{v:.7g}") for v in values]} if len(values) else {}


def result_line(result: EvalResult) -> str:
  """'mIoU 61.2%, 0.0431 GBOPs/frame (26.6% of W8A8 FQ)'."""
  label = {"miou": "mIoU", "pck": "PCK@0.2"}.get(result.metric_name, result.metric_name)
  return (
    f"{label} {100 * result.metric:.1f}%, {result.gbops_avg:.4f} GBOPs/frame "
    f"({result.pct_w8a8:.1f}% of W8A8 FQ)"
  )


def _qat_settings(run_dirs) -> list[Setting]:
  settings = []
  for run_dir in run_dirs:
    saved = runs.read_run_config(run_dir)
    if saved is None:
      raise errors.CheckpointError(
        f"QAT run {run_dir} (eval.qat_runs) has no config.json: "
        "is it the workdir of a finished QAT run?"
      )
    settings.append(qat_setting(saved, run_dir, f"QAT {pathlib.Path(run_dir).name}"))
  return settings


def evaluate_sweep(experiment: Experiment, workdir: str) -> list[EvalResult]:
  """Evaluate ``experiment.eval.sweep`` (+ the QAT runs) from the FP run
  ``experiment.init_from``; write the report into ``<workdir>/report`` and return its rows.
  ``experiment`` comes from ``config_lib.parse(config, needs_init_from=True)``."""
  if not experiment.init_from:
    raise errors.InvalidConfigError(
      "init_from: empty, but the evaluation sweep needs init_from "
      "(allowed: the workdir of an FP run)"
    )
  data, task = experiment.data, experiment.task
  inputs.ensure_data(data)
  inputs.verify_splits(data)
  runs.check_init_from(experiment, experiment.init_from)
  qat = _qat_settings(experiment.eval.qat_runs)
  report_dir = runs.make_workdir(pathlib.Path(workdir) / "report")
  fp_model, fp_vars = runs.load_fp(experiment, experiment.init_from)
  calib = calibration_clips(experiment)
  observations = observe(fp_model, fp_vars, calib)
  settings = list(experiment.eval.sweep) + qat
  reference = ReferenceCache(fp_model, fp_vars)
  results, bit_map_done = [], False
  for i, setting in enumerate(settings):
    model, variables = setting_variables(experiment, setting, fp_model, fp_vars, observations)
    result = evaluate_model(
      task, model, variables, eval_batches(experiment), setting, reference=reference
    )
    results.append(result)
    log.info(f"[{i + 1}/{len(settings)}] {setting.name}: {result_line(result)}")
    if experiment.eval.plots and setting.family == "dynamic" and not bit_map_done:
      _plot_bit_map(experiment, model, variables, setting, report_dir / "bit_map.png")
      bit_map_done = True
  order = list(layer_costs(fp_model, fp_vars, calib[0][:, 0], warn=False))
  variances = layer_variances(
    observations, order, calibration_period(max(s.period for s in settings))
  )
  meta = {
    "variances": variances,
    "config": json.loads(experiment.config_json),
    "num_devices": jax.device_count(),
    "backend": jax.default_backend(),
    "task": task.name,
    "gbops_w8a8": results[0].gbops_w8a8,
  }
  rows = [r.to_row() for r in results]
  write_results(report_dir, rows, meta)
  if experiment.eval.plots:
    plot_pareto(rows, report_dir / "pareto.png", metric=task.metric_name)
    _plot_variances(variances, report_dir / "variance.png")
  return results


def eval_batches(experiment: Experiment) -> Iterable[dict]:
  """The evaluation batches of ``experiment``: ``eval.split`` in order, one pass of
  ``eval.batch_size`` clips per batch (its first ``eval.num_batches`` if > 0), the loader's
  dicts (``frames [B, T, H, W, 3]`` uint8 and the task's targets). Every call reads the same
  clips in the same order (what a sweep's settings and its :class:`ReferenceCache` rely on)."""
  return inputs.eval_batches(
    experiment.data,
    batch_size=experiment.eval.batch_size,
    num_batches=experiment.eval.num_batches,
    split=experiment.eval.split,
  )


def calibration_clips(experiment: Experiment) -> list:
  """The PTQ calibration clips of ``experiment``: ``quant.calibration_batches`` shuffled
  training batches (seed ``seed + 1``), prepared by the task: ``[B, T, H, W, 3]`` float."""
  batches = inputs.calibration_batches(
    experiment.data, experiment.seed, experiment.quant.calibration_batches
  )
  return [experiment.task.prepare(b)[0] for b in batches]


def setting_variables(
  experiment: Experiment, setting: Setting, fp_model, fp_vars, observations=None
) -> tuple[Any, dict]:
  """``(model, variables)`` of one ``setting`` as the sweep evaluates it: the float model
  ``fp_model`` cloned with the setting's recipe, and its variables by ``setting.source``:
  'fp' the float variables ``fp_vars``; 'qat' the newest checkpoint of ``setting.run_dir``;
  'ptq' the float weights with every quantizer calibrated (``quant.calibration`` methods,
  at the setting's calibration period) on ``observations`` (``resq_jax.nn.observe`` of the
  float model on :func:`calibration_clips`; computed here when None). A frame-precision
  setting gives a tuple of each (one per candidate, each calibrated as its own FQ setting)."""
  if observations is None and _needs_calibration(setting):
    observations = observe(fp_model, fp_vars, calibration_clips(experiment))
  if setting.frame_precision is not None:
    pairs = [
      setting_variables(
        experiment,
        dataclasses.replace(setting, recipe=r, frame_precision=None),
        fp_model,
        fp_vars,
        observations,
      )
      for r in setting.frame_precision.candidates
    ]
    return tuple(m for m, _ in pairs), tuple(v for _, v in pairs)
  model = fp_model.clone(recipe=setting.recipe)
  if setting.source == "fp":
    return model, fp_vars
  if setting.source == "qat":
    return model, runs.load_run(experiment, setting.run_dir, setting.recipe)[1]
  variables = init_from_fp(model, fp_vars, experiment.data.frame_shape)
  if setting.trigger is not None:  # residuals where the trigger will not fire: the clips again
    return model, calibrate_model(
      model,
      float_model=fp_model,
      variables=variables,
      clips=calibration_clips(experiment),
      trigger=setting.trigger,
      methods=experiment.quant.calibration,
    )
  return model, calibrate_model(
    model,
    float_model=fp_model,
    variables=variables,
    period=calibration_period(setting.period),
    methods=experiment.quant.calibration,
    observations=observations,
  )


def _needs_calibration(setting: Setting) -> bool:
  return setting.source == "ptq" or (
    setting.frame_precision is not None and setting.source != "qat"
  )


def evaluate_setting(
  experiment: Experiment,
  setting: Setting,
  *,
  fp: tuple[Any, dict] | None = None,
  observations=None,
  reference: ReferenceCache | tuple | None | bool = True,
) -> EvalResult:
  """One ``setting`` evaluated exactly as :func:`evaluate_sweep` evaluates it: the same
  variables (:func:`setting_variables`), batches (:func:`eval_batches`) and fidelity to the
  float model, so its metrics equal the sweep's row (only the timings differ).

  ``setting``: e.g. ``parse.setting_from(config.quant, {'mode': 'fq', 'w_bits': 4, ...})``,
  an entry of ``experiment.eval.sweep`` or ``parse.qat_setting(...)``. ``fp``: ``(float model,
  float variables)``, default ``runs.load_fp(experiment, experiment.init_from)``;
  ``observations``: the float model's calibration observations (computed when None and the
  setting calibrates); ``reference``: True (the float model, in a fresh
  :class:`ReferenceCache` as in the sweep), a :class:`ReferenceCache` to share the float
  forward between calls, ``(model, variables)``, or None / False (no fidelity).
  The data must be built (``inputs.ensure_data``). Repeated calls with equal settings reuse
  the compiled programs (jit caches on the model's recipe and the period)."""
  if fp is None:
    if not experiment.init_from:
      raise errors.InvalidConfigError(
        "init_from: empty, but evaluate_setting needs init_from or fp=(model, variables)"
      )
    fp = runs.load_fp(experiment, experiment.init_from)
  fp_model, fp_vars = fp
  model, variables = setting_variables(experiment, setting, fp_model, fp_vars, observations)
  if reference is True:  # the sweep's own path (host-side reference): the same programs
    reference = ReferenceCache(fp_model, fp_vars)
  elif reference is False:
    reference = None
  return evaluate_model(
    experiment.task, model, variables, eval_batches(experiment), setting, reference=reference
  )


def _plot_bit_map(experiment: Experiment, model, variables, setting: Setting, path):
  batch = next(iter(eval_batches(experiment)))
  frames, _ = experiment.task.prepare(batch)
  # The program the sweep just ran for this setting: no compile of its own.
  _, _, stats, _ = outputs_and_predict_clip(
    model, experiment.task, variables, frames, period=setting.period
  )
  maps = [np.asarray(s["bit_map"]) for s in flatten_stats(stats).values() if "bit_map" in s]
  bit_maps = max(maps, key=lambda m: m[0, 0].size)[:, 0]  # finest layer, first clip: [T, h, w]
  keyframes = [t % setting.period == 0 for t in range(bit_maps.shape[0])]
  plot_bit_map(
    np.asarray(batch["frames"][0]),
    bit_maps,
    path,
    candidates=setting.recipe.policy.bits,
    keyframes=keyframes,
  )


def layer_variances(observations, order: list[Any], period: int) -> dict:
  """Per layer, in network order (the order of the calls): the variance of its input
  activations and of their frame-to-frame residuals ``x_t - x_{t-1}`` over the calibration
  clips, and the ratio in percent (the paper's first observation: residuals vary less)."""
  names = [n for n in order if n in observations.layers]
  names += sorted(n for n in observations.layers if n not in names)
  act = np.asarray([float(np.var(observations.layers[n]["x"])) for n in names])
  res = np.asarray(
    [float(np.var(residual_samples(observations.layers[n]["x"], period, "prev"))) for n in names]
  )
  ratio = variance_ratio_pct(act, res)
  return {
    "layers": names,
    "act_var": act.tolist(),
    "res_var": res.tolist(),
    "ratio_pct": ratio.tolist(),
    "median_ratio_pct": float(np.nanmedian(ratio)) if np.isfinite(ratio).any() else None,
  }


def _plot_variances(variances: dict, path):
  plot_variance(
    variances["layers"], np.asarray(variances["act_var"]), np.asarray(variances["res_var"]), path
  )
