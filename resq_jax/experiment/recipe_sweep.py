"""A sweep over recipes of your own model, without an :class:`Experiment` config: each
recipe calibrated (PTQ) from the float weights and evaluated as ``evaluate.evaluate_sweep``
evaluates a setting (task metric, BOPs, fidelity to the float model). Everything else of
``resq_jax.experiment`` starts from a parsed config; this does not."""

from __future__ import annotations

import dataclasses

from resq_jax.experiment.evaluate import EvalResult, ReferenceCache, evaluate_model
from resq_jax.experiment.models import init_from_fp
from resq_jax.experiment.parse import default_setting_name
from resq_jax.experiment.spec import Setting, calibration_period
from resq_jax.nn import calibrate_model, observe
from resq_jax.nn.calibrate import CalibrationMethods
from resq_jax.quant.recipe import LayerRecipe, float_recipe


def sweep_recipes(
  model,
  float_variables: dict,
  recipes,
  batches,
  *,
  task,
  calibration=(),
  period: int = 1,
  methods: CalibrationMethods = CalibrationMethods(),
) -> list[EvalResult]:
  """A sweep over recipes of your own model, without an :class:`Experiment` config: each
  entry calibrated (PTQ) from the float weights and evaluated as :func:`evaluate_sweep`
  evaluates a setting (task metric, BOPs, fidelity to the float model), in order.

  Args:
    model: the float model, a Flax module with a ``recipe`` attribute (cloned per recipe:
      ``model.clone(recipe=r)``), or a function ``recipe -> model`` (e.g. one that adds
      ``with_recipe_rules``); it must give the float model for ``float_recipe()``.
    float_variables: the float model's variables.
    recipes: ``Setting`` (name, recipe, period, source 'fp' or 'ptq') or ``LayerRecipe``
      entries (named by ``parse.default_setting_name``, at ``period``; source 'fp' for a float
      recipe, else 'ptq').
    batches: the evaluation batches, the task's dicts (``frames [B, T, H, W, C]`` uint8 and
      targets); a sequence, read once per entry in the same order.
    task: a ``resq_jax.tasks`` task (``SegmentationTask``, ``PoseTask``).
    calibration: clip batches ``[B, T, H, W, C]`` (float, as ``task.prepare`` gives) that
      calibrate every quantized entry; observed once for all of them.
    methods: the calibration method of each quantizer kind.

  The float forward of every batch runs once for the whole sweep (a :class:`ReferenceCache`);
  each distinct (recipe, period) compiles one program, reused by later calls.
  """
  make = model if not hasattr(model, "clone") else (lambda r: model.clone(recipe=r))
  float_model = make(float_recipe())
  batches = list(batches)
  if not batches:
    raise ValueError("batches: empty (allowed: a sequence of at least one evaluation batch)")
  settings = []
  for entry in recipes:
    if isinstance(entry, LayerRecipe):
      source = "ptq" if entry.is_quantized else "fp"
      entry = Setting(name="", recipe=entry, period=period, source=source)
      entry = dataclasses.replace(entry, name=default_setting_name(entry))
    if not isinstance(entry, Setting) or entry.source not in ("fp", "ptq"):
      raise TypeError(
        f"recipes: got {entry!r} (allowed: LayerRecipe, or Setting with source 'fp' or 'ptq')"
      )
    settings.append(entry)
  observations = None
  if any(s.source == "ptq" for s in settings):
    calibration = list(calibration)
    if not calibration:
      raise ValueError("calibration: empty, but a quantized recipe needs calibration clips")
    observations = observe(float_model, float_variables, calibration)
  frame_shape = (1, *task.prepare(batches[0])[0].shape[2:])
  reference = ReferenceCache(float_model, float_variables)
  results = []
  for setting in settings:
    quantized = make(setting.recipe)
    variables = float_variables
    if setting.source == "ptq":
      variables = calibrate_model(
        quantized,
        float_model=float_model,
        variables=init_from_fp(quantized, float_variables, frame_shape),
        period=calibration_period(setting.period),
        methods=methods,
        observations=observations,
      )
    results.append(evaluate_model(task, quantized, variables, batches, setting, reference))
  return results
