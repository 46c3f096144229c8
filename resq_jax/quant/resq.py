"""ResQ step math for any layer linear in its input (docs/design.md section 3). Pure functions.

A layer is ``y = L(x; W) + b``. ``linear(x, w)`` is ``L`` without bias (a conv of any stride or
groups, a dense layer). Quantizers are passed in as bound callables (``x -> x_hat``), so this
module does not care whether their scales are calibrated or learned.

The per-layer carry is :class:`ResQState` ``(ref, yref)``:

=========  ==============================  =============
ref_mode   ref after frame t               yref after t
=========  ==============================  =============
closed     ref + r_hat (reconstruction)    y_t
key        xh_key (unchanged)              y_key
prev       x_t (float input)               y_t
=========  ==============================  =============
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
Linear = Callable[[Array, Array], Array]
Quantizer = Callable[[Array], Array]


REF_MODES = ("closed", "key", "prev")


def check_ref_mode(ref_mode: str) -> None:
  """The one check of a reference mode (recipes, configs and the step math all use it)."""
  if ref_mode not in REF_MODES:
    raise ValueError(f"ref_mode must be one of {REF_MODES}, got ref_mode={ref_mode!r}")


class ResQState(NamedTuple):
  """Per-layer temporal state: ``ref`` has the input's shape, ``yref`` the output's."""

  ref: Array
  yref: Array


def add_bias(y: Array, b: Array | None) -> Array:
  """``y [..., C] + b [C]`` (explicit broadcast: the project runs with rank promotion off)."""
  return y if b is None else y + jnp.reshape(b, (1,) * (y.ndim - jnp.ndim(b)) + jnp.shape(b))


def fq_forward(
  x: Array, w: Array, b: Array | None, *, linear: Linear, quant_x: Quantizer, quant_w: Quantizer
) -> Array:
  """Frame Quantization: ``y = L(Q_a(x); Q_w(W)) + b`` on every frame."""
  return add_bias(linear(quant_x(x), quant_w(w)), b)


def key_forward(
  x: Array,
  w: Array,
  b: Array | None,
  *,
  linear: Linear,
  quant_x: Quantizer,
  quant_w: Quantizer,
  ref_mode: str = "closed",
) -> tuple[Array, ResQState]:
  """Keyframe: ``y = L(Qk_a(x); Qk_w(W)) + b``; starts a new reference."""
  check_ref_mode(ref_mode)
  xh = quant_x(x)
  y = add_bias(linear(xh, quant_w(w)), b)
  ref = x if ref_mode == "prev" else xh
  return y, ResQState(ref=ref, yref=y)


def residual_forward(
  x: Array,
  w: Array,
  state: ResQState,
  *,
  linear: Linear,
  quant_r: Callable[[Array], tuple[Array, Array | None]],
  quant_w: Quantizer,
  ref_mode: str = "closed",
  stop_ref_gradient: bool = False,
) -> tuple[Array, ResQState, Array | None]:
  """Residual frame: ``r = x - ref``, ``y = yref + L(Qr_a(r); Qr_w(W))`` (no bias).

  Args:
    quant_r: ``r -> (r_hat, aux)``; ``aux`` is passed through (the bit map of dynamic ResQ, or
      None for static ResQ).
  Returns:
    ``(y, new_state, aux)``.
  """
  check_ref_mode(ref_mode)
  ref, yref = state
  if stop_ref_gradient:
    # Truncated BPTT: the input reference is a constant; gradients still reach earlier frames
    # through the output reference yref.
    ref = jax.lax.stop_gradient(ref)
  out = quant_r(x - ref)
  if not (isinstance(out, tuple) and len(out) == 2):
    # A plain quantizer returns an array, which would unpack along its first axis.
    raise TypeError(
      "quant_r must return (r_hat, aux); wrap a plain quantizer with "
      "static_residual_quantizer(quant)"
    )
  rh, aux = out
  y = yref + linear(rh, quant_w(w))
  if ref_mode == "closed":
    new_state = ResQState(ref=ref + rh, yref=y)
  elif ref_mode == "key":
    new_state = state
  else:
    new_state = ResQState(ref=x, yref=y)
  return y, new_state, aux


def static_residual_quantizer(quant: Quantizer) -> Callable[[Array], tuple[Array, None]]:
  """Adapt a plain quantizer to the ``r -> (r_hat, aux)`` form of :func:`residual_forward`."""
  return lambda r: (quant(r), None)
