"""Writes small ``.tflite`` flatbuffers for tests, with the builder functions the ``tflite``
package generates from TFLite's schema (no TensorFlow): tensors, constant buffers, builtin ops
with their options table, and custom ops with raw option bytes."""

from __future__ import annotations

import dataclasses
import importlib
import struct

import flatbuffers
import numpy as np
import tflite


def _m(name: str):
  """The generated module ``tflite.<name>`` (the package's attribute of that name is the
  class; the builder functions live in the module)."""
  return importlib.import_module(f"tflite.{name}")


_TYPES = {np.float32: 0, np.float16: 1, np.int32: 2}


@dataclasses.dataclass
class ModelBuilder:
  """Collects tensors and ops; :meth:`build` returns the file's bytes."""

  tensors: list = dataclasses.field(default_factory=list)  # (name, shape, dtype, data | None)
  ops: list = dataclasses.field(default_factory=list)  # (code, inputs, outputs, options)

  def tensor(self, shape, dtype=np.float32, data=None, name=None) -> int:
    data = None if data is None else np.asarray(data, dtype).reshape(shape)
    self.tensors.append((name or f"t{len(self.tensors)}", tuple(shape), dtype, data))
    return len(self.tensors) - 1

  def const(self, value, dtype=np.float32) -> int:
    value = np.asarray(value, dtype)
    return self.tensor(value.shape, dtype, value)

  def op(self, code: str, inputs, outputs, options: tuple[str, dict] | bytes | None = None):
    """``code``: a builtin name ('CONV_2D') or 'CUSTOM:<name>'; ``options``: ``(options
    table name, {field: value})`` for builtins, raw bytes for custom ops."""
    self.ops.append((code, tuple(inputs), tuple(outputs), options))

  def build(self, inputs, outputs) -> bytes:
    b = flatbuffers.Builder(1024)
    codes = sorted({op[0] for op in self.ops})

    def int_vector(start, values):
      start(b, len(values))
      for v in reversed(values):
        b.PrependInt32(v)
      return b.EndVector()

    # Buffers: 0 is the empty sentinel, then one per constant tensor.
    buffer_offsets, tensor_buffer = [], []
    _m("Buffer").BufferStart(b)
    buffer_offsets.append(_m("Buffer").BufferEnd(b))
    for _, _, _, data in self.tensors:
      if data is None:
        tensor_buffer.append(0)
        continue
      raw = np.ascontiguousarray(data).tobytes()
      vec = b.CreateByteVector(raw)
      _m("Buffer").BufferStart(b)
      _m("Buffer").BufferAddData(b, vec)
      buffer_offsets.append(_m("Buffer").BufferEnd(b))
      tensor_buffer.append(len(buffer_offsets) - 1)

    tensor_offsets = []
    for (name, shape, dtype, _), buf in zip(self.tensors, tensor_buffer):
      name_off = b.CreateString(name)
      shape_off = int_vector(_m("Tensor").TensorStartShapeVector, list(shape))
      _m("Tensor").TensorStart(b)
      _m("Tensor").TensorAddShape(b, shape_off)
      _m("Tensor").TensorAddType(b, _TYPES[dtype])
      _m("Tensor").TensorAddBuffer(b, buf)
      _m("Tensor").TensorAddName(b, name_off)
      tensor_offsets.append(_m("Tensor").TensorEnd(b))

    op_offsets = []
    for code, ins, outs, options in self.ops:
      opts_off, opts_type, custom_off = None, 0, None
      if isinstance(options, bytes):
        custom_off = b.CreateByteVector(options)
      elif options is not None:
        table, fields = options
        module = _m(table)
        getattr(module, f"{table}Start")(b)
        for field, value in fields.items():
          getattr(module, f"{table}Add{field}")(b, value)
        opts_off = getattr(module, f"{table}End")(b)
        opts_type = getattr(tflite.BuiltinOptions, table)
      ins_off = int_vector(_m("Operator").OperatorStartInputsVector, list(ins))
      outs_off = int_vector(_m("Operator").OperatorStartOutputsVector, list(outs))
      _m("Operator").OperatorStart(b)
      _m("Operator").OperatorAddOpcodeIndex(b, codes.index(code))
      _m("Operator").OperatorAddInputs(b, ins_off)
      _m("Operator").OperatorAddOutputs(b, outs_off)
      if opts_off is not None:
        _m("Operator").OperatorAddBuiltinOptionsType(b, opts_type)
        _m("Operator").OperatorAddBuiltinOptions(b, opts_off)
      if custom_off is not None:
        _m("Operator").OperatorAddCustomOptions(b, custom_off)
      op_offsets.append(_m("Operator").OperatorEnd(b))

    def table_vector(start, offsets):
      start(b, len(offsets))
      for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
      return b.EndVector()

    tensors_vec = table_vector(_m("SubGraph").SubGraphStartTensorsVector, tensor_offsets)
    ops_vec = table_vector(_m("SubGraph").SubGraphStartOperatorsVector, op_offsets)
    in_vec = int_vector(_m("SubGraph").SubGraphStartInputsVector, list(inputs))
    out_vec = int_vector(_m("SubGraph").SubGraphStartOutputsVector, list(outputs))
    _m("SubGraph").SubGraphStart(b)
    _m("SubGraph").SubGraphAddTensors(b, tensors_vec)
    _m("SubGraph").SubGraphAddOperators(b, ops_vec)
    _m("SubGraph").SubGraphAddInputs(b, in_vec)
    _m("SubGraph").SubGraphAddOutputs(b, out_vec)
    subgraph = _m("SubGraph").SubGraphEnd(b)

    code_offsets = []
    for code in codes:
      custom = b.CreateString(code.split(":", 1)[1]) if code.startswith("CUSTOM:") else None
      number = tflite.BuiltinOperator.CUSTOM if custom else getattr(tflite.BuiltinOperator, code)
      _m("OperatorCode").OperatorCodeStart(b)
      _m("OperatorCode").OperatorCodeAddDeprecatedBuiltinCode(b, min(number, 127))
      _m("OperatorCode").OperatorCodeAddBuiltinCode(b, number)
      _m("OperatorCode").OperatorCodeAddVersion(b, 1)
      if custom is not None:
        _m("OperatorCode").OperatorCodeAddCustomCode(b, custom)
      code_offsets.append(_m("OperatorCode").OperatorCodeEnd(b))

    codes_vec = table_vector(_m("Model").ModelStartOperatorCodesVector, code_offsets)
    subgraphs_vec = table_vector(_m("Model").ModelStartSubgraphsVector, [subgraph])
    buffers_vec = table_vector(_m("Model").ModelStartBuffersVector, buffer_offsets)
    _m("Model").ModelStart(b)
    _m("Model").ModelAddVersion(b, 3)
    _m("Model").ModelAddOperatorCodes(b, codes_vec)
    _m("Model").ModelAddSubgraphs(b, subgraphs_vec)
    _m("Model").ModelAddBuffers(b, buffers_vec)
    b.Finish(_m("Model").ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def transpose_bias_options(padding: str, stride_w: int, stride_h: int) -> bytes:
  """MediaPipe's Convolution2DTransposeBias options (TfLitePadding's C enum: SAME 1, VALID 2)."""
  return struct.pack("<3i", {"SAME": 1, "VALID": 2}[padding], stride_w, stride_h)
