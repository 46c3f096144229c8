"""The model of an experiment and its variables.

``make_model`` builds ``SegNet`` from the typed :class:`ModelSpec`, the task (the number of
output channels) and a layer recipe; ``init_variables`` initialises it on one frame; and
``init_from_fp`` starts a quantized model from float weights. Float training averages
BatchNorm statistics over the data axis (synchronised BatchNorm), so 1 and N devices train
alike.
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from resq_jax.experiment import ModelSpec
from resq_jax.nn.models import SegNet, segnet_preset
from resq_jax.quant.recipe import LayerRecipe
from resq_jax.tasks.base import Task
from resq_jax.training import DATA_AXIS


def make_model(model: ModelSpec, task: Task, recipe: LayerRecipe) -> SegNet:
  """``SegNet(num_classes=task.num_outputs(), recipe=recipe)`` of the preset ``model.preset``:
  a dense head at input resolution (class logits, or joint heatmaps for pose)."""
  return SegNet(num_classes=task.num_outputs(), recipe=recipe, bn_axis_name=DATA_AXIS,
                **segnet_preset(model.preset))


def init_variables(model: SegNet, frame_shape, rng) -> dict:
  """``model.init`` on zeros of ``frame_shape`` (``DataSpec.frame_shape``: ``[1, H, W, 3]``)."""
  return model.init(rng, jnp.zeros(frame_shape, jnp.float32), phase="key")


def init_from_fp(model: SegNet, fp_vars: dict, frame_shape) -> dict:
  """Variables of quantized ``model`` whose weights and BN statistics are the FP run's; the
  quantizer parameters keep their initial values (calibrate them next)."""
  fresh = init_variables(model, frame_shape, jax.random.key(0))
  params = flax.traverse_util.flatten_dict(fresh["params"])
  for path, value in flax.traverse_util.flatten_dict(fp_vars["params"]).items():
    if path not in params:
      raise ValueError(f"FP parameter {'/'.join(path)} has no counterpart in the quantized model")
    params[path] = value
  return {"params": flax.traverse_util.unflatten_dict(params),
          "batch_stats": fp_vars["batch_stats"]}
