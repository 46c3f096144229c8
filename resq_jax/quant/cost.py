"""Bit-operation (BOPs) accounting (docs/design.md section 4).

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
from collections.abc import Sequence

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


def _pair(v, n: int = 2) -> tuple[int, ...]:
  return (int(v),) * n if isinstance(v, numbers.Integral) else tuple(int(u) for u in v)


def dilate_size(size: int, dilation: int) -> int:
  """Length of ``size`` elements with ``dilation - 1`` zeros inserted between them."""
  return 0 if size == 0 else (size - 1) * dilation + 1


def conv_padding(
  in_hw: Sequence[int],
  kernel_hw: Sequence[int],
  strides: Sequence[int],
  padding,
  input_dilation=(1, 1),
  kernel_dilation=(1, 1),
) -> tuple:
  """Explicit ``((lo, hi), (lo, hi))`` padding of a conv (as ``lax.conv_general_dilated``).

  'SAME' / 'VALID' are resolved on the input after input dilation and with the dilated kernel
  (``(k - 1) * d + 1``), so that a conv's output size and its MACs follow from the same numbers.
  """
  if not isinstance(padding, str):
    return tuple((int(lo), int(hi)) for lo, hi in padding)
  if padding not in ("SAME", "VALID"):
    raise ValueError(f"padding must be 'SAME', 'VALID' or explicit pairs, got {padding!r}")
  pads = []
  for size, k, s, di, dk in zip(
    in_hw, kernel_hw, _pair(strides), _pair(input_dilation), _pair(kernel_dilation)
  ):
    if padding == "VALID":
      pads.append((0, 0))
      continue
    size, k_eff = dilate_size(size, di), dilate_size(k, dk)
    total = max((-(-size // s) - 1) * s + k_eff - size, 0)
    pads.append((total // 2, total - total // 2))
  return tuple(pads)


def conv_transpose_padding(
  kernel_hw: Sequence[int], strides: Sequence[int], padding, kernel_dilation=(1, 1)
) -> tuple:
  """Explicit padding of a transposed conv with ``lax.conv_transpose`` semantics: 'SAME' gives
  ``H_out = H_in * stride``, 'VALID' ``H_out = (H_in - 1) * stride + k`` (no cropping), explicit
  pairs pad the stride-dilated input directly."""
  if not isinstance(padding, str):
    return tuple((int(lo), int(hi)) for lo, hi in padding)
  if padding not in ("SAME", "VALID"):
    raise ValueError(f"padding must be 'SAME', 'VALID' or explicit pairs, got {padding!r}")
  pads = []
  for k, s, dk in zip(kernel_hw, _pair(strides), _pair(kernel_dilation)):
    k = dilate_size(k, dk)
    if padding == "SAME":
      total, lo = k + s - 2, (k - 1 if s > k - 1 else -(-(k + s - 2) // 2))
    else:
      total, lo = k + s - 2 + max(k - s, 0), k - 1
    pads.append((lo, total - lo))
  return tuple(pads)


def conv_taps(
  size: int,
  kernel: int,
  stride: int,
  pads: tuple[int, int],
  input_dilation: int = 1,
  kernel_dilation: int = 1,
  count_padding: bool | None = None,
) -> tuple[int, int]:
  """``(output size, taps)`` along one spatial axis: ``taps`` counts the (output position, kernel
  tap) pairs that multiply an input element. ``count_padding`` (default: ``input_dilation ==
  1``) counts the taps on padding too (the usual convention for convs, ``H_out * k``);
  otherwise (transposed convs) only the taps that meet a real input element are, so inserted
  and padding zeros cost nothing."""
  dilated, k_eff = dilate_size(size, input_dilation), dilate_size(kernel, kernel_dilation)
  out = max(0, (dilated + pads[0] + pads[1] - k_eff) // stride + 1)
  if count_padding is None:
    count_padding = input_dilation == 1
  if count_padding:
    return out, out * kernel
  pos = np.arange(out)[:, None] * stride + np.arange(kernel)[None, :] * kernel_dilation - pads[0]
  real = (pos >= 0) & (pos < dilated) & (pos % input_dilation == 0)
  return out, int(real.sum())


def conv_output_hw(
  in_hw: Sequence[int],
  kernel_hw: Sequence[int],
  strides: Sequence[int],
  padding,
  input_dilation=(1, 1),
  kernel_dilation=(1, 1),
) -> tuple[int, int]:
  """Output spatial size of a conv. ``padding``: 'SAME', 'VALID' or ((pt, pb), (pl, pr))."""
  if tuple(_pair(input_dilation)) == (1, 1) and tuple(_pair(kernel_dilation)) == (1, 1):
    pads = [padding, padding] if isinstance(padding, str) else list(padding)
    return tuple(
      _conv_out_size(s, k, st, p) for s, k, st, p in zip(in_hw, kernel_hw, strides, pads)
    )
  pads = conv_padding(in_hw, kernel_hw, strides, padding, input_dilation, kernel_dilation)
  return tuple(
    conv_taps(s, k, st, p, di, dk)[0]
    for s, k, st, p, di, dk in zip(
      in_hw, kernel_hw, _pair(strides), pads, _pair(input_dilation), _pair(kernel_dilation)
    )
  )


def _check_groups(c_in: int, c_out: int, groups) -> None:
  if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
    raise ValueError(f"groups must be a positive int, got groups={groups!r}")
  if c_in % groups or c_out % groups:
    raise ValueError(f"groups={groups} must divide c_in={c_in} and c_out={c_out}")


def conv_macs(
  in_hw: Sequence[int],
  kernel_hw: Sequence[int],
  c_in: int,
  c_out: int,
  strides: Sequence[int] = (1, 1),
  padding="SAME",
  groups: int = 1,
  input_dilation=(1, 1),
  kernel_dilation=(1, 1),
) -> int:
  """``H_out * W_out * k_h * k_w * C_in * C_out / groups`` for one example.

  Kernel dilation spreads the same ``k_h * k_w`` taps (same count at the same output size).
  Input dilation (a fractionally strided conv) counts only the taps that meet a real input
  element (:func:`conv_taps`)."""
  _check_groups(c_in, c_out, groups)
  if tuple(_pair(input_dilation)) == (1, 1):
    h, w = conv_output_hw(in_hw, kernel_hw, strides, padding, kernel_dilation=kernel_dilation)
    return h * w * kernel_hw[0] * kernel_hw[1] * c_in * c_out // groups
  pads = conv_padding(in_hw, kernel_hw, strides, padding, input_dilation, kernel_dilation)
  taps = [
    conv_taps(s, k, st, p, di, dk)[1]
    for s, k, st, p, di, dk in zip(
      in_hw, kernel_hw, _pair(strides), pads, _pair(input_dilation), _pair(kernel_dilation)
    )
  ]
  return taps[0] * taps[1] * c_in * c_out // groups


def conv_transpose_macs(
  in_hw: Sequence[int],
  kernel_hw: Sequence[int],
  c_in: int,
  c_out: int,
  strides: Sequence[int] = (1, 1),
  padding="SAME",
  groups: int = 1,
  kernel_dilation=(1, 1),
) -> int:
  """MACs of a transposed conv for one example: the multiply-adds that meet a real input
  element. Every input location multiplies its ``C_in`` values by a ``k_h x k_w x C_out``
  kernel, ``H_in * W_in * k_h * k_w * C_in * C_out / groups``, less the products whose output
  is cropped by the padding (none for 'VALID'; 'SAME' crops when ``k > stride``). Not the MACs
  of a conv over the zero-inserted input."""
  _check_groups(c_in, c_out, groups)
  pads = conv_transpose_padding(kernel_hw, strides, padding, kernel_dilation)
  taps = [
    conv_taps(s, k, 1, p, st, dk, count_padding=False)[1]
    for s, k, st, p, dk in zip(in_hw, kernel_hw, _pair(strides), pads, _pair(kernel_dilation))
  ]
  return taps[0] * taps[1] * c_in * c_out // groups


def conv_transpose_output_hw(
  in_hw: Sequence[int],
  kernel_hw: Sequence[int],
  strides: Sequence[int],
  padding,
  kernel_dilation=(1, 1),
) -> tuple[int, int]:
  pads = conv_transpose_padding(kernel_hw, strides, padding, kernel_dilation)
  return tuple(
    conv_taps(s, k, 1, p, st, dk)[0]
    for s, k, st, p, dk in zip(in_hw, kernel_hw, _pair(strides), pads, _pair(kernel_dilation))
  )


def dense_macs(c_in: int, c_out: int, n_locations: int = 1) -> int:
  """A dense layer applied at ``n_locations`` positions (tokens, pixels) of one example."""
  return n_locations * c_in * c_out


@dataclasses.dataclass(frozen=True)
class LayerCost:
  """Static cost facts of one layer for one example."""

  macs: int
  n_locations: int  # input locations N (spatial positions; channels excluded)
  state_elements: int = 0  # elements of the ResQ carry (ref + yref), 0 without state
  # A plain (not quantized) linear op such as flax's nn.Conv / nn.Dense: it records no stats and
  # costs MACs * 32 * 32 BOPs on every frame.
  float_op: bool = False
  # Dynamic ResQ: comparisons its policy spends per residual frame (policy_comparisons); not
  # bit operations, so reported beside BOPs (DESIGN section 4).
  policy_comparisons: int = 0


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
  w8a8 = w8a8_bops(macs_per_frame)
  return {
    "bops_avg": avg,
    "bops_peak": peak,
    "ratio_fp32_avg": avg / fp32,
    "ratio_w8a8_avg": avg / w8a8,
    "ratio_w8a8_peak": peak / w8a8,
  }


def state_memory_bytes(state) -> int:
  """Bytes held by a ResQ state pytree (all leaves)."""
  return int(
    sum(
      math.prod(np.shape(x)) * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(state)
    )
  )


def w8a8_bops(macs: int) -> int:
  """BOPs of W8A8 frame quantization for ``macs`` (the reference of every "% of W8A8")."""
  return step_bops(macs, 8, 8)


def pct_of_w8a8(bops: float, macs: int) -> float:
  """``bops`` in % of W8A8 frame quantization of a network of ``macs`` MACs per frame."""
  return 100.0 * float(bops) / w8a8_bops(macs)
