"""A TFLite graph as a flax.linen module built from standard layers, with its trained weights.

:func:`import_tflite` reads a ``.tflite`` file (:mod:`resq_jax.interop.tflite_reader`) and
returns ``(module, variables)``: a :class:`TFLiteNet` whose convolutions, transposed
convolutions and fully connected layers are ``nn.Conv`` / ``nn.ConvTranspose`` / ``nn.Dense``
submodules (so that :func:`resq_jax.quantize` intercepts them like any linen model's), and the
params in Flax's layouts. Every other op is a jnp function of the TFLite reference semantics.

Layout conversions (TFLite -> Flax), each checked against NumPy references of TFLite's kernels
in tests/test_interop_tflite.py and against the LiteRT runtime on real models:

- ``CONV_2D`` filter ``[O, kh, kw, I]`` -> kernel ``[kh, kw, I, O]``; TF's 'SAME' padding is
  Flax's 'SAME' (the extra row / column of an odd total goes after).
- ``DEPTHWISE_CONV_2D`` filter ``[1, kh, kw, C * m]`` -> ``[kh, kw, 1, C * m]`` with
  ``feature_group_count=C`` (output channel ``c * m + j`` is input channel ``c``'s j-th).
- ``TRANSPOSE_CONV`` and MediaPipe's ``Convolution2DTransposeBias`` filter ``[O, kh, kw, I]``:
  TF's transposed convolution is the gradient of a forward convolution whose kernel is
  ``[kh, kw, O, I]``; as an ``nn.ConvTranspose`` with Flax's default unflipped convention
  (``transpose_kernel=False``, a convolution of the stride-dilated input) its kernel is that
  one flipped spatially with in/out swapped: ``W[:, ::-1, ::-1, :].transpose(1, 2, 3, 0)``,
  ``[kh, kw, I, O]``. Forgetting the flip gives plausible but wrong outputs. Padding is
  explicit: a forward convolution from the output size with TF's padding rule, mirrored.
- ``FULLY_CONNECTED`` weights ``[O, I]`` -> kernel ``[I, O]``.

Shapes keep TFLite's layout (NHWC) but not its batch: any ``B`` works, and ``RESHAPE`` keeps the
leading (batch) axis. ``phase`` (passed by the clip runner) is accepted and ignored: the float
network has no keyframe state.
"""

from __future__ import annotations

import functools
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from resq_jax.interop.tflite_reader import Graph, Op, TFLiteImportError, read_tflite

Array = jax.Array

_ACTIVATIONS = {
  "NONE": lambda x: x,
  "RELU": jax.nn.relu,
  "RELU6": lambda x: jnp.clip(x, 0.0, 6.0),
  "RELU_N1_TO_1": lambda x: jnp.clip(x, -1.0, 1.0),
  "TANH": jnp.tanh,
}
LINEAR_KINDS = (
  "CONV_2D",
  "DEPTHWISE_CONV_2D",
  "TRANSPOSE_CONV",
  "CUSTOM:Convolution2DTransposeBias",
  "FULLY_CONNECTED",
)


def layer_name(op: Op) -> str:
  """The submodule (and params) name of a linear op: ``<kind>_<op index>``."""
  kind = op.kind.split(":")[-1]
  return re.sub(r"[^0-9a-z]+", "_", kind.lower()) + f"_{op.index:03d}"


def const_name(tensor: int) -> str:
  """The params name of a float constant operand (elementwise ops, PReLU's alpha)."""
  return f"const_{tensor:04d}"


def _fused(op: Op, x: Array) -> Array:
  act = op.option("fused_activation_function", "NONE")
  if act not in _ACTIVATIONS:
    raise TFLiteImportError(f"op {op.index} ({op.kind}): fused activation {act} is unsupported")
  return _ACTIVATIONS[act](x)


def _transpose_padding(in_size: int, out_size: int, k: int, s: int, padding: str):
  """(low, high) padding of the stride-dilated input that makes a forward convolution with
  the flipped kernel compute TF's transposed convolution from ``in_size`` to ``out_size``."""
  total = max((in_size - 1) * s + k - out_size, 0) if padding == "SAME" else 0
  before = total // 2
  low = k - 1 - before
  high = out_size + k - 1 - ((in_size - 1) * s + 1) - low
  return low, high


