"""Post-training calibration (PTQ) of every quantizer of a model from a few clips.

The float twin of the model (same modules, float recipes) runs over the clips while each
quantized layer records its input and effective (BatchNorm-folded) weights; ranges then follow
from :func:`resq_jax.quant.calibration.calibrate`:

* key activations: all frames; weights: the folded weights;
* residual activations: the residuals the layer would see in float execution, ``x_t - x_{t-1}``
  for 'closed' / 'prev' and ``x_t - x_key`` for 'key', at non-key frames (t % period != 0).
  Residuals are heavy-tailed (DESIGN.md section 3): prefer 'mse' or 'percentile' over 'minmax'.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

import flax
import jax
import jax.numpy as jnp
import numpy as np

from resq_jax.nn.clip import model_variables
from resq_jax.nn.costs import flatten_stats, visit_layers
from resq_jax.quant.calibration import calibrate
from resq_jax.quant.recipe import LayerRecipe


@dataclasses.dataclass(frozen=True)
class CalibrationMethods:
  """Range-setting method per quantizer kind ('minmax', 'percentile' or 'mse')."""
  weight: str = "minmax"
  key_act: str = "mse"
  residual_act: str = "mse"
  residual_weight: str = "mse"


def _observe(float_model, variables, clip):
  """``{layer path: {'x': [B, T, ...], 'w': ...}}`` for one clip batch ``[B, T, H, W, C]``."""
  batch, length = clip.shape[:2]
  frames = clip.reshape(batch * length, *clip.shape[2:])
  _, observed = jax.jit(lambda v, f: float_model.apply(
      v, f, phase="key", mutable=["calibration"]))(variables, frames)
  flat = flatten_stats(observed["calibration"])
  for entry in flat.values():
    entry["x"] = np.asarray(entry["x"]).reshape(batch, length, *entry["x"].shape[1:])
    entry["w"] = np.asarray(entry["w"])
  return flat


def residual_samples(x: np.ndarray, period: int, ref_mode: str) -> np.ndarray:
  """Float residuals ``[B, n, ...]`` of layer inputs ``x [B, T, ...]`` at non-key frames."""
  t = np.arange(x.shape[1])
  res_t = t[t % period != 0]
  if res_t.size == 0:
    raise ValueError(f"clips of {x.shape[1]} frames have no residual frame at period={period}")
  ref_t = res_t - res_t % period if ref_mode == "key" else res_t - 1
  return x[:, res_t] - x[:, ref_t]


def _qparams(recipe: LayerRecipe, entry, period: int, methods: CalibrationMethods) -> dict:
  x, w = entry["x"], entry["w"]
  out = {"key_w_scale": calibrate(w, recipe.key.weight, methods.weight)[0]}
  s, z = calibrate(x, recipe.key.act, methods.key_act)
  out["key_a_scale"] = s
  if not recipe.key.act.symmetric:
    out["key_a_zero_point"] = z
  if recipe.has_state:
    out["res_w_scale"] = calibrate(w, recipe.residual.weight, methods.residual_weight)[0]
    r = residual_samples(x, period, recipe.ref_mode)
    s, z = calibrate(r, recipe.residual.act, methods.residual_act)
    out["res_a_scale"] = s
    if not recipe.residual.act.symmetric:
      out["res_a_zero_point"] = z
  return out


def calibrate_model(model, float_model, variables, clips: Iterable[jax.Array], *, period: int,
                    methods: CalibrationMethods = CalibrationMethods()) -> dict:
  """Variables of ``model`` with every quantizer's scale / zero point set from ``clips``.

  Args:
    model: the quantized model (its layers' recipes decide which quantizers exist).
    float_model: the same architecture with float recipes (e.g. ``model.clone(recipe=...)``).
    variables: variables of ``model`` (``params`` must already hold its quantizer entries).
    clips: an iterable of clip batches ``[B, T, H, W, C]``; all are used together.
    period: keyframe period used to pick residual frames.
  """
  variables = model_variables(variables)
  clips = list(clips)
  if not clips:
    raise ValueError("clips must hold at least one clip batch")
  recipes = visit_layers(model, variables, clips[0][:, 0], lambda layer, _: layer.recipe)
  parts = [_observe(float_model, variables, jnp.asarray(c)) for c in clips]
  params = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]), sep="/")
  for path, recipe in recipes.items():
    if not recipe.is_quantized:
      continue
    entry = {"x": np.concatenate([p[path]["x"] for p in parts]), "w": parts[0][path]["w"]}
    for name, value in _qparams(recipe, entry, period, methods).items():
      key = f"{path}/{name}"
      if key not in params:
        raise ValueError(f"variables have no parameter {key!r}: were they initialised with "
                         "this quantized model?")
      params[key] = jnp.asarray(value, params[key].dtype).reshape(params[key].shape)
  new_params = flax.traverse_util.unflatten_dict(params, sep="/")
  return dict(variables, params=new_params)
