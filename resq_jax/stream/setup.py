"""Everything a stream needs before its first frame (``stream_lib``): the video opened, the
run's models loaded and, for a quantized recipe on an FP run, calibrated on the video's first
frames.

The model under test runs the recipe of :func:`resq_jax.stream.options.run_experiment`; the
float model (the same weights under the float recipe) runs beside it as the reference for
fidelity. The newest checkpoint of the workdir gives the weights (``runs.load_run``). No Flax
``init`` runs: variables are restored into abstract templates
(``model_factory.abstract_variables``). A quantized recipe on an FP run starts from its
weights (``model_factory.init_from_fp``) and its quantizer ranges are calibrated (PTQ,
``QuantPlan.calibration``) on the first ``calibration_frames`` frames of the video, as one
clip, with keyframes every ``QuantPlan.calibration_period`` frames. Frames are normalised as in
training (:func:`normalise`).
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from resq_jax import errors
from resq_jax.experiment import runs
from resq_jax.experiment.models import abstract_variables, init_from_fp, make_model
from resq_jax.experiment.spec import Experiment
from resq_jax.nn import calibrate_model, layer_costs
from resq_jax.quant.recipe import LayerRecipe, float_recipe
from resq_jax.stream import video
from resq_jax.stream.options import StreamOptions, run_experiment
from resq_jax.tasks import normalise_frames


def _load(experiment: Experiment, workdir: str, recipe: LayerRecipe):
  """``runs.load_run`` (abstract template), a missing checkpoint as ``CheckpointError``."""
  try:
    return runs.load_run(experiment, workdir, recipe)
  except FileNotFoundError as e:
    raise errors.CheckpointError(f"{workdir}: {e}") from e


def _check_calibrated(variables: dict) -> None:
  flat = flax.traverse_util.flatten_dict(variables["params"])
  unset = sorted("/".join(p) for p, v in flat.items() if np.isnan(np.asarray(v)).any())
  if unset:
    raise ValueError(f"calibration left quantizer parameters unset: {unset}")


def _float_part(float_model, frame_shape, variables: dict) -> dict:
  """``variables`` without the quantizer parameters (the float model's own tree: the float
  reference then compiles once whatever the run)."""
  shapes = flax.traverse_util.flatten_dict(abstract_variables(float_model, frame_shape)["params"])
  params = flax.traverse_util.flatten_dict(variables["params"])
  return {
    "params": flax.traverse_util.unflatten_dict({p: params[p] for p in shapes}),
    "batch_stats": variables["batch_stats"],
  }


def load_models(experiment: Experiment, workdir: str, options: StreamOptions):
  """``(model, variables, float_model, float_variables, needs_calibration)`` of the recipe
  ``experiment.quant.recipe`` (:func:`run_experiment`). A quantized recipe on an FP run
  starts from its weights (``model_factory.init_from_fp``: quantizers NaN until calibrated)."""
  recipe, frame_shape = experiment.quant.recipe, experiment.data.frame_shape
  float_model = make_model(experiment.model, experiment.task, float_recipe())
  if options.recipe == "run" and experiment.stage != "fp":
    model, variables = _load(experiment, workdir, recipe)
    return model, variables, float_model, _float_part(float_model, frame_shape, variables), False
  if experiment.stage != "fp":
    raise errors.InvalidConfigError(
      f"recipe: --recipe={options.recipe} needs the workdir of an FP run, and {workdir} is a "
      f"{experiment.stage} run (use --recipe=run for its own quantizers, or its init_from "
      f"{experiment.init_from!r})"
    )
  _, float_vars = _load(experiment, workdir, float_recipe())
  if not recipe.is_quantized:
    return float_model, float_vars, float_model, float_vars, False
  model = make_model(experiment.model, experiment.task, recipe)
  try:
    variables = init_from_fp(model, float_vars, frame_shape)
  except ValueError as e:
    raise errors.CheckpointError(f"{workdir}: {e}") from e
  return model, variables, float_model, float_vars, True


def normalise(frame: np.ndarray) -> jax.Array:
  """uint8 ``[H, W, 3]`` -> float32 ``[1, H, W, 3]`` as in training (``normalise_frames``)."""
  return normalise_frames(frame)[None]


class _Stream(NamedTuple):
  """What the loop needs: both models with their variables, costs, sizes and the frames."""

  recipe: LayerRecipe
  period: int
  model: Any
  variables: dict
  float_model: Any
  float_vars: dict
  costs: dict
  size: tuple[int, int]
  info: video.VideoInfo
  frames: Any  # iterator of uint8 [H, W, 3]
  calibrated_on: int


def prepare(video_path: str, workdir: str, options: StreamOptions) -> _Stream:
  """Open the video, load the run's models and calibrate a quantized recipe on its first
  frames (raises ``DataError`` / ``CheckpointError`` / ``InvalidConfigError``)."""
  try:
    info = video.video_info(video_path)
  except (FileNotFoundError, ValueError) as e:
    raise errors.DataError(str(e)) from e
  experiment = run_experiment(workdir, options)
  task = experiment.task.name
  if task != "segmentation":
    raise errors.InvalidConfigError(
      f"task: {workdir} is a {task!r} run; stream.py draws and "
      "scores segmentation runs only (allowed: segmentation)"
    )
  plan = experiment.quant
  recipe, period = plan.recipe, plan.period
  model, variables, float_model, float_vars, calibrate = load_models(experiment, workdir, options)
  size = (experiment.data.height, experiment.data.width)
  frames = video.read_video(video_path, size=size, max_frames=options.max_frames, fps=options.fps)
  head = list(itertools.islice(frames, max(1, options.calibration_frames)))
  if not head:
    raise errors.DataError(f"{video_path} has no frames")
  if calibrate:
    if len(head) < 2:
      raise errors.DataError(f"{video_path}: calibration needs >= 2 frames, got {len(head)}")
    clip = jnp.concatenate([normalise(f) for f in head])[None]
    variables = calibrate_model(
      model,
      float_model=float_model,
      variables=variables,
      clips=[clip],
      period=plan.calibration_period,
      methods=plan.calibration,
    )
    _check_calibrated(variables)
  costs = layer_costs(model, variables, normalise(head[0]))
  return _Stream(
    recipe,
    period,
    model,
    variables,
    float_model,
    float_vars,
    costs,
    size,
    info,
    itertools.chain(head, frames),
    len(head) if calibrate else 0,
  )
