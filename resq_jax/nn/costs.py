"""Per-layer static costs of a model and exact BOPs of a clip run.

``layer_costs`` traces the model once (abstractly, nothing is computed) and asks every quantized
layer for its :class:`~resq_jax.quant.cost.LayerCost` from the shape of the input it receives.
Plain Flax linear ops it meets (``nn.Conv``, ``nn.ConvTranspose``, ``nn.Dense``,
``nn.DenseGeneral``, ``nn.Einsum``) are neither quantized nor recorded: they are counted as float
(``MACs * 32 * 32`` BOPs on every frame, ``LayerCost.float_op``) and listed in a warning, so that
BOPs savings are not overstated.

Stats layout: :func:`run_clip` returns ``stats[layer][name]`` as ``[T, B, ...]`` (time first);
one :func:`stream_step` returns ``[B, ...]``: :func:`stack_stream_stats` stacks a list of them
into the ``[T, B, ...]`` layout that ``clip_bops`` / ``bops_report`` take (they refuse anything
else).
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np

from resq_jax.nn.quantized import variable_path
from resq_jax.nn.tracing import trace_calls
from resq_jax.quant.cost import (
  FP32_BITS,
  LayerCost,
  clip_summary,
  conv_transpose_macs,
  dynamic_bops,
  step_bops,
)

PLAIN_LINEAR_OPS = (nn.Conv, nn.ConvTranspose, nn.Dense, nn.DenseGeneral, nn.Einsum)


def _tuple(v, n: int) -> tuple:
  return (v,) * n if isinstance(v, int) else tuple(v)


def plain_op_macs(module: nn.Module, x_shape: tuple, out_shape: tuple) -> int:
  """MACs per example of a plain Flax linear op (``PLAIN_LINEAR_OPS``) from its shapes."""
  if isinstance(module, nn.ConvTranspose):
    k = _tuple(module.kernel_size, len(x_shape) - 2)
    strides = _tuple(module.strides or 1, len(k))
    padding = module.padding
    if len(k) == 2 and module.kernel_dilation in (None, 1, (1, 1)) and padding in ("SAME", "VALID"):
      return conv_transpose_macs(x_shape[1:3], k, x_shape[-1], module.features, strides, padding)
    return math.prod(x_shape[1:-1]) * math.prod(k) * x_shape[-1] * module.features
  if isinstance(module, nn.Conv):
    k = _tuple(module.kernel_size, len(x_shape) - 2)
    return (
      math.prod(out_shape[1:-1])
      * math.prod(k)
      * x_shape[-1]
      * module.features
      // module.feature_group_count
    )
  if isinstance(module, nn.Dense):
    return math.prod(x_shape[1:-1]) * x_shape[-1] * module.features
  if isinstance(module, nn.DenseGeneral):
    return math.prod(x_shape[1:]) * math.prod(_tuple(module.features, 1))
  if isinstance(module, nn.Einsum):
    lhs = module.einsum_str.replace(" ", "").split("->")[0].split(",")
    sizes = {}
    for letters, shape in zip(lhs, (x_shape, tuple(module.shape))):
      sizes.update(zip(re.sub(r"[^a-zA-Z]", "", letters), shape))
    return math.prod(sizes.values()) // x_shape[0]
  raise TypeError(f"not a plain linear op: {type(module).__name__}")


def layer_costs(
  model: nn.Module, variables, frame: jax.Array, *, warn: bool = True
) -> dict[str, LayerCost]:
  """``{call path: LayerCost}`` for one example of a frame batch ``[B, H, W, C]``.

  One entry per call of a quantized layer, from the shapes of that call at trace time: a
  layer called twice per frame counts twice (``conv`` and ``conv/call1``, the paths of its
  stats). Plain Flax linear ops (``PLAIN_LINEAR_OPS``) that ``resq_jax.quantize`` does not
  intercept are included as ``float_op`` entries and, with ``warn``, listed in a warning (they
  run in float).
  """
  plain, calls = [], {}

  def on_call(module, args, kwargs, out):
    if isinstance(module, PLAIN_LINEAR_OPS) and not isinstance(out, (tuple, list, dict)):
      x_shape = tuple(args[0].shape)
      macs = plain_op_macs(module, x_shape, tuple(out.shape))
      n_loc = max(1, math.prod(x_shape[1:-1]))
      plain.append((variable_path(module), LayerCost(macs, n_loc, float_op=True)))

  quantized = trace_calls(model, variables, frame, on_call)
  found = {call.path: call.cost for call in quantized}
  intercepted = {call.layer_path for call in quantized}
  for module_path, cost in plain:
    path = "/".join(module_path)
    if path in intercepted:
      continue
    index = calls[path] = calls.get(path, -1) + 1
    found["/".join(module_path + ((f"call{index}",) if index else ()))] = cost
  plain = {p: c.macs for p, c in found.items() if c.float_op}
  if plain and warn:
    listed = ", ".join(f"{p} ({m} MACs)" for p, m in plain.items())
    warnings.warn(
      f"{len(plain)} plain Flax linear op(s) are not quantized and are counted as "
      f"float (32x32 bits) every frame: {listed}. Quantize them with "
      "resq_jax.quantize(model, rules) or QConv / QDense.",
      stacklevel=2,
    )
  return found


def flatten_stats(stats) -> dict[str, dict]:
  """Nested ``resq_stats`` -> ``{layer path: {name: array}}``."""
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(stats)[0]:
    keys = [p.key for p in path]
    flat.setdefault("/".join(keys[:-1]), {})[keys[-1]] = leaf
  return flat


def stack_stream_stats(stats_per_frame: Sequence) -> dict:
  """The stats of consecutive :func:`stream_step` calls (each ``[B, ...]``) stacked into the
  layout of :func:`run_clip` (``[T, B, ...]``), ready for :func:`bops_report`."""
  stats_per_frame = list(stats_per_frame)
  if not stats_per_frame:
    raise ValueError("stack_stream_stats needs the stats of at least one stream_step")
  return jax.tree.map(lambda *v: np.stack([np.asarray(x) for x in v]), *stats_per_frame)


def _time_batch_shape(flat: dict) -> tuple[int, int]:
  shapes = {path: np.shape(entry["act_bits"]) for path, entry in flat.items()}
  if not shapes:
    raise ValueError(
      "stats hold no quantized layer: nothing to count (run the model through "
      "run_clip with QConv / QDense layers)"
    )
  if any(len(s) != 2 for s in shapes.values()):
    raise ValueError(
      f"stats must be [T, B] per layer (as run_clip returns), got act_bits shapes "
      f"{sorted(set(shapes.values()))}: stack the stats of stream_step calls with "
      "stack_stream_stats(list_of_stats)"
    )
  if len(set(shapes.values())) != 1:
    raise ValueError(f"layers disagree on the [T, B] shape of their stats: {shapes}")
  return next(iter(shapes.values()))


def _check_mask(mask, shape: tuple[int, int]) -> np.ndarray | None:
  """``mask`` (bool ``[B]`` or ``[T, B]``) broadcast to the stats' ``[T, B]``; None stays None."""
  if mask is None:
    return None
  mask = np.asarray(mask)
  if mask.dtype != np.bool_:
    raise TypeError(
      f"mask must be a bool array [B] or [T, B] (True: a real example), got dtype {mask.dtype}"
    )
  if mask.shape not in (shape[1:], shape):
    raise ValueError(
      f"mask must be [B] = {shape[1:]} or [T, B] = {shape} like the stats, got shape {mask.shape}"
    )
  mask = np.broadcast_to(mask, shape)
  if not mask.any():
    raise ValueError("mask marks no real example: there is nothing to count")
  return mask


