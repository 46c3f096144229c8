"""Quantizer specifications: frozen, validated descriptions of an integer grid.

Convention (PyTorch/ONNX, docs/design.md section 2): ``q = clamp(round(x / s) + z, qmin, qmax)`` and
``x_hat = (q - z) * s`` with round half to even.
"""

from __future__ import annotations

import dataclasses

MIN_BITS = 1
MAX_BITS = 16


@dataclasses.dataclass(frozen=True)
class QuantSpec:
  """An integer grid and how its parameters are shared.

  Attributes:
    bits: bit-width, 1..16.
    signed: signed grid ``[-2^(b-1), 2^(b-1)-1]`` if True, else ``[0, 2^b - 1]``.
    symmetric: the zero point is fixed at 0 (only the scale is used/learned). If False the
      zero point is a (learnable, LSQ+) offset in integer units.
    narrow_range: signed grids drop their most negative level so that the grid is symmetric
      around 0: ``[-(2^(b-1)-1), 2^(b-1)-1]``. Needs ``signed`` and ``bits >= 2``. ``None``
      (the default) means the project's single convention: narrow for signed symmetric grids
      of 2 or more bits (as :func:`weight_spec` and :func:`residual_spec`), wide otherwise.
      Pass ``False`` explicitly for PyTorch's default ``qint8`` grid ``[-128, 127]``.
    channel_axis: ``None`` for one scale per tensor, else the axis that carries one scale (and
      zero point) per channel. Negative values count from the end.
  """

  bits: int = 8
  signed: bool = True
  symmetric: bool = True
  narrow_range: bool | None = None
  channel_axis: int | None = None

  def __post_init__(self):
    if self.narrow_range is None:
      auto = self.signed and self.symmetric and isinstance(self.bits, int) and self.bits >= 2
      object.__setattr__(self, "narrow_range", bool(auto))
    if isinstance(self.bits, bool) or not isinstance(self.bits, int):
      raise ValueError(f"bits must be an int in [{MIN_BITS}, {MAX_BITS}], got bits={self.bits!r}")
    if not MIN_BITS <= self.bits <= MAX_BITS:
      raise ValueError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got bits={self.bits}")
    if self.narrow_range and not self.signed:
      raise ValueError(
        "narrow_range=True needs signed=True (an unsigned grid has no negative level to drop)"
      )
    if self.narrow_range and self.bits < 2:
      raise ValueError(f"narrow_range=True needs bits >= 2, got bits={self.bits}")
    if self.channel_axis is not None and (
      isinstance(self.channel_axis, bool) or not isinstance(self.channel_axis, int)
    ):
      raise ValueError(
        f"channel_axis must be None or an int, got channel_axis={self.channel_axis!r}"
      )

  @property
  def qmin(self) -> int:
    if not self.signed:
      return 0
    return -(2 ** (self.bits - 1)) + (1 if self.narrow_range else 0)

  @property
  def qmax(self) -> int:
    return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

  @property
  def per_channel(self) -> bool:
    return self.channel_axis is not None

  def replace(self, **changes) -> QuantSpec:
    return dataclasses.replace(self, **changes)


def weight_spec(bits: int, channel_axis: int | None = -1) -> QuantSpec:
  """Signed, symmetric, narrow-range grid: the usual choice for weights (per output channel)."""
  return QuantSpec(bits=bits, signed=True, symmetric=True, channel_axis=channel_axis)


def activation_spec(bits: int) -> QuantSpec:
  """Unsigned asymmetric per-tensor grid with a learnable offset: covers any input range."""
  return QuantSpec(bits=bits, signed=False, symmetric=False)


def residual_spec(bits: int) -> QuantSpec:
  """Signed symmetric per-tensor grid: residuals are centred on zero."""
  return QuantSpec(bits=bits, signed=True, symmetric=True)
