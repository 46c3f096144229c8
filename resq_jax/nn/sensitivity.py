"""Which layers decide the error: a per-layer sensitivity analysis in one pass.

For every quantized layer call ``l`` of a calibrated model, :func:`layer_sensitivity` estimates
how much its keyframe and its residual quantization move the network's output, from a few
clips and without one probe run per layer:

- ``jacobian_sq``: ``||J_l||_F^2`` per frame, ``J_l`` the Jacobian of the float network's
  output with respect to the layer's input. Hutchinson's estimator: for ``v ~ N(0, I)``,
  ``E ||J_l^T v||^2 = ||J_l||_F^2``, and one backward pass of ``<v, y>`` gives ``J_l^T v`` at
  every layer at once (a zero perturbation added to each layer's input,
  ``resq_jax.nn.quantized``; ``probes`` passes in all).
- ``key_noise``: the mean squared error of the layer's keyframe activation quantizer on its
  float inputs (the calibrated grid); ``residual_noise``: the same for the residual quantizer
  on the float residuals ``x_t - x_{t-1}`` of the residual frames (``period``), and
  ``residual_zero_fraction``, the share of residual values the grid rounds to 0.
- ``key_effect`` / ``residual_effect``: ``noise * jacobian_sq / ||y||^2`` per frame, the
  predicted squared relative L2 error of the output that this layer's quantization alone adds
  (first order, the noise taken as white: ``E ||J n||^2 = sigma^2 ||J||_F^2``).

Layers whose residual effect dominates want more residual bits (or per-channel residual scales);
layers whose effect is negligible can take fewer bits or be skipped.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from resq_jax.nn.costs import flatten_stats
from resq_jax.nn.layers import float_twin
from resq_jax.nn.quantized import KEY_A, PROBES, RES_A, probe_scope, scale_name, zero_point_name
from resq_jax.nn.tracing import layer_calls, model_variables
from resq_jax.quant.uniform import fake_quant

_CALL = re.compile(r"/call\d+$")


def _param(params: dict, path: str, name: str):
  node = params
  for part in _CALL.sub("", path).split("/"):
    node = node[part]
  return node.get(name)


def _quant_mse(x: np.ndarray, spec, scale, zero_point) -> tuple[float, float]:
  """(mean squared error, share of exact zeros) of ``x`` fake-quantized on the grid."""
  if scale is None or not np.all(np.isfinite(np.asarray(scale))):
    raise ValueError("layer_sensitivity: the model is not calibrated (calibrate_model first)")
  q = np.asarray(fake_quant(jnp.asarray(x), jnp.asarray(scale), zero_point, spec=spec))
  return float(np.mean((q - x) ** 2)), float(np.mean(q == 0))


def _jacobian_sq(run, zeros, frames, y, probes: int, seed: int) -> dict[str, float]:
  """``||J_l||_F^2`` per frame for every probed layer: Hutchinson over ``probes`` vectors."""
  leaves = jax.tree_util.tree_leaves(y)

  def project(probe, v):
    out = jax.tree_util.tree_leaves(run(probe, frames)[0])
    return sum(jnp.vdot(a, b) for a, b in zip(v, out))

  grad = jax.jit(jax.grad(project))
  total = None
  for k in jax.random.split(jax.random.key(seed), probes):
    parts = jax.random.split(k, len(leaves))
    v = [jax.random.normal(kk, a.shape, a.dtype) for kk, a in zip(parts, leaves)]
    sq = jax.tree.map(lambda a: jnp.sum(a.astype(jnp.float32) ** 2), grad(zeros, v))
    total = sq if total is None else jax.tree.map(jnp.add, total, sq)
  n = probes * frames.shape[0]
  return {p: float(v["input"]) / n for p, v in flatten_stats(total).items()}


def layer_sensitivity(
  model, variables, clips: jax.Array, *, period: int, probes: int = 8, seed: int = 0
) -> dict[str, dict[str, float]]:
  """``{layer call path: {jacobian_sq, key_noise, residual_noise, residual_zero_fraction,
  key_effect, residual_effect}}`` (module docstring) for ``model`` (calibrated ``variables``)
  on ``clips [B, T, H, W, C]``, residual frames at ``t % period != 0``. Layers without ResQ
  state (float, FQ) have no residual entries."""
  clips = jnp.asarray(clips)
  if clips.ndim < 3 or clips.shape[1] < 2:
    raise ValueError(f"clips must be [B, T >= 2, ...], got shape {clips.shape}")
  if isinstance(period, bool) or not isinstance(period, int) or period < 2:
    raise ValueError(f"period must be an int >= 2 (residual frames needed), got {period!r}")
  batch, length = clips.shape[:2]
  frames = clips.reshape(batch * length, *clips.shape[2:])
  float_model = float_twin(model)
  base = model_variables(variables)

  def run(probe, x):
    out, seen = float_model.apply({**base, PROBES: probe}, x, phase="key", mutable=["calibration"])
    return out, seen["calibration"]

  with probe_scope():
    # One forward creates the zero probes and records every layer's input (the output of a
    # zero probe is the float output: no second pass).
    y, created = float_model.apply(base, frames, phase="key", mutable=[PROBES, "calibration"])
    zeros, observed = created[PROBES], created["calibration"]
    jac = _jacobian_sq(run, zeros, frames, y, probes, seed)
  leaves = jax.tree_util.tree_leaves(y)
  y_norm_sq = sum(float(jnp.sum(a.astype(jnp.float32) ** 2)) for a in leaves) / frames.shape[0]

  recipes = {c.path: c.recipe for c in layer_calls(model, base, frames[:1])}
  params = base["params"]
  out = {}
  for path, seen in flatten_stats(observed).items():
    recipe = recipes.get(path)
    if recipe is None or not recipe.is_quantized:
      continue
    x = np.asarray(seen["x"], np.float32)
    spec = recipe.key.act
    key_mse, _ = _quant_mse(
      x, spec, _param(params, path, scale_name(KEY_A)), _param(params, path, zero_point_name(KEY_A))
    )
    entry = {"jacobian_sq": jac[path], "key_noise": key_mse}
    entry["key_effect"] = key_mse * jac[path] / y_norm_sq
    if recipe.has_state:
      xs = x.reshape(batch, length, *x.shape[1:])
      residual_t = [t for t in range(length) if t % period]
      r = xs[:, residual_t] - xs[:, [t - 1 for t in residual_t]]
      res_mse, zero = _quant_mse(
        r, recipe.residual.act, _param(params, path, scale_name(RES_A)), None
      )
      entry.update(
        residual_noise=res_mse,
        residual_zero_fraction=zero,
        residual_effect=res_mse * jac[path] / y_norm_sq,
      )
    out[path] = entry
  return out


def dominant_layers(
  sensitivity: dict[str, dict[str, float]], effect: str = "residual_effect", share: float = 0.8
) -> list[str]:
  """The fewest layers (parameter paths, most sensitive first) whose ``effect`` adds up to at
  least ``share`` of the total: the layers to give more bits, e.g. with
  ``RecipeRules(tuple((re.escape(p), wide) for p in layers) + ((".*", narrow),))``."""
  if not 0.0 < share <= 1.0:
    raise ValueError(f"share must be in (0, 1], got {share}")
  ranked = sorted(
    ((e.get(effect, 0.0), _CALL.sub("", path)) for path, e in sensitivity.items()), reverse=True
  )
  total = sum(v for v, _ in ranked)
  out, acc = [], 0.0
  for value, path in ranked:
    if acc >= share * total or value <= 0:
      break
    if path not in out:
      out.append(path)
    acc += value
  return out