def clip_bops(stats, costs: dict[str, LayerCost], *, mask=None) -> dict[str, np.ndarray]:
  """Exact BOPs per layer, ``{path: [T, B] float64}``, from :func:`run_clip` stats (``[T, B]``;
  see :func:`stack_stream_stats` for streaming). Plain float ops cost ``MACs * 32 * 32`` on
  every frame.

  ``mask``: bool ``[B]`` (or ``[T, B]``) marking the real examples of a padded batch (True) or,
  per frame, the real frames of clips padded in time; padded entries are 0, so that sums over
  the batch count only real examples (:func:`bops_report` averages over them)."""
  flat = flatten_stats(stats)
  missing = sorted(p for p, c in costs.items() if not c.float_op and p not in flat)
  if missing:
    raise ValueError(f"stats have no entry for layers {missing}: were they produced by this model?")
  shape = _time_batch_shape({p: flat[p] for p, c in costs.items() if not c.float_op})
  mask = _check_mask(mask, shape)
  out = {}
  for path, c in costs.items():
    if c.float_op:
      out[path] = np.full(shape, step_bops(c.macs, FP32_BITS, FP32_BITS), np.float64)
    else:
      out[path] = dynamic_bops(
        c.macs, c.n_locations, np.asarray(flat[path]["w_bits"]), np.asarray(flat[path]["act_bits"])
      )
    if mask is not None:
      out[path] = np.where(mask, out[path], 0.0)
  return out


