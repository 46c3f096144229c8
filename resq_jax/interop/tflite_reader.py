"""Reading a ``.tflite`` file into a hashable graph description and its constant tensors.

The flatbuffer is parsed with the ``tflite`` package (the Python code generated from TFLite's
published schema); no TensorFlow and no TFLite runtime is needed. :func:`read_tflite` returns a
:class:`Graph` (ops in execution order, tensor shapes and names, small integer constants such as
shapes, axes and paddings as static tuples) and a dict of the float constant tensors (weights,
biases, constant operands), which :mod:`resq_jax.interop.tflite_model` turns into a linen
module and its params.

Folded at read time: ``DEQUANTIZE`` of a constant float16 tensor (how MediaPipe ships half-size
float models) becomes a float32 constant. Not supported, named with the op's index: quantized
(int8/uint8) tensors, sparse (``DENSIFY``) weights, and models with more than one subgraph.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from typing import Any

import numpy as np
import tflite

_OPCODE_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_OPTIONS_NAMES = {v: k for k, v in vars(tflite.BuiltinOptions).items() if not k.startswith("_")}
_TENSOR_TYPES = {v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
_ACTIVATIONS = {
  v: k for k, v in vars(tflite.ActivationFunctionType).items() if not k.startswith("_")
}
_PADDINGS = {tflite.Padding.SAME: "SAME", tflite.Padding.VALID: "VALID"}
# MediaPipe's custom transposed convolution keeps TfLitePadding's C enum in its options.
_C_PADDINGS = {1: "SAME", 2: "VALID"}
_NUMPY_TYPES = {
  "FLOAT32": np.float32,
  "FLOAT16": np.float16,
  "INT32": np.int32,
  "INT64": np.int64,
  "INT8": np.int8,
  "UINT8": np.uint8,
}
# Integer constants up to this many elements (shapes, axes, paddings, sizes) are static.
_MAX_STATIC_SIZE = 64


class TFLiteImportError(ValueError):
  """The file is not a TFLite model this importer supports (the message names the op)."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  """A tensor of the graph: its name, shape (batch first, as stored) and dtype name."""

  name: str
  shape: tuple[int, ...]
  dtype: str


@dataclasses.dataclass(frozen=True)
class Op:
  """One operator: ``kind`` ('CONV_2D', ..., or 'CUSTOM:<code>'), its input and output tensor
  indices (-1: an omitted optional input) and its options as sorted ``(name, value)`` pairs
  (padding as 'SAME' / 'VALID', the fused activation by name)."""

  index: int
  kind: str
  inputs: tuple[int, ...]
  outputs: tuple[int, ...]
  options: tuple[tuple[str, Any], ...] = ()

  def option(self, name: str, default: Any = None) -> Any:
    return dict(self.options).get(name, default)


@dataclasses.dataclass(frozen=True)
class Graph:
  """A TFLite subgraph without its float constants: hashable (a static argument of jit).

  ``static``: ``(tensor index, values)`` of small integer constants, nested tuples."""

  tensors: tuple[TensorInfo, ...]
  ops: tuple[Op, ...]
  inputs: tuple[int, ...]
  outputs: tuple[int, ...]
  static: tuple[tuple[int, Any], ...] = ()

  def static_value(self, tensor: int) -> Any:
    found = dict(self.static)
    if tensor not in found:
      raise TFLiteImportError(
        f"tensor {tensor} ({self.tensors[tensor].name!r}) must be a constant integer tensor"
      )
    return found[tensor]


def _options(op, opcode_name: str) -> dict[str, Any]:
  """The builtin options table of ``op`` as a dict, read through the generated accessors."""
  kind = op.BuiltinOptionsType()
  if kind == 0:
    return {}
  cls = getattr(tflite, _OPTIONS_NAMES[kind])
  table = op.BuiltinOptions()
  opts = cls()
  opts.Init(table.Bytes, table.Pos)
  out = {}
  for name in dir(cls):
    if name.startswith(("_", "Init", "GetRootAs")) or name.endswith(
      ("AsNumpy", "Length", "IsNone", "BufferHasIdentifier")
    ):
      continue
    method = getattr(opts, name)
    if not callable(method):
      continue
    try:
      value = method()
    except TypeError:  # vector accessors take an index: read them through AsNumpy
      values = getattr(opts, name + "AsNumpy", None)
      value = tuple(int(v) for v in values()) if values is not None else None
      if isinstance(value, tuple) and not value:
        value = None
    key = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    if key == "padding":
      value = _PADDINGS[value]
    elif key == "fused_activation_function":
      value = _ACTIVATIONS[value]
    elif isinstance(value, np.generic):
      value = value.item()
    out[key] = value
  return out


def _custom_options(kind: str, raw: bytes, index: int) -> dict[str, Any]:
  if kind == "CUSTOM:Convolution2DTransposeBias":
    # MediaPipe's TfLiteTransposeConvParams: {int32 padding, int32 stride_w, int32 stride_h}.
    padding, stride_w, stride_h = struct.unpack("<3i", raw[:12])
    if padding not in _C_PADDINGS:
      raise TFLiteImportError(f"op {index} ({kind}): unknown padding {padding}")
    return {"padding": _C_PADDINGS[padding], "stride_w": stride_w, "stride_h": stride_h}
  raise TFLiteImportError(f"op {index}: unsupported custom op {kind[len('CUSTOM:') :]!r}")


def _buffer(model, tensor) -> np.ndarray | None:
  data = model.Buffers(tensor.Buffer()).DataAsNumpy()
  if isinstance(data, int) or data is None or len(data) == 0:
    return None
  dtype = _TENSOR_TYPES[tensor.Type()]
  if dtype not in _NUMPY_TYPES:
    raise TFLiteImportError(f"constant tensor {tensor.Name().decode()!r} has type {dtype}")
  shape = tuple(int(s) for s in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
  return np.frombuffer(data.tobytes(), dtype=_NUMPY_TYPES[dtype]).reshape(shape)


def _nested_tuple(value):
  return tuple(_nested_tuple(v) for v in value) if isinstance(value, list) else value


def _is_quantized(tensor) -> bool:
  q = tensor.Quantization()
  return q is not None and q.ScaleLength() > 0


def read_tflite(source: str | os.PathLike | bytes) -> tuple[Graph, dict[int, np.ndarray]]:
  """``(graph, constants)`` of a ``.tflite`` file (a path or its bytes).

  ``constants``: tensor index -> float32 array of every float constant (weights, biases,
  constant operands; float16 constants behind a ``DEQUANTIZE`` are folded to float32)."""
  buf = source if isinstance(source, bytes) else open(os.fspath(source), "rb").read()
  if len(buf) < 8 or buf[4:8] != b"TFL3":
    raise TFLiteImportError("not a TFLite flatbuffer (no 'TFL3' file identifier)")
  try:
    model = tflite.Model.GetRootAsModel(buf, 0)
    n_subgraphs = model.SubgraphsLength()
  except Exception as e:  # flatbuffers raises assorted errors on foreign bytes
    raise TFLiteImportError(f"not a TFLite flatbuffer: {e}") from None
  if n_subgraphs != 1:
    raise TFLiteImportError(f"expected one subgraph, found {n_subgraphs}")
  g = model.Subgraphs(0)
  tensors, constants, static = [], {}, {}
  for i in range(g.TensorsLength()):
    t = g.Tensors(i)
    shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    tensors.append(TensorInfo(t.Name().decode(), shape, _TENSOR_TYPES[t.Type()]))
    value = _buffer(model, t)
    if value is None:
      continue
    if np.issubdtype(value.dtype, np.integer) and not _is_quantized(t):
      if value.size <= _MAX_STATIC_SIZE:
        static[i] = _nested_tuple(value.tolist())
      continue
    if _is_quantized(t):
      raise TFLiteImportError(f"tensor {i} ({tensors[-1].name!r}) is quantized: unsupported")
    constants[i] = value
  ops = []
  for k in range(g.OperatorsLength()):
    op = g.Operators(k)
    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = _OPCODE_NAMES.get(builtin, str(builtin))
    inputs = tuple(int(v) for v in op.InputsAsNumpy()) if op.InputsLength() else ()
    outputs = tuple(int(v) for v in op.OutputsAsNumpy()) if op.OutputsLength() else ()
    if name == "CUSTOM":
      name = "CUSTOM:" + code.CustomCode().decode()
      raw = op.CustomOptionsAsNumpy()
      options = _custom_options(name, bytes(raw) if not isinstance(raw, int) else b"", k)
    else:
      options = _options(op, name)
    if name == "DEQUANTIZE" and inputs[0] in constants:
      constants[outputs[0]] = constants.pop(inputs[0]).astype(np.float32)
      continue
    for t in inputs + outputs:
      if t >= 0 and _is_quantized(g.Tensors(t)):
        raise TFLiteImportError(f"op {k} ({name}): quantized tensors are not supported")
    ops.append(Op(k, name, inputs, outputs, tuple(sorted(options.items()))))
  constants = {i: np.asarray(v, np.float32) for i, v in constants.items()}
  graph = Graph(
    tensors=tuple(tensors),
    ops=tuple(ops),
    inputs=tuple(int(v) for v in g.InputsAsNumpy()),
    outputs=tuple(int(v) for v in g.OutputsAsNumpy()),
    static=tuple(sorted(static.items())),
  )
  return graph, constants
