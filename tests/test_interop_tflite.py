"""The TFLite importer against NumPy references of TFLite's kernels (tiny models written with
the flatbuffer builder, tests/tflite_builder.py), and against the LiteRT runtime on real
pretrained models when both are present (``pip install -e ".[litert]"`` and the ``.tflite``
files in ``$RESQ_TFLITE_DIR``, default ``runs/real/tflite``, written by
``python benchmarks/real_assets.py``: docs/real_models.md says where they come
from)."""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tflite_builder import ModelBuilder, transpose_bias_options

from resq_jax.interop.tflite_model import TFLiteNet, import_tflite
from resq_jax.interop.tflite_reader import TFLiteImportError, read_tflite

RNG = np.random.default_rng(0)
ACT = {"NONE": 0, "RELU": 1, "RELU6": 3}
PAD = {"SAME": 0, "VALID": 1}


def _same_pads(size, k, s, d=1):
  out = -(-size // s)
  total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
  return total // 2, total - total // 2


def np_conv(x, w, b, stride, padding, dilation=1, groups=1):
  """TFLite's CONV_2D / DEPTHWISE_CONV_2D reference: x [B, H, W, C], w [kh, kw, C/groups, O]."""
  kh, kw = w.shape[:2]
  if padding == "SAME":
    ph, pw = (
      _same_pads(x.shape[1], kh, stride, dilation),
      _same_pads(x.shape[2], kw, stride, dilation),
    )
  else:
    ph = pw = (0, 0)
  xp = np.pad(x, ((0, 0), ph, pw, (0, 0)))
  oh = (xp.shape[1] - (kh - 1) * dilation - 1) // stride + 1
  ow = (xp.shape[2] - (kw - 1) * dilation - 1) // stride + 1
  cin_g, out = w.shape[2], w.shape[3]
  out_g = out // groups
  y = np.zeros((x.shape[0], oh, ow, out), np.float64)
  for i in range(oh):
    for j in range(ow):
      patch = xp[:, i * stride : i * stride + (kh - 1) * dilation + 1 : dilation,
                 j * stride : j * stride + (kw - 1) * dilation + 1 : dilation, :]  # fmt: skip
      for g in range(groups):
        p = patch[..., g * cin_g : (g + 1) * cin_g]
        y[:, i, j, g * out_g : (g + 1) * out_g] = np.einsum(
          "bhwc,hwco->bo", p, w[..., g * out_g : (g + 1) * out_g]
        )
  return y + (0 if b is None else b)


def np_transpose_conv(x, w_ohwi, b, stride, padding, out_hw):
  """TF's transposed convolution by scattering: every input pixel adds its weighted kernel."""
  o, kh, kw, _ = w_ohwi.shape
  oh, ow = out_hw
  th = max((x.shape[1] - 1) * stride + kh - oh, 0) if padding == "SAME" else 0
  tw = max((x.shape[2] - 1) * stride + kw - ow, 0) if padding == "SAME" else 0
  y = np.zeros((x.shape[0], oh + kh + stride, ow + kw + stride, o))
  for i in range(x.shape[1]):
    for j in range(x.shape[2]):
      y[:, i * stride : i * stride + kh, j * stride : j * stride + kw] += np.einsum(
        "bc,ohwc->bhwo", x[:, i, j], w_ohwi
      )
  y = y[:, th // 2 : th // 2 + oh, tw // 2 : tw // 2 + ow]
  return y + (0 if b is None else b)


def np_resize(x, out_h, out_w, align_corners, half_pixel, nearest):
  """TFLite's reference resize, pixel by pixel."""

  def src(o, n_in, n_out):
    scale = (n_in - 1) / (n_out - 1) if align_corners and n_out > 1 else n_in / n_out
    if nearest:
      v = (o + 0.5) * scale if half_pixel else o * scale
      return min(round(v) if align_corners else int(np.floor(v)), n_in - 1)
    return (o + 0.5) * scale - 0.5 if half_pixel else o * scale

  h, w = x.shape[1:3]
  y = np.zeros((x.shape[0], out_h, out_w, x.shape[3]))
  for i in range(out_h):
    for j in range(out_w):
      if nearest:
        y[:, i, j] = x[:, src(i, h, out_h), src(j, w, out_w)]
        continue
      fy, fx = src(i, h, out_h), src(j, w, out_w)
      y0, x0 = max(int(np.floor(fy)), 0), max(int(np.floor(fx)), 0)
      y1, x1 = min(int(np.ceil(fy)), h - 1), min(int(np.ceil(fx)), w - 1)
      dy, dx = fy - y0, fx - x0
      y[:, i, j] = (
        x[:, y0, x0] * (1 - dy) * (1 - dx)
        + x[:, y1, x0] * dy * (1 - dx)
        + x[:, y0, x1] * (1 - dy) * dx
        + x[:, y1, x1] * dy * dx
      )
  return y


def np_pool(x, k, s, padding, kind):
  ph = _same_pads(x.shape[1], k, s) if padding == "SAME" else (0, 0)
  pw = _same_pads(x.shape[2], k, s) if padding == "SAME" else (0, 0)
  oh = (x.shape[1] + sum(ph) - k) // s + 1
  ow = (x.shape[2] + sum(pw) - k) // s + 1
  y = np.zeros((x.shape[0], oh, ow, x.shape[3]))
  for i in range(oh):
    for j in range(ow):
      r0, c0 = i * s - ph[0], j * s - pw[0]
      win = x[:, max(r0, 0) : r0 + k, max(c0, 0) : c0 + k]  # padding never counts
      y[:, i, j] = win.max(axis=(1, 2)) if kind == "max" else win.mean(axis=(1, 2))
  return y


def _run(data: bytes, x, **kwargs):
  module, variables = import_tflite(data, **kwargs)
  return np.asarray(jax.jit(module.apply)(variables, jnp.asarray(x, jnp.float32)))


def _conv_model(x_shape, w, b, kind, stride, padding, dilation, act, fp16=False):
  m = ModelBuilder()
  x = m.tensor(x_shape)
  if fp16:  # MediaPipe's layout: float16 weights behind a DEQUANTIZE
    w16 = m.const(w, np.float16)
    wt = m.tensor(w.shape)
    m.op("DEQUANTIZE", [w16], [wt])
  else:
    wt = m.const(w)
  bt = m.const(b) if b is not None else -1
  y = m.tensor((0,))
  if kind == "CONV_2D":
    opts = ("Conv2DOptions", {"Padding": PAD[padding], "StrideW": stride, "StrideH": stride,
            "DilationWFactor": dilation, "DilationHFactor": dilation,
            "FusedActivationFunction": ACT[act]})  # fmt: skip
  else:
    opts = ("DepthwiseConv2DOptions", {"Padding": PAD[padding], "StrideW": stride,
            "StrideH": stride, "DepthMultiplier": w.shape[-1] // x_shape[-1],
            "DilationWFactor": dilation, "DilationHFactor": dilation,
            "FusedActivationFunction": ACT[act]})  # fmt: skip
  m.op(kind, [x, wt, bt], [y], opts)
  return m.build([x], [y])


@pytest.mark.parametrize(
  "stride,padding,dilation,act,fp16",
  [(2, "SAME", 1, "NONE", False), (1, "VALID", 2, "RELU6", False), (2, "SAME", 1, "RELU", True)],
)
def test_conv_and_depthwise_equal_tflite_reference(stride, padding, dilation, act, fp16):
  x = RNG.normal(size=(2, 9, 7, 3)).astype(np.float32)
  w = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)  # OHWI
  b = RNG.normal(size=(4,)).astype(np.float32)
  if fp16:
    w = w.astype(np.float16).astype(np.float32)  # what the DEQUANTIZE folds to
  got = _run(_conv_model(x.shape, w, b, "CONV_2D", stride, padding, dilation, act, fp16), x)
  want = np_conv(x, w.transpose(1, 2, 3, 0), b, stride, padding, dilation)
  want = {"NONE": want, "RELU": np.maximum(want, 0), "RELU6": np.clip(want, 0, 6)}[act]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

  wd = RNG.normal(size=(1, 3, 3, 6)).astype(np.float32)  # depth multiplier 2
  got = _run(_conv_model(x.shape, wd, None, "DEPTHWISE_CONV_2D", stride, padding, dilation, act), x)
  want = np_conv(x, wd.reshape(3, 3, 1, 6), None, stride, padding, dilation, groups=3)
  want = {"NONE": want, "RELU": np.maximum(want, 0), "RELU6": np.clip(want, 0, 6)}[act]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
  "padding,in_hw,out_hw", [("SAME", (5, 4), (10, 8)), ("VALID", (4, 3), (9, 7))]
)
@pytest.mark.parametrize("custom", [False, True])
def test_transposed_convolutions_equal_the_scatter_reference(padding, in_hw, out_hw, custom):
  """The builtin TRANSPOSE_CONV and MediaPipe's Convolution2DTransposeBias; a forgotten kernel
  flip would fail here (the reference scatters the unflipped OHWI weights)."""
  x = RNG.normal(size=(2, *in_hw, 3)).astype(np.float32)
  w = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)
  b = RNG.normal(size=(4,)).astype(np.float32)
  m = ModelBuilder()
  xt, wt, bt = m.tensor(x.shape), m.const(w), m.const(b)
  y = m.tensor((2, *out_hw, 4))
  if custom:
    m.op(
      "CUSTOM:Convolution2DTransposeBias", [xt, wt, bt], [y], transpose_bias_options(padding, 2, 2)
    )
  else:
    shape = m.const(np.array([2, *out_hw, 4]), np.int32)
    opts = ("TransposeConvOptions", {"Padding": PAD[padding], "StrideW": 2, "StrideH": 2})
    m.op("TRANSPOSE_CONV", [shape, wt, xt, bt], [y], opts)
  got = _run(m.build([xt], [y]), x)
  np.testing.assert_allclose(
    got, np_transpose_conv(x, w, b, 2, padding, out_hw), rtol=1e-5, atol=1e-5
  )


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_pools_equal_tflite_reference(padding):
  """Average pooling counts only the pixels inside the image (TFLite's rule under SAME)."""
  x = RNG.normal(size=(2, 7, 6, 3)).astype(np.float32)
  for code, kind in (("AVERAGE_POOL_2D", "avg"), ("MAX_POOL_2D", "max")):
    m = ModelBuilder()
    xt, y = m.tensor(x.shape), m.tensor((0,))
    opts = {
      "Padding": PAD[padding],
      "StrideW": 2,
      "StrideH": 2,
      "FilterWidth": 3,
      "FilterHeight": 3,
    }
    m.op(code, [xt], [y], ("Pool2DOptions", opts))
    np.testing.assert_allclose(
      _run(m.build([xt], [y]), x), np_pool(x, 3, 2, padding, kind), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("align,half", [(False, True), (True, False), (False, False)])
@pytest.mark.parametrize("nearest", [False, True])
def test_resizes_equal_tflite_reference(align, half, nearest):
  x = RNG.normal(size=(2, 5, 4, 3)).astype(np.float32)
  m = ModelBuilder()
  xt, size, y = m.tensor(x.shape), m.const(np.array([11, 7]), np.int32), m.tensor((0,))
  if nearest:
    opts = ("ResizeNearestNeighborOptions", {"AlignCorners": align, "HalfPixelCenters": half})
  else:
    opts = ("ResizeBilinearOptions", {"AlignCorners": align, "HalfPixelCenters": half})
  m.op("RESIZE_NEAREST_NEIGHBOR" if nearest else "RESIZE_BILINEAR", [xt, size], [y], opts)
  want = np_resize(x, 11, 7, align, half, nearest)
  np.testing.assert_allclose(_run(m.build([xt], [y]), x), want, rtol=1e-5, atol=1e-6)


def test_elementwise_head_against_numpy():
  """PAD -> ADD const (RELU) -> HARD_SWISH * LOGISTIC -> CONCATENATION -> MEAN (keep dims)
  -> RESHAPE -> FULLY_CONNECTED: the ops of a mobile classifier head, each against NumPy."""
  x = RNG.normal(size=(3, 4, 4, 2)).astype(np.float32)
  c = RNG.normal(size=(2,)).astype(np.float32)
  wf = RNG.normal(size=(5, 4)).astype(np.float32)
  bf = RNG.normal(size=(5,)).astype(np.float32)
  m = ModelBuilder()
  xt = m.tensor(x.shape)
  pads = m.const(np.array([[0, 0], [1, 0], [0, 2], [0, 0]]), np.int32)
  p, a, h, s, q, cat, mean, r, fc = (m.tensor((0,)) for _ in range(9))
  m.op("PAD", [xt, pads], [p])
  m.op("ADD", [p, m.const(c)], [a], ("AddOptions", {"FusedActivationFunction": ACT["RELU"]}))
  m.op("HARD_SWISH", [a], [h])
  m.op("LOGISTIC", [a], [s])
  m.op("MUL", [h, s], [q], ("MulOptions", {"FusedActivationFunction": 0}))
  m.op("CONCATENATION", [q, a], [cat], ("ConcatenationOptions", {"Axis": 3}))
  m.op(
    "MEAN",
    [cat, m.const(np.array([1, 2]), np.int32)],
    [mean],
    ("ReducerOptions", {"KeepDims": True}),
  )
  m.op("RESHAPE", [mean, m.const(np.array([1, 4]), np.int32)], [r])
  m.op("FULLY_CONNECTED", [r, m.const(wf), m.const(bf)], [fc], ("FullyConnectedOptions", {}))
  got = _run(m.build([xt], [fc]), x)

  pa = np.maximum(np.pad(x, ((0, 0), (1, 0), (0, 2), (0, 0))) + c, 0)
  hs = pa * np.clip(pa + 3, 0, 6) / 6
  q = hs / (1 + np.exp(-pa))
  feat = np.concatenate([q, pa], axis=3).mean(axis=(1, 2))
  np.testing.assert_allclose(got, feat @ wf.T + bf, rtol=1e-5, atol=1e-5)


def test_init_params_have_the_loaded_shapes_and_names():
  """``module.init`` (random) and the imported variables have the same tree: the importer's
  Flax layouts agree with the layers it builds."""
  w = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)
  data = _conv_model((1, 8, 8, 3), w, np.zeros(4, np.float32), "CONV_2D", 1, "SAME", 1, "NONE")
  module, variables = import_tflite(data)
  init = module.init(jax.random.key(0), jnp.zeros((2, 8, 8, 3)))
  assert jax.tree.map(np.shape, init) == jax.tree.map(np.shape, variables)
  assert isinstance(module, TFLiteNet) and hash(module) == hash(import_tflite(data)[0])