def network_macs(costs: dict[str, LayerCost]) -> int:
  return sum(c.macs for c in costs.values())


def bops_report(stats, costs: dict[str, LayerCost], *, mask=None) -> dict:
  """Network BOPs per frame (mean over the batch) ``[T]`` with clip average, peak and ratios.

  ``stats``: ``[T, B]`` per layer (``run_clip``'s layout; :func:`stack_stream_stats` for
  streaming). Also returns ``bops_per_layer`` (clip average per layer) and ``float_ops``
  (``{path: MACs}`` of the plain float ops included at 32x32 bits).

  ``mask``: bool ``[B]`` marking the real examples of a padded batch, or ``[T, B]`` the real
  frames of clips padded in time (None: every entry is real). Padded entries do not count: each
  frame's BOPs are the mean over its real examples, and frames without any real example are
  left out of ``bops_per_frame`` and of the clip averages, so the report of a padded batch with
  its mask equals the report of the batch without the padding."""
  per_layer = clip_bops(stats, costs, mask=mask)
  if mask is None:
    frame_mean = lambda v: v.mean(axis=1)  # [T, B] -> [T]
  else:
    real = np.broadcast_to(np.asarray(mask), next(iter(per_layer.values())).shape)
    count = real.sum(axis=1)  # real examples per frame [T]
    kept = count > 0
    frame_mean = lambda v: v.sum(axis=1)[kept] / count[kept]  # [T, B] -> [T'], real only
  per_frame = frame_mean(functools.reduce(np.add, per_layer.values()))
  report = clip_summary(per_frame, network_macs(costs))
  report["bops_per_frame"] = per_frame
  report["macs_per_frame"] = network_macs(costs)
  report["state_elements"] = sum(c.state_elements for c in costs.values())
  report["bops_per_layer"] = {p: float(frame_mean(v).mean()) for p, v in per_layer.items()}
  report["float_ops"] = {p: c.macs for p, c in costs.items() if c.float_op}
  # Not bit operations: dynamic ResQ's policy cost on each residual frame, reported beside BOPs.
  report["policy_comparisons_per_residual_frame"] = sum(
    c.policy_comparisons for c in costs.values()
  )
  return report


def format_bops_report(report: dict, costs: dict[str, LayerCost]) -> str:
  """A text table of :func:`bops_report`: per layer MACs, clip-average BOPs and bits per MAC,
  then the network totals."""
  lines = [f"{'layer':<32} {'MACs':>12} {'BOPs/frame':>14} {'bits/MAC':>9}"]
  for path, c in costs.items():
    bops = report["bops_per_layer"][path]
    tag = "  (float op)" if c.float_op else ""
    lines.append(f"{path:<32} {c.macs:>12,d} {bops:>14,.0f} {bops / max(c.macs, 1):>9.2f}{tag}")
  lines.append(
    f"{'total':<32} {report['macs_per_frame']:>12,d} {report['bops_avg']:>14,.0f} "
    f"{report['bops_avg'] / max(report['macs_per_frame'], 1):>9.2f}"
  )
  lines.append(
    f"peak {report['bops_peak']:,.0f} BOPs/frame; {100 * report['ratio_w8a8_avg']:.1f}%"
    f" of W8A8 FQ, {100 * report['ratio_fp32_avg']:.2f}% of FP32 on average"
  )
  comparisons = report.get("policy_comparisons_per_residual_frame", 0)
  if comparisons:
    lines.append(f"dynamic policy: {comparisons:,d} comparisons per residual frame (not in BOPs)")
  return "\n".join(lines)