def _pool_padding(in_size: int, k: int, s: int, padding: str) -> tuple[int, int]:
  if padding == "VALID":
    return 0, 0
  out = -(-in_size // s)
  total = max((out - 1) * s + k - in_size, 0)
  return total // 2, total - total // 2


def _pool(op: Op, x: Array, kind: str) -> Array:
  kh, kw = op.option("filter_height"), op.option("filter_width")
  sh, sw = op.option("stride_h"), op.option("stride_w")
  pads = (
    (0, 0),
    _pool_padding(x.shape[1], kh, sh, op.option("padding")),
    _pool_padding(x.shape[2], kw, sw, op.option("padding")),
    (0, 0),
  )
  window, strides = (1, kh, kw, 1), (1, sh, sw, 1)
  if kind == "max":
    y = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, pads)
  else:  # TFLite averages over the window's elements inside the image only
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pads)
    ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, pads)
    y = total / count
  return _fused(op, y)


def _resize_weights(
  in_size: int, out_size: int, align_corners: bool, half_pixel: bool, nearest: bool
) -> np.ndarray:
  """``[out, in]`` interpolation matrix of TFLite's reference resize along one axis."""
  if align_corners and out_size > 1:
    scale = (in_size - 1) / (out_size - 1)
  else:
    scale = in_size / out_size
  w = np.zeros((out_size, in_size), np.float64)
  for o in range(out_size):
    if nearest:
      pos = (o + 0.5) * scale if half_pixel else o * scale
      i = round(pos) if align_corners else int(np.floor(pos))
      w[o, min(max(i, 0), in_size - 1)] = 1.0
      continue
    pos = (o + 0.5) * scale - 0.5 if half_pixel else o * scale
    lo = max(int(np.floor(pos)), 0)
    hi = min(int(np.ceil(pos)), in_size - 1)
    frac = pos - lo
    w[o, lo] += 1.0 - frac
    w[o, hi] += frac
  return w.astype(np.float32)


def _resize(graph: Graph, op: Op, x: Array, nearest: bool) -> Array:
  out_h, out_w = graph.static_value(op.inputs[1])
  args = (op.option("align_corners", False), op.option("half_pixel_centers", False), nearest)
  wh = _resize_weights(x.shape[1], out_h, *args)
  ww = _resize_weights(x.shape[2], out_w, *args)
  hp = jax.lax.Precision.HIGHEST
  y = jnp.einsum("oh,bhwc->bowc", wh, x, precision=hp)
  return jnp.einsum("pw,bowc->bopc", ww, y, precision=hp)


def _reshape(graph: Graph, op: Op, x: Array) -> Array:
  if len(op.inputs) > 1 and op.inputs[1] >= 0:
    shape = graph.static_value(op.inputs[1])
  else:
    shape = op.option("new_shape")
  shape = (x.shape[0], *tuple(shape)[1:])  # the batch axis stays the caller's
  return x.reshape(shape)


