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
import functools
import warnings
from typing import Iterable, NamedTuple

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


@functools.partial(jax.jit, static_argnames="float_model")
def _observe_frames(float_model, variables, frames):
  _, observed = float_model.apply(variables, frames, phase="key", mutable=["calibration"])
  return observed["calibration"]


def _observe(float_model, variables, clip):
  """``{layer path: {'x': [B, T, ...], 'w': ...}}`` for one clip batch ``[B, T, H, W, C]``."""
  batch, length = clip.shape[:2]
  frames = clip.reshape(batch * length, *clip.shape[2:])
  flat = flatten_stats(_observe_frames(float_model, variables, frames))
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


MAX_ACT_SAMPLES = 1 << 18


def subsample(values: np.ndarray, max_elements: int = MAX_ACT_SAMPLES) -> np.ndarray:
  """A fixed random subset of the elements of ``values`` (flattened) when it is larger than
  ``max_elements``: per-tensor ranges from 2^18 samples are as good as from all of them, and the
  MSE search costs ``num_candidates`` passes over its input."""
  flat = values.reshape(-1)
  if flat.size <= max_elements:
    return flat
  return flat[np.random.default_rng(0).choice(flat.size, max_elements, replace=False)]


def _samples(values: np.ndarray, spec) -> np.ndarray:
  return subsample(values) if spec.channel_axis is None else values


def _warn_if_constant(path: str, what: str, values: np.ndarray) -> None:
  """A zero range gives a degenerate grid (the scale floor): say so instead of calibrating on."""
  if values.size and float(np.max(values)) == float(np.min(values)):
    warnings.warn(f"calibration of layer {path!r}: every {what} value equals "
                  f"{float(values.reshape(-1)[0]):g} (zero range); its quantizer range is "
                  "degenerate. Calibrate on representative, moving clips.", stacklevel=3)


def _qparams(path: str, recipe: LayerRecipe, entry, period: int,
             methods: CalibrationMethods) -> dict:
  x, w = entry["x"], entry["w"]
  _warn_if_constant(path, "input", x)
  out = {"key_w_scale": calibrate(w, recipe.key.weight, methods.weight)[0]}
  s, z = calibrate(_samples(x, recipe.key.act), recipe.key.act, methods.key_act)
  out["key_a_scale"] = s
  if not recipe.key.act.symmetric:
    out["key_a_zero_point"] = z
  if recipe.has_state:
    out["res_w_scale"] = calibrate(w, recipe.residual.weight, methods.residual_weight)[0]
    residuals = residual_samples(x, period, recipe.ref_mode)
    _warn_if_constant(path, "residual", residuals)
    r = _samples(residuals, recipe.residual.act)
    s, z = calibrate(r, recipe.residual.act, methods.residual_act)
    out["res_a_scale"] = s
    if not recipe.residual.act.symmetric:
      out["res_a_zero_point"] = z
  return out


class Observations(NamedTuple):
  """What the float model's layers saw: ``layers[path] = {'x': [N, T, ...], 'w': ...}`` and
  the shape of one input frame batch ``[B, H, W, C]``."""
  layers: dict
  frame_shape: tuple


def observe(float_model, variables, clips: Iterable[jax.Array]) -> Observations:
  """Inputs and effective weights of every layer of the float model over ``clips`` (clip
  batches ``[B, T, H, W, C]``, concatenated). Reusable across the calibration of many recipes of
  the same network."""
  clips = [jnp.asarray(c) for c in clips]
  if not clips:
    raise ValueError("clips must hold at least one clip batch")
  variables = model_variables(variables)
  parts = [_observe(float_model, variables, c) for c in clips]
  layers = {path: {"x": np.concatenate([p[path]["x"] for p in parts]),
                   "w": parts[0][path]["w"]} for path in parts[0]}
  return Observations(layers, (clips[0].shape[0], *clips[0].shape[2:]))


def calibrate_model(model, float_model, variables, clips: Iterable[jax.Array] = (), *,
                    period: int, methods: CalibrationMethods = CalibrationMethods(),
                    observations: Observations | None = None) -> dict:
  """Variables of ``model`` with every quantizer's scale / zero point set from ``clips``.

  Args:
    model: the quantized model (its layers' recipes decide which quantizers exist).
    float_model: the same architecture with float recipes (e.g. ``model.clone(recipe=...)``).
    variables: variables of ``model`` (``params`` must already hold its quantizer entries).
    clips: an iterable of clip batches ``[B, T, H, W, C]``; all are used together.
    period: keyframe period used to pick residual frames.
    observations: the result of :func:`observe` instead of ``clips``.
  """
  variables = model_variables(variables)
  if observations is None:
    observations = observe(float_model, variables, clips)
  frame = jax.ShapeDtypeStruct(observations.frame_shape, jnp.float32)
  recipes = visit_layers(model, variables, frame, lambda layer, _: layer.recipe)
  params = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]), sep="/")
  for path, recipe in recipes.items():
    if not recipe.is_quantized:
      continue
    entry = observations.layers[path]
    for name, value in _qparams(path, recipe, entry, period, methods).items():
      key = f"{path}/{name}"
      if key not in params:
        raise ValueError(f"variables have no parameter {key!r}: were they initialised with "
                         "this quantized model?")
      params[key] = jnp.asarray(value, params[key].dtype).reshape(params[key].shape)
  new_params = flax.traverse_util.unflatten_dict(params, sep="/")
  return dict(variables, params=new_params)
