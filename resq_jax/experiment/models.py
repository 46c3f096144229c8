"""The model of an experiment and its variables.

``make_model`` builds ``SegNet`` from the typed :class:`ModelSpec`, the task (the number of
output channels) and a layer recipe; ``init_variables`` initialises it on one frame (real
random weights: what a new FP run starts from); ``abstract_variables`` gives their shapes and
dtypes without computing anything (templates for restoring a checkpoint, whose values
overwrite them anyway); and ``init_from_fp`` starts a quantized model from float weights.
Float training averages BatchNorm statistics over the data axis (synchronised BatchNorm) inside
``make_train_step``'s ``shard_map``, so 1 and N devices train alike; the same model applied with
``train=True`` outside it (a user's own loop) uses the batch's own statistics
(``SegNet.bn_axis_name``).

Why templates are abstract: Flax's ``model.init`` runs eagerly, op by op, compiling each op
on first use: 17-24 s for the tiny float preset in a fresh process on 2 busy CPU cores (jitted:
22-24 s, one threefry per parameter; so the one real init, a new FP run's, stays eager), while
``jax.eval_shape`` of it only traces (0.1-0.5 s). ``runs.load_fp`` on the tiny preset went
from 18-24 s to 0.5 s.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from resq_jax.experiment.spec import ModelSpec
from resq_jax.nn import QUANT_PARAMS
from resq_jax.nn.models import SegNet, segnet_preset
from resq_jax.quant.recipe import LayerRecipe
from resq_jax.tasks.base import Task
from resq_jax.training import DATA_AXIS


def make_model(model: ModelSpec, task: Task, recipe: LayerRecipe) -> SegNet:
  """``SegNet(num_classes=task.num_outputs(), recipe=recipe)`` of the preset ``model.preset``:
  a dense head at input resolution (class logits, or joint heatmaps for pose); every ``QConv``
  runs with ``model.conv_impl``. BatchNorm statistics are synchronised over ``data`` where the
  model runs under that axis (``make_train_step``), and are the batch's own elsewhere."""
  return SegNet(
    num_classes=task.num_outputs(),
    recipe=recipe,
    bn_axis_name=DATA_AXIS,
    conv_impl=model.conv_impl,
    **segnet_preset(model.preset),
  )


def init_variables(model: SegNet, frame_shape, rng) -> dict:
  """``model.init`` on zeros of ``frame_shape`` (``DataSpec.frame_shape``: ``[1, H, W, 3]``)."""
  return model.init(rng, jnp.zeros(frame_shape, jnp.float32), phase="key")


def abstract_variables(model: SegNet, frame_shape, sharding=None) -> dict:
  """The ``jax.ShapeDtypeStruct`` tree of :func:`init_variables` (traced with
  ``jax.eval_shape``: nothing is computed or compiled), each leaf placed on ``sharding`` if
  given (a restore target)."""
  shapes = jax.eval_shape(lambda rng: init_variables(model, frame_shape, rng), jax.random.key(0))
  if sharding is None:
    return shapes
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def init_from_fp(model: SegNet, fp_vars: dict, frame_shape) -> dict:
  """Variables of quantized ``model`` whose weights and BN statistics are the FP run's.

  Its quantizer parameters (``resq_jax.nn.QUANT_PARAMS``) are NaN placeholders until
  ``calibrate_model`` sets them (every caller calibrates next; ``run_clip`` / ``stream_step``
  refuse NaN quantizers). Only the shapes of the quantized model are traced: no Flax init runs.
  Raises ValueError if an FP parameter has no counterpart of the same shape in ``model``, or
  ``model`` has a parameter that is neither an FP weight nor a quantizer's.
  """
  shapes = flax.traverse_util.flatten_dict(abstract_variables(model, frame_shape)["params"])
  fp = flax.traverse_util.flatten_dict(fp_vars["params"])
  for path, value in fp.items():
    if path not in shapes:
      raise ValueError(f"FP parameter {'/'.join(path)} has no counterpart in the quantized model")
    if tuple(jnp.shape(value)) != tuple(shapes[path].shape):
      raise ValueError(
        f"FP parameter {'/'.join(path)}: shape {tuple(jnp.shape(value))} != "
        f"{tuple(shapes[path].shape)} in the quantized model"
      )
  unset = sorted("/".join(p) for p in shapes if p not in fp and p[-1] not in QUANT_PARAMS)
  if unset:
    raise ValueError(
      f"quantized model parameters {unset} are neither FP weights nor quantizer "
      "parameters: the FP run cannot initialise them"
    )
  params = {p: fp[p] if p in fp else jnp.full(s.shape, jnp.nan, s.dtype) for p, s in shapes.items()}
  return {
    "params": flax.traverse_util.unflatten_dict(params),
    "batch_stats": fp_vars["batch_stats"],
  }