class TFLiteNet(nn.Module):
  """A TFLite graph: ``__call__(x [B, H, W, C], phase=None)`` -> the graph's outputs.

  ``outputs``: which of the graph's outputs to return (indices into ``graph.outputs``); one
  index returns that array, several a tuple. Default: all of them."""

  graph: Graph
  outputs: tuple[int, ...] | None = None
  precision: str = "highest"

  def _const(self, tensor: int, shape) -> Array:
    return self.param(const_name(tensor), nn.initializers.zeros_init(), shape, jnp.float32)

  def _value(self, env: dict, tensor: int) -> Array:
    if tensor in env:
      return env[tensor]
    info = self.graph.tensors[tensor]
    if info.dtype == "FLOAT32" or info.dtype == "FLOAT16":
      return self._const(tensor, info.shape)
    if tensor in dict(self.graph.static):
      return jnp.asarray(self.graph.static_value(tensor))
    raise TFLiteImportError(f"tensor {tensor} ({info.name!r}) has no value")

  def _linear(self, op: Op, x: Array) -> Array:
    g, name, hp = self.graph, layer_name(op), jax.lax.Precision(self.precision)
    if op.kind == "FULLY_CONNECTED":
      out_features, in_features = g.tensors[op.inputs[1]].shape
      if not op.option("keep_num_dims", False):
        x = x.reshape((x.shape[0], -1) if x[0].size == in_features else (-1, in_features))
      use_bias = len(op.inputs) > 2 and op.inputs[2] >= 0
      return nn.Dense(out_features, use_bias=use_bias, precision=hp, name=name)(x)
    if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
      filt = g.tensors[op.inputs[1]].shape
      depthwise = op.kind == "DEPTHWISE_CONV_2D"
      return nn.Conv(
        features=filt[-1] if depthwise else filt[0],
        kernel_size=filt[1:3],
        strides=(op.option("stride_h"), op.option("stride_w")),
        padding=op.option("padding"),
        kernel_dilation=(op.option("dilation_h_factor", 1), op.option("dilation_w_factor", 1)),
        feature_group_count=x.shape[-1] if depthwise else 1,
        use_bias=len(op.inputs) > 2 and op.inputs[2] >= 0,
        precision=hp,
        name=name,
      )(x)
    # Transposed convolutions: builtin (output_shape, weights, input[, bias]) or MediaPipe's
    # custom op (input, weights, bias).
    custom = op.kind.startswith("CUSTOM:")
    w_index = 1
    use_bias = custom or (len(op.inputs) > 3 and op.inputs[3] >= 0)
    out_ch, kh, kw, _ = g.tensors[op.inputs[w_index]].shape
    out_h, out_w = g.tensors[op.outputs[0]].shape[1:3]
    sh, sw = op.option("stride_h"), op.option("stride_w")
    pad = op.option("padding")
    return nn.ConvTranspose(
      features=out_ch,
      kernel_size=(kh, kw),
      strides=(sh, sw),
      padding=(
        _transpose_padding(x.shape[1], out_h, kh, sh, pad),
        _transpose_padding(x.shape[2], out_w, kw, sw, pad),
      ),
      use_bias=use_bias,
      precision=hp,
      name=name,
    )(x)

  @nn.compact
  def __call__(self, x: Array, phase: str | None = None):
    del phase  # the float network has no keyframe state
    g = self.graph
    env = self._forward(x)
    chosen = self.outputs if self.outputs is not None else tuple(range(len(g.outputs)))
    result = tuple(env[g.outputs[i]] for i in chosen)
    return result[0] if len(result) == 1 else result

  @nn.compact
  def all_tensors(self, x: Array) -> dict[int, Array]:
    """Every tensor the graph computes, by TFLite tensor index (for per-op verification
    against the runtime: ``module.apply(variables, x, method=TFLiteNet.all_tensors)``)."""
    return self._forward(x)

  def _forward(self, x: Array) -> dict[int, Array]:
    env = {self.graph.inputs[0]: x}
    for op in self.graph.ops:
      env[op.outputs[0]] = self._run(op, env)
    return env

  def _run(self, op: Op, env: dict) -> Array:
    g, kind = self.graph, op.kind
    arg = functools.partial(self._value, env)
    if kind in LINEAR_KINDS:
      data = op.inputs[2] if kind == "TRANSPOSE_CONV" else op.inputs[0]
      return _fused(op, self._linear(op, env[data]))
    x = arg(op.inputs[0])
    if kind in ("ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM"):
      y = arg(op.inputs[1])
      fn = {
        "ADD": jnp.add,
        "SUB": jnp.subtract,
        "MUL": jnp.multiply,
        "DIV": jnp.divide,
        "MAXIMUM": jnp.maximum,
        "MINIMUM": jnp.minimum,
      }[kind]
      rank = max(x.ndim, y.ndim)  # NumPy broadcasting, with the ranks made explicit
      x = x.reshape((1,) * (rank - x.ndim) + x.shape)
      y = y.reshape((1,) * (rank - y.ndim) + y.shape)
      return _fused(op, fn(x, y))
    unary = {
      "RELU": jax.nn.relu,
      "RELU6": lambda v: jnp.clip(v, 0.0, 6.0),
      "RELU_N1_TO_1": lambda v: jnp.clip(v, -1.0, 1.0),
      "LOGISTIC": jax.nn.sigmoid,
      "TANH": jnp.tanh,
      "HARD_SWISH": lambda v: v * jnp.clip(v + 3.0, 0.0, 6.0) / 6.0,
    }
    if kind in unary:
      return unary[kind](x)
    if kind == "LEAKY_RELU":
      return jnp.where(x >= 0, x, op.option("alpha") * x)
    if kind == "PRELU":
      alpha = arg(op.inputs[1])
      return jnp.where(x >= 0, x, alpha.reshape((1,) * (x.ndim - alpha.ndim) + alpha.shape) * x)
    if kind == "SOFTMAX":
      return jax.nn.softmax(op.option("beta", 1.0) * x, axis=-1)
    if kind == "AVERAGE_POOL_2D":
      return _pool(op, x, "avg")
    if kind == "MAX_POOL_2D":
      return _pool(op, x, "max")
    if kind == "MEAN":
      axes = g.static_value(op.inputs[1])
      axes = tuple(axes) if isinstance(axes, tuple) else (axes,)
      return jnp.mean(x, axis=axes, keepdims=bool(op.option("keep_dims", False)))
    if kind in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
      return _resize(g, op, x, nearest=kind == "RESIZE_NEAREST_NEIGHBOR")
    if kind == "CONCATENATION":
      parts = [arg(t) for t in op.inputs]
      return _fused(op, jnp.concatenate(parts, axis=op.option("axis")))
    if kind == "RESHAPE":
      return _reshape(g, op, x)
    if kind in ("PAD", "PADV2"):
      pads = g.static_value(op.inputs[1])
      value = 0.0
      if kind == "PADV2" and len(op.inputs) > 2:
        value = arg(op.inputs[2]).reshape(())
      return jnp.pad(x, pads, constant_values=value)
    raise TFLiteImportError(f"op {op.index}: unsupported op {kind}")