def test_unsupported_and_foreign_inputs_are_named():
  m = ModelBuilder()
  xt, y = m.tensor((1, 4, 4, 2)), m.tensor((0,))
  m.op("RELU", [xt], [m.tensor((0,))])
  m.op("SQUEEZE", [xt], [y])
  with pytest.raises(TFLiteImportError, match=r"op 1: unsupported op SQUEEZE"):
    import_tflite(m.build([xt], [y]))
  with pytest.raises(TFLiteImportError, match="not a TFLite flatbuffer"):
    read_tflite(b"\x00" * 7)
  m = ModelBuilder()
  xt, y = m.tensor((1, 4, 4, 2)), m.tensor((0,))
  m.op("CUSTOM:MyOp", [xt], [y], b"")
  with pytest.raises(TFLiteImportError, match=r"op 0: unsupported custom op 'MyOp'"):
    read_tflite(m.build([xt], [y]))


# --- Real models against the LiteRT runtime (skipped without them) ---------------------------

MODEL_DIR = pathlib.Path(os.environ.get("RESQ_TFLITE_DIR", "runs/real/tflite"))
REAL = {
  # file: (output checked, max abs error, LiteRT op resolver). XNNPACK (AUTO) is the only
  # LiteRT path that runs MediaPipe's custom transposed convolution; the builtin kernels are
  # the closer reference where they run (docs/real_models.md compares both).
  "selfie_segmentation.tflite": (0, 1e-4, "AUTO"),  # person mask probability in [0, 1]
  "pose_landmark_full.tflite": (4, 1e-4, "BUILTIN_WITHOUT_DEFAULT_DELEGATES"),  # metres
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_model_matches_litert(name):
  interpreter = pytest.importorskip("ai_edge_litert.interpreter")
  path = MODEL_DIR / name
  if not path.exists():
    pytest.skip(f"{path} absent (docs/real_models.md: where the models come from)")
  from resq_jax.data import generate_clip  # natural-looking frames, made here

  index, tol, resolver = REAL[name]
  it = interpreter.Interpreter(
    model_path=str(path),
    experimental_op_resolver_type=getattr(interpreter.OpResolverType, resolver),
  )
  it.allocate_tensors()
  inp = it.get_input_details()[0]
  h, w = (int(v) for v in inp["shape"][1:3])
  frames = generate_clip("slow_pan", "test", 0, height=h, width=w, num_frames=2)["frames"]
  x = frames.astype(np.float32) / 255.0
  module, variables = import_tflite(path)
  got = jax.jit(module.apply)(variables, jnp.asarray(x))
  got = got if isinstance(got, tuple) else (got,)
  names = [module.graph.tensors[t].name for t in module.graph.outputs]
  for b in range(x.shape[0]):
    it.set_tensor(inp["index"], x[b : b + 1])
    it.invoke()
    detail = next(o for o in it.get_output_details() if o["name"] == names[index])
    want = it.get_tensor(detail["index"])
    assert np.max(np.abs(np.asarray(got[index][b : b + 1]) - want)) <= tol
