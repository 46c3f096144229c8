"""Bit-operation (BOPs) accounting (DESIGN.md section 4).

``BOPs = MACs * b_w * b_a`` per layer; FP32 counts 32 x 32. A dynamic residual frame costs
``b_w * (MACs / N) * sum_p b_p`` with N the number of input locations, so it is written here in
one form that covers every case: ``BOPs = b_w * MACs * act_bits / N`` where ``act_bits`` is the sum
over input locations of the activation bit-width used (``N * b_a`` for a static step). Counts are
per example; host-side functions use float64 NumPy (integers below 2^53 are exact).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Sequence

import jax
import numpy as np

FP32_BITS = 32


def _conv_out_size(size: int, kernel: int, stride: int, padding) -> int:
  if padding == "SAME":
    return -(-size // stride)
  if padding == "VALID":
    padded = size
  else:
    lo, hi = padding
    padded = size + lo + hi
  # A kernel larger than the (padded) input gives an empty output, as in lax.conv_general_dilated.
  return max(0, (padded - kernel) // stride + 1)


def conv_output_hw(in_hw: Sequence[int], kernel_hw: Sequence[int], strides: Sequence[int],
                   padding) -> tuple[int, int]:
  """Output spatial size of a conv. ``padding``: 'SAME', 'VALID' or ((pt, pb), (pl, pr))."""
  pads = [padding, padding] if isinstance(padding, str) else list(padding)
  return tuple(_conv_out_size(s, k, st, p) for s, k, st, p in zip(in_hw, kernel_hw, strides, pads))


def conv_macs(in_hw: Sequence[int], kernel_hw: Sequence[int], c_in: int, c_out: int,
              strides: Sequence[int] = (1, 1), padding="SAME", groups: int = 1) -> int:
  """``H_out * W_out * k_h * k_w * C_in * C_out / groups`` for one example."""
  if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
    raise ValueError(f"groups must be a positive int, got groups={groups!r}")
  if c_in % groups or c_out % groups:
    raise ValueError(f"groups={groups} must divide c_in={c_in} and c_out={c_out}")
  h, w = conv_output_hw(in_hw, kernel_hw, strides, padding)
  return h * w * kernel_hw[0] * kernel_hw[1] * c_in * c_out // groups


def dense_macs(c_in: int, c_out: int, n_locations: int = 1) -> int:
  """A dense layer applied at ``n_locations`` positions (tokens, pixels) of one example."""
  return n_locations * c_in * c_out


@dataclasses.dataclass(frozen=True)
class LayerCost:
  """Static cost facts of one layer for one example."""
  macs: int
  n_locations: int  # input locations N (spatial positions; channels excluded)
  state_elements: int = 0  # elements of the ResQ carry (ref + yref), 0 without state


def step_bops(macs: int, w_bits: int, a_bits: int) -> int:
  """A static step (FQ, keyframe, static residual): ``MACs * b_w * b_a``."""
  return macs * w_bits * a_bits


def dynamic_bops(macs: int, n_locations: int, w_bits, act_bits):
  """``b_w * MACs * act_bits / N``; ``act_bits`` = sum over locations of ``b_p`` (any array)."""
  return np.asarray(w_bits, np.float64) * macs * np.asarray(act_bits, np.float64) / n_locations


def policy_comparisons(n_locations: int, channels: int, n_candidates: int) -> int:
  """Comparisons a policy spends per example: the max over channels, then the ladder."""
  return n_locations * (channels - 1) + n_locations * max(0, n_candidates - 1)


def clip_summary(bops_per_frame, macs_per_frame: int) -> dict:
  """Clip average / peak of per-frame BOPs ``[T]`` (one example) and their ratios.

  ``macs_per_frame`` is the network's MACs for one frame; W8A8 FQ costs ``64 * MACs``, FP32
  ``1024 * MACs``.
  """
  bops = np.asarray(bops_per_frame, np.float64)
  avg, peak = float(bops.mean()), float(bops.max())
  fp32 = step_bops(macs_per_frame, FP32_BITS, FP32_BITS)
  w8a8 = step_bops(macs_per_frame, 8, 8)
  return {"bops_avg": avg, "bops_peak": peak, "ratio_fp32_avg": avg / fp32,
          "ratio_w8a8_avg": avg / w8a8, "ratio_w8a8_peak": peak / w8a8}


def state_memory_bytes(state) -> int:
  """Bytes held by a ResQ state pytree (all leaves)."""
  return int(sum(math.prod(np.shape(x)) * np.dtype(x.dtype).itemsize
                 for x in jax.tree_util.tree_leaves(state)))