def tflite_params(graph: Graph, constants: dict[int, np.ndarray]) -> dict:
  """The ``params`` of :class:`TFLiteNet` for ``graph``, in Flax's layouts."""
  params = {}
  for op in graph.ops:
    if op.kind not in LINEAR_KINDS:
      for t in op.inputs:
        if t in constants:
          params[const_name(t)] = jnp.asarray(constants[t])
      continue
    w_index = 1
    bias_index = {"TRANSPOSE_CONV": 3, "FULLY_CONNECTED": 2}.get(op.kind, 2)
    w = constants[op.inputs[w_index]]
    if op.kind == "CONV_2D":
      kernel = w.transpose(1, 2, 3, 0)
    elif op.kind == "DEPTHWISE_CONV_2D":
      kernel = w.reshape(w.shape[1:3] + (1, w.shape[3]))
    elif op.kind == "FULLY_CONNECTED":
      kernel = w.T
    else:  # transposed: flipped, [kh, kw, I, O] (module docstring)
      kernel = w[:, ::-1, ::-1, :].transpose(1, 2, 3, 0)
    entry = {"kernel": jnp.asarray(kernel)}
    if len(op.inputs) > bias_index and op.inputs[bias_index] >= 0:
      entry["bias"] = jnp.asarray(constants[op.inputs[bias_index]])
    params[layer_name(op)] = entry
  return params


def import_tflite(
  source: str | os.PathLike | bytes, *, outputs: tuple[int, ...] | None = None
) -> tuple[TFLiteNet, dict]:
  """``(module, variables)`` of a ``.tflite`` vision model (a path or the file's bytes).

  The module takes float frames ``[B, H, W, C]`` normalised as the model expects (MediaPipe's
  models: RGB in [0, 1]) and returns the chosen ``outputs`` of the graph. Unsupported ops raise
  :class:`~resq_jax.interop.tflite_reader.TFLiteImportError` naming the op's index."""
  graph, constants = read_tflite(source)
  if len(graph.inputs) != 1:
    raise TFLiteImportError(f"expected one input tensor, found {len(graph.inputs)}")
  supported = set(LINEAR_KINDS) | {
    "ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "RELU", "RELU6", "RELU_N1_TO_1",
    "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU", "PRELU", "SOFTMAX", "AVERAGE_POOL_2D",
    "MAX_POOL_2D", "MEAN", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "CONCATENATION",
    "RESHAPE", "PAD", "PADV2",
  }  # fmt: skip
  for op in graph.ops:
    if op.kind not in supported:
      raise TFLiteImportError(f"op {op.index}: unsupported op {op.kind}")
  if outputs is not None and any(not 0 <= i < len(graph.outputs) for i in outputs):
    raise ValueError(f"outputs must index the graph's {len(graph.outputs)} outputs, got {outputs}")
  module = TFLiteNet(graph, outputs=None if outputs is None else tuple(outputs))
  return module, {"params": tflite_params(graph, constants)}
