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

from resq_jax.nn.layers import QuantLayer
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
  """``{layer path: LayerCost}`` for one example of a frame batch ``[B, H, W, C]``.

  Plain Flax linear ops (``PLAIN_LINEAR_OPS``) are included as ``float_op`` entries and, with
  ``warn``, listed in a warning (they run in float: quantize them with ``QConv`` / ``QDense``).
  """
  found = {}

  def on_call(module, args, kwargs, out):
    path = "/".join(module.path)
    if isinstance(module, QuantLayer):
      found[path] = module.cost(tuple(args[0].shape))
    elif isinstance(module, PLAIN_LINEAR_OPS) and not isinstance(out, (tuple, list, dict)):
      x_shape = tuple(args[0].shape)
      macs = plain_op_macs(module, x_shape, tuple(out.shape))
      found[path] = LayerCost(
        macs=macs, n_locations=max(1, math.prod(x_shape[1:-1])), float_op=True
      )

  trace_calls(model, variables, frame, on_call)
  plain = {p: c.macs for p, c in found.items() if c.float_op}
  if plain and warn:
    listed = ", ".join(f"{p} ({m} MACs)" for p, m in plain.items())
    warnings.warn(
      f"{len(plain)} plain Flax linear op(s) are not quantized and are counted as "
      f"float (32x32 bits) every frame: {listed}. Use QConv / QDense to quantize "
      "them.",
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


def clip_bops(stats, costs: dict[str, LayerCost]) -> dict[str, np.ndarray]:
  """Exact BOPs per layer, ``{path: [T, B] float64}``, from :func:`run_clip` stats (``[T, B]``;
  see :func:`stack_stream_stats` for streaming). Plain float ops cost ``MACs * 32 * 32`` on
  every frame."""
  flat = flatten_stats(stats)
  missing = sorted(p for p, c in costs.items() if not c.float_op and p not in flat)
  if missing:
    raise ValueError(f"stats have no entry for layers {missing}: were they produced by this model?")
  shape = _time_batch_shape({p: flat[p] for p, c in costs.items() if not c.float_op})
  out = {}
  for path, c in costs.items():
    if c.float_op:
      out[path] = np.full(shape, step_bops(c.macs, FP32_BITS, FP32_BITS), np.float64)
    else:
      out[path] = dynamic_bops(
        c.macs, c.n_locations, np.asarray(flat[path]["w_bits"]), np.asarray(flat[path]["act_bits"])
      )
  return out


def network_macs(costs: dict[str, LayerCost]) -> int:
  return sum(c.macs for c in costs.values())


def bops_report(stats, costs: dict[str, LayerCost]) -> dict:
  """Network BOPs per frame (mean over the batch) ``[T]`` with clip average, peak and ratios.

  ``stats``: ``[T, B]`` per layer (``run_clip``'s layout; :func:`stack_stream_stats` for
  streaming). Also returns ``bops_per_layer`` (clip average per layer) and ``float_ops``
  (``{path: MACs}`` of the plain float ops included at 32x32 bits)."""
  per_layer = clip_bops(stats, costs)
  per_frame = functools.reduce(np.add, per_layer.values()).mean(axis=1)
  report = clip_summary(per_frame, network_macs(costs))
  report["bops_per_frame"] = per_frame
  report["macs_per_frame"] = network_macs(costs)
  report["state_elements"] = sum(c.state_elements for c in costs.values())
  report["bops_per_layer"] = {p: float(v.mean()) for p, v in per_layer.items()}
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
