"""Deprecated: the ConfigDict-taking helpers of the former ``model_lib``, kept only for callers
not moved to the typed :class:`resq_jax.experiment.Experiment` yet (``stream_lib``).

New code uses the modules split by concern: ``resq_jax.model_factory`` (model and
variables), ``resq_jax.inputs`` (data), ``resq_jax.runs`` (runs on disk) and
``resq_jax.tasks`` (``normalise_frames``, ``NORMALISE``).
"""
from __future__ import annotations

from resq_jax import model_factory
from resq_jax.quant.recipe import LayerRecipe
from resq_jax.runs import read_run_config  # noqa: F401  (re-exported)
from resq_jax.tasks import NORMALISE, get_task  # noqa: F401  (NORMALISE re-exported)


def _task(config):
  return get_task(config.get("task", "segmentation") if hasattr(config, "get") else
                  "segmentation")


def make_model(config, recipe: LayerRecipe | None = None):
  from resq_jax import config_lib  # pylint: disable=import-outside-toplevel
  from resq_jax.experiment import ModelSpec  # pylint: disable=import-outside-toplevel
  recipe = config_lib.recipe_from(config.quant) if recipe is None else recipe
  return model_factory.make_model(ModelSpec(config.model.preset), _task(config), recipe)


def frame_shape(config) -> tuple[int, int, int, int]:
  return (1, config.data.height, config.data.width, 3)


def init_variables(model, config, rng) -> dict:
  return model_factory.init_variables(model, frame_shape(config), rng)


def init_from_fp(model, fp_vars: dict, config) -> dict:
  return model_factory.init_from_fp(model, fp_vars, frame_shape(config))
