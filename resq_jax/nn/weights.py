"""Pretrained float weights in a quantized model, and a check that its quantizers fit them.

``model.init`` fits every weight quantizer's scale to the random kernels it draws. Copying real
kernels into ``params`` afterwards leaves those scales stale (and the activation ranges are
only generic guesses). :func:`load_float_weights` is the one way to load float weights: it copies
them (same paths, or through a name mapping), re-fits every weight scale to the weights that run
(BatchNorm folded, min-max, as ``init``) and invalidates every activation quantizer parameter
(NaN) until :func:`~resq_jax.nn.calibrate.calibrate_model` sets it. :func:`check_quantizers`
refuses variables whose quantizer parameters are invalidated or whose weight scales cannot
belong to their weights; ``run_clip`` and ``stream_step`` call it on concrete variables.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

from resq_jax.nn.layers import QConv, fold_bn, unflipped_kernel
from resq_jax.nn.quantized import (
  ACT_QUANTIZERS,
  KEY_W,
  QUANT_PARAMS,
  RES_W,
  scale_name,
  zero_point_name,
)
from resq_jax.nn.tracing import check_hashable, visit_layers
from resq_jax.quant.recipe import LayerRecipe
from resq_jax.quant.uniform import scale_floor

ACT_PARAMS = tuple(f(q) for q in ACT_QUANTIZERS for f in (scale_name, zero_point_name))


class StaleQuantizerError(ValueError):
  """Quantizer parameters that do not belong to the weights (or were never calibrated)."""


def _flat(tree) -> dict:
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")


def _unflat(flat: dict) -> dict:
  return flax.traverse_util.unflatten_dict(flat, sep="/")


_FACTS: dict = {}


def layer_facts(model, variables, frame, where: str = "layer_facts") -> dict:
  """``{path: (recipe, bn_epsilon or None, transposed)}`` of the quantized layers (abstract
  trace, cached per model and frame shape); ``transposed``: the kernel is stored with
  ``transpose_kernel=True`` (``QConvTranspose`` or an intercepted ``nn.ConvTranspose``).
  ``where`` names the caller in the TypeError of an unhashable
  ``model``."""
  check_hashable(model, where)
  key = (model, tuple(frame.shape), jnp.dtype(frame.dtype))
  if key not in _FACTS:
    eps = lambda layer: layer.bn_epsilon if isinstance(layer, QConv) and layer.use_bn else None
    frame = jax.ShapeDtypeStruct(tuple(frame.shape), frame.dtype)
    if len(_FACTS) > 64:
      _FACTS.clear()
    _FACTS[key] = visit_layers(
      model,
      variables,
      frame,
      lambda layer, _: (layer.active_recipe, eps(layer), _transposed(layer)),
    )
  return _FACTS[key]


def _transposed(layer) -> bool:
  return bool(getattr(getattr(layer, "module", layer), "transpose_kernel", False))


def _key(path: str, name: str) -> str:
  return f"{path}/{name}" if path else name


def effective_weights(
  params: dict, batch_stats: dict, path: str, bn_epsilon, transposed: bool = False
) -> jax.Array:
  """The weights layer ``path`` runs (BatchNorm folded; a ``transpose_kernel=True`` kernel
  unflipped), from flat '/'-keyed trees."""
  kernel = params[_key(path, "kernel")]
  if transposed:
    kernel = unflipped_kernel(kernel)
  if bn_epsilon is None:
    return kernel
  return fold_bn(
    kernel,
    params[_key(path, "bn_scale")],
    params[_key(path, "bn_bias")],
    batch_stats[_key(path, "mean")],
    batch_stats[_key(path, "var")],
    bn_epsilon,
  )[0]


def _channel_max(w, spec) -> np.ndarray:
  w = np.abs(np.asarray(w, np.float64))
  if spec.channel_axis is None:
    return np.asarray(w.max())
  return (
    np.moveaxis(w, spec.channel_axis % w.ndim, -1)
    .reshape(-1, w.shape[spec.channel_axis])
    .max(axis=0)
  )


def _weight_specs(recipe: LayerRecipe) -> dict:
  if not recipe.is_quantized:
    return {}
  specs = {KEY_W: recipe.key.weight}
  if recipe.has_state:
    specs[RES_W] = recipe.residual.weight
  return specs


def refresh_weight_scales(model, variables, frame, *, where: str = "refresh_weight_scales") -> dict:
  """``variables`` with every weight quantizer's scale re-fitted (min-max per channel, as
  ``init``) to the weights each layer runs now (BatchNorm folded). ``where``: the caller that
  the TypeError of an unhashable ``model`` names."""
  from resq_jax.nn.quantized import weight_scale_init

  params, stats = _flat(variables["params"]), _flat(variables.get("batch_stats", {}))
  for path, (recipe, eps, transposed) in layer_facts(model, variables, frame, where).items():
    w = effective_weights(params, stats, path, eps, transposed)
    for name, spec in _weight_specs(recipe).items():
      key = _key(path, f"{name}_scale")
      params[key] = weight_scale_init(w, spec).astype(params[key].dtype).reshape(params[key].shape)
  return dict(variables, params=_unflat(params))


def invalidate_act_quantizers(variables) -> dict:
  """``variables`` with every activation quantizer parameter set to NaN: running them is refused
  (:func:`check_quantizers`) until ``calibrate_model`` (or training) sets them."""
  params = _flat(variables["params"])
  for key in params:
    if key.rsplit("/", 1)[-1] in ACT_PARAMS:
      params[key] = jnp.full_like(params[key], jnp.nan)
  return dict(variables, params=_unflat(params))


def _mapper(mapping) -> Callable[[str], str | None]:
  if mapping is None:
    return lambda path: path
  if callable(mapping):
    return mapping
  rules = [(re.compile(p), r) for p, r in mapping]

  def apply(path):
    for pattern, replacement in rules:
      m = pattern.fullmatch(path)
      if m:
        return m.expand(replacement) if replacement is not None else None
    return path

  return apply


def load_float_weights(
  model, variables, source, *, frame, mapping=None, strict: bool = True
) -> dict:
  """Float weights into the variables of quantized ``model``; every derived quantizer
  parameter refreshed (weight scales) or invalidated (activation ranges: run
  ``calibrate_model`` next).

  Args:
    model: the quantized model ``variables`` belong to.
    variables: from ``model.init`` (their quantizer entries are kept or refreshed).
    source: float variables ``{'params': ..., 'batch_stats': ...}`` (e.g. a float Flax
      checkpoint), or a bare params tree.
    frame: a frame batch ``[B, H, W, C]`` (or its ``ShapeDtypeStruct``) to trace the model.
    mapping: from source to destination paths, both '/'-joined with the collection first
      (``'params/stem/conv/kernel'``, ``'batch_stats/stem/bn/mean'``): None (same paths), a
      callable (return None to skip a source leaf) or ``((regex, replacement), ...)`` applied
      with ``re.fullmatch`` / ``match.expand``, first match wins (None skips), unmatched paths
      unchanged.
    strict: every source leaf must land on a destination of the same shape, and every
      destination weight (kernels, biases, BatchNorm) must be loaded.
  """
  check_hashable(model, "load_float_weights")
  if "params" not in source:
    source = {"params": source}
  # Only weights: init's other collections (calibration records, stats) are not checkpoints.
  source = {c: source[c] for c in ("params", "batch_stats") if c in source}
  dest = {
    f"{c}/{k}": v for c in ("params", "batch_stats") for k, v in _flat(variables.get(c, {})).items()
  }
  to_path = _mapper(mapping)
  loaded, problems = set(), []
  for src, value in _flat(source).items():
    dst = to_path(src)
    if dst is None:
      continue
    if dst not in dest:
      if strict:
        problems.append(f"{src} -> {dst}: no such variable in the quantized model")
      continue
    if tuple(np.shape(value)) != tuple(dest[dst].shape):
      problems.append(f"{src} -> {dst}: shape {np.shape(value)} != {dest[dst].shape}")
      continue
    dest[dst] = jnp.asarray(value, dest[dst].dtype)
    loaded.add(dst)
  if strict:
    unset = sorted(k for k in dest if k not in loaded and k.rsplit("/", 1)[-1] not in QUANT_PARAMS)
    problems += [f"{k}: not loaded" for k in unset]
  if problems:
    raise ValueError("load_float_weights:\n  " + "\n  ".join(problems))
  out = dict(variables)
  for c in ("params", "batch_stats"):
    if c in variables:
      out[c] = _unflat({k[len(c) + 1 :]: v for k, v in dest.items() if k.startswith(c + "/")})
  out = refresh_weight_scales(model, out, frame, where="load_float_weights")
  return invalidate_act_quantizers(out)


# Concrete variables already checked: id()s of their leaves -> the leaves (kept alive so that
# ids are not reused while cached).
_CHECKED = collections.OrderedDict()


def check_quantizers(
  model, variables, frame, *, max_clip: float = 16.0, max_slack: float = 2.0
) -> None:
  """Refuse (:class:`StaleQuantizerError`) quantizer parameters that cannot belong to the
  weights: NaN (invalidated by :func:`load_float_weights`, not calibrated yet), or a weight
  scale ``s`` whose grid ``[-s * qmax, s * qmax]`` clips a channel's largest weight ``m`` by more
  than ``max_clip`` times (``m > max_clip * s * qmax``) or overshoots it more than
  ``max_slack`` times (``s * qmax > max_slack * m``): the marks of scales fitted to other
  (e.g. random ``init``) weights. Calibration (min-max, MSE, percentile) and LSQ training stay
  well inside these bounds. A no-op on traced values (inside jit / grad)."""
  check_hashable(model, "check_quantizers")
  leaves = jax.tree_util.tree_leaves(variables)
  if any(isinstance(v, jax.core.Tracer) for v in leaves):
    return
  key = (hash(model), tuple(frame.shape), tuple(id(v) for v in leaves))
  if key in _CHECKED:
    return
  params, stats = _flat(variables["params"]), _flat(variables.get("batch_stats", {}))
  problems = []
  nan = sorted(
    k
    for k, v in params.items()
    if k.rsplit("/", 1)[-1] in QUANT_PARAMS and not np.all(np.isfinite(np.asarray(v)))
  )
  if nan:
    problems.append(
      f"{len(nan)} quantizer parameter(s) are not finite (invalidated by "
      f"load_float_weights?): {', '.join(nan[:6])}{' ...' if len(nan) > 6 else ''}"
      "; run calibrate_model first"
    )
  facts = layer_facts(model, variables, frame, "check_quantizers")
  for path, (recipe, eps, transposed) in facts.items():
    specs = _weight_specs(recipe)
    if not specs:
      continue
    w = effective_weights(params, stats, path, eps, transposed)
    for name, spec in specs.items():
      key_s = _key(path, f"{name}_scale")
      if key_s not in params:
        problems.append(f"{key_s}: missing (variables of another recipe?)")
        continue
      m = _channel_max(w, spec)
      grid = np.asarray(params[key_s], np.float64).reshape(m.shape) * max(1, spec.qmax)
      alive = m > 2 * float(scale_floor(jnp.float32)) * max(1, spec.qmax)
      bad = alive & np.isfinite(grid) & ((m > max_clip * grid) | (grid > max_slack * m))
      if np.any(bad):
        ratio = np.max(np.where(alive, m / np.maximum(grid, 1e-30), 1.0))
        problems.append(
          f"{key_s}: does not fit the weights of {path!r} ({int(bad.sum())} of "
          f"{bad.size} channels; largest |w| / grid max = {ratio:.3g}): load "
          "float weights with load_float_weights, or refresh_weight_scales / "
          "calibrate_model after changing weights"
        )
  if problems:
    raise StaleQuantizerError("quantizers do not match the weights:\n  " + "\n  ".join(problems))
  _CHECKED[key] = leaves
  while len(_CHECKED) > 8:
    _CHECKED.popitem(last=False)
