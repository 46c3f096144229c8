"""PyTorch mirror of resq_jax's SegNet and of its FQ / static ResQ fake quantization.

Imports only torch and numpy (``bench_peer.py`` runs it in subprocesses without JAX for the
memory measurement). Parameters are copied from resq_jax's Flax variables, flattened to
``{'params/stem1/kernel': array, ...}`` (``flax.traverse_util.flatten_dict(sep='/')``):
NHWC / HWIO in JAX, NCHW / OIHW here.

What is mirrored, operation by operation (``resq_jax/nn/layers.py``, ``quantized.py``,
``models.py``, ``clip.py``):

* padding 'SAME' as XLA computes it: total ``max((ceil(n/s) - 1) * s + k - n, 0)``, the
  smaller half low (a stride-2 3x3 conv on an even size pads 0 low, 1 high: ``F.pad`` then
  ``padding=0``; symmetric cases use the conv's own padding);
* BatchNorm: float training uses the batch statistics (``F.batch_norm``, biased variance for the
  normalisation; its running-variance update uses the unbiased variance, resq_jax the biased
  one: a factor n / (n - 1) with n = frames x H x W per channel, 1 + 1.5e-5 on the demo's stem),
  momentum 0.1 (Flax's 0.9), eps 1e-5; every other execution folds the running statistics into
  the conv: ``W * g / sqrt(v + eps)``, ``b - m * g / sqrt(v + eps)``;
* fake quantization with PyTorch's learnable (LSQ) kernels: weights per output channel on the
  signed symmetric narrow grid ``[-(2^(b-1)-1), 2^(b-1)-1]`` (zero point 0), key activations
  per tensor unsigned asymmetric ``[0, 2^b - 1]`` with a learnable zero point, residuals per
  tensor signed symmetric narrow; ``grad_factor`` LSQ's ``1 / sqrt(N * qmax)`` with N the
  features per example (activations ``C * H * W``, weights ``C_in * k_h * k_w``), as resq_jax;
* static ResQ, closed loop: keyframe ``xh = Qk_a(x)``, ``y = conv(xh, Qk_w(W)) + b``,
  ``ref = xh``, ``yref = y``; residual frame ``rh = Qr_a(x - ref)``,
  ``y = yref + conv(rh, Qr_w(W))``, ``ref += rh``, ``yref = y``; ReLUs, additions and resizes
  act on full activations;
* the clip runner folds keyframe groups into the batch (one key step, then the K - 1 residual
  frames in a Python loop), float / FQ fold all frames (``run_clip``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MODES = ("float", "fq", "resq")


def same_pads(n: int, k: int, s: int) -> tuple[int, int]:
  """XLA's 'SAME' padding ``(low, high)`` of one spatial axis."""
  out = -(-n // s)
  total = max((out - 1) * s + k - n, 0)
  return total // 2, total - total // 2


def act_fq(x, scale, zero_point, qmin, qmax):
  """Per-tensor learnable fake quant with LSQ's gradient factor (N = features per example)."""
  n = math.prod(x.shape[1:])
  return torch._fake_quantize_learnable_per_tensor_affine(  # pylint: disable=protected-access
    x, scale, zero_point, qmin, qmax, 1.0 / math.sqrt(n * qmax)
  )


def weight_fq(w, scale, zero_point, bits):
  """Per-output-channel learnable fake quant, signed symmetric narrow grid."""
  qmax = 2 ** (bits - 1) - 1
  n = math.prod(w.shape[1:])
  return torch._fake_quantize_learnable_per_channel_affine(  # pylint: disable=protected-access
    w, scale, zero_point, 0, -qmax, qmax, 1.0 / math.sqrt(n * qmax)
  )


def codes(x, scale, zero_point, qmin, qmax):
  """Integer codes ``clamp(round(x * (1/s)) + z)`` (for the verification)."""
  z = torch.round(zero_point) if torch.is_tensor(zero_point) else zero_point
  return torch.clamp(torch.round(x * (1.0 / scale)) + z, qmin, qmax)


class TQConv(nn.Module):
  """A ``QConv``: conv (+ BatchNorm or bias) under 'float', 'fq' or static 'resq' (closed)."""

  def __init__(
    self,
    cin,
    cout,
    k=3,
    stride=1,
    use_bn=True,
    use_bias=False,
    mode="float",
    key_bits=(8, 8),
    res_bits=(4, 4),
  ):
    super().__init__()
    if mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    self.k, self.stride, self.use_bn, self.mode = k, stride, use_bn, mode
    self.key_bits, self.res_bits = key_bits, res_bits
    self.weight = nn.Parameter(torch.empty(cout, cin, k, k))
    if use_bn:
      self.bn_scale = nn.Parameter(torch.ones(cout))
      self.bn_bias = nn.Parameter(torch.zeros(cout))
      self.register_buffer("mean", torch.zeros(cout))
      self.register_buffer("var", torch.ones(cout))
      self.bias = None
    else:
      self.bias = nn.Parameter(torch.zeros(cout)) if use_bias else None
    self.register_buffer("w_zero_point", torch.zeros(cout))
    if mode != "float":
      self.key_w_scale = nn.Parameter(torch.ones(cout))
      self.key_a_scale = nn.Parameter(torch.ones(1))
      self.key_a_zero_point = nn.Parameter(torch.zeros(1))
    if mode == "resq":
      self.res_w_scale = nn.Parameter(torch.ones(cout))
      self.res_a_scale = nn.Parameter(torch.ones(1))
      self.register_buffer("res_a_zero_point", torch.zeros(1))
    self.ref = self.yref = None
    self.record = None  # a list: append (phase, activation codes, weight codes) per call

  def _conv(self, x, w, b=None):
    (pt, pb), (pl, pr) = (same_pads(n, self.k, self.stride) for n in x.shape[2:])
    if pt == pb and pl == pr:
      return F.conv2d(x, w, b, self.stride, (pt, pl))
    return F.conv2d(F.pad(x, (pl, pr, pt, pb)), w, b, self.stride, 0)

  def _folded(self):
    if not self.use_bn:
      return self.weight, self.bias
    inv = self.bn_scale * torch.rsqrt(self.var + 1e-5)
    return self.weight * inv.reshape(-1, 1, 1, 1), self.bn_bias - self.mean * inv

  def forward(self, x, phase="key", train=False):
    if self.mode == "float":
      if train and self.use_bn:
        y = self._conv(x, self.weight)
        return F.batch_norm(
          y, self.mean, self.var, self.bn_scale, self.bn_bias, training=True, momentum=0.1, eps=1e-5
        )
      return self._conv(x, *self._folded())
    w, b = self._folded()
    if self.mode == "fq" or phase == "key":
      (wb, ab), amax = self.key_bits, 2 ** self.key_bits[1] - 1
      xh = act_fq(x, self.key_a_scale, self.key_a_zero_point, 0, amax)
      wh = weight_fq(w, self.key_w_scale, self.w_zero_point, wb)
      y = self._conv(xh, wh, b)
      if self.record is not None:
        self.record.append(
          (
            "key",
            codes(x, self.key_a_scale, self.key_a_zero_point, 0, amax),
            self._wcodes(w, self.key_w_scale, wb),
          )
        )
      if self.mode == "resq":
        self.ref, self.yref = xh, y
      return y
    if self.ref is None:
      raise ValueError("run a keyframe before a residual frame")
    wb, ab = self.res_bits
    amax = 2 ** (ab - 1) - 1
    r = x - self.ref
    rh = act_fq(r, self.res_a_scale, self.res_a_zero_point, -amax, amax)
    y = self.yref + self._conv(rh, weight_fq(w, self.res_w_scale, self.w_zero_point, wb))
    if self.record is not None:
      self.record.append(
        (
          "residual",
          codes(r, self.res_a_scale, 0.0, -amax, amax),
          self._wcodes(w, self.res_w_scale, wb),
        )
      )
    self.ref, self.yref = self.ref + rh, y
    return y

  @staticmethod
  def _wcodes(w, scale, bits):
    qmax = 2 ** (bits - 1) - 1
    return codes(w, scale.reshape(-1, 1, 1, 1), 0.0, -qmax, qmax)


def _resize(x, hw, method):
  mode = {"bilinear": "bilinear", "nearest": "nearest-exact"}[method]
  kw = {"align_corners": False, "antialias": False} if mode == "bilinear" else {}
  return F.interpolate(x, size=tuple(hw), mode=mode, **kw)


class TSegNet(nn.Module):
  """resq_jax's ``SegNet`` (same keyword arguments as ``segnet_preset``); every conv is a
  ``TQConv`` under ``mode``, named by its Flax path ('/' written '__')."""

  def __init__(
    self,
    num_classes,
    width=32,
    stem_width=None,
    num_branches=2,
    num_stages=2,
    num_blocks=1,
    head_width=None,
    upsample="bilinear",
    mode="float",
    key_bits=(8, 8),
    res_bits=(4, 4),
    in_channels=3,
  ):
    super().__init__()
    self.num_branches, self.num_stages, self.num_blocks = num_branches, num_stages, num_blocks
    self.upsample, self.mode = upsample, mode
    widths = [width * 2**i for i in range(num_branches)]
    stem_width = width if stem_width is None else stem_width
    head_width = 2 * width if head_width is None else head_width
    self.convs = nn.ModuleDict()

    def add(path, cin, cout, k=3, stride=1, use_bn=True, use_bias=False):
      self.convs[path.replace("/", "__")] = TQConv(
        cin, cout, k, stride, use_bn, use_bias, mode, key_bits, res_bits
      )

    add("stem1", in_channels, stem_width, stride=2)
    add("stem2", stem_width, widths[0], stride=2)
    for i in range(1, num_branches):
      add(f"transition{i}", widths[i - 1], widths[i], stride=2)
    for s in range(num_stages):
      for i, w in enumerate(widths):
        for k in range(num_blocks):
          add(f"stage{s}_branch{i}_block{k}/conv1", w, w)
          add(f"stage{s}_branch{i}_block{k}/conv2", w, w)
      if num_branches > 1:
        n_out = 1 if s == num_stages - 1 else num_branches
        for i in range(n_out):
          for j in range(num_branches):
            if j > i:
              add(f"fuse{s}/up_{j}to{i}", widths[j], widths[i], k=1)
            for k in range(i - j):
              last = k == i - j - 1
              add(
                f"fuse{s}/down_{j}to{i}_{k}", widths[j], widths[i] if last else widths[j], stride=2
              )
    add("head", widths[0], head_width)
    add("classifier", head_width, num_classes, k=1, use_bn=False, use_bias=True)

  def conv(self, path):
    return self.convs[path.replace("/", "__")]

  def forward(self, x, phase="key", train=False):
    c = lambda path, v: self.conv(path)(v, phase, train)
    in_hw = x.shape[2:]
    y = F.relu(c("stem1", x))
    branches = [F.relu(c("stem2", y))]
    for i in range(1, self.num_branches):
      branches.append(F.relu(c(f"transition{i}", branches[-1])))
    for s in range(self.num_stages):
      for i in range(self.num_branches):
        for k in range(self.num_blocks):
          p = f"stage{s}_branch{i}_block{k}"
          x = branches[i]
          branches[i] = F.relu(x + c(f"{p}/conv2", F.relu(c(f"{p}/conv1", x))))
      if self.num_branches > 1:
        n_out = 1 if s == self.num_stages - 1 else self.num_branches
        outs = []
        for i in range(n_out):
          total = branches[i]
          for j, source in enumerate(branches):
            if j > i:
              up = c(f"fuse{s}/up_{j}to{i}", source)
              total = total + _resize(up, branches[i].shape[2:], self.upsample)
            elif j < i:
              y = source
              for k in range(i - j):
                y = c(f"fuse{s}/down_{j}to{i}_{k}", y)
                y = y if k == i - j - 1 else F.relu(y)
              total = total + y
          outs.append(F.relu(total))
        branches = outs
    y = F.relu(c("head", branches[0]))
    return _resize(c("classifier", y), in_hw, "bilinear")

  # -- weights from / to resq_jax's flattened Flax variables ---------------------------------

  def load_flax(self, flat: dict) -> None:
    """Copy ``{'params/<path>/kernel': HWIO, 'batch_stats/<path>/mean': ...}`` into the
    modules (every tensor this mirror has must be present)."""
    for name, layer in self.convs.items():
      path = name.replace("__", "/")
      get = lambda col, leaf, path=path: torch.from_numpy(
        np.array(flat[f"{col}/{path}/{leaf}"], np.float32)
      )
      with torch.no_grad():
        layer.weight.copy_(get("params", "kernel").permute(3, 2, 0, 1))
        pairs = []
        if layer.use_bn:
          pairs += [
            ("bn_scale", "params"),
            ("bn_bias", "params"),
            ("mean", "batch_stats"),
            ("var", "batch_stats"),
          ]
        elif layer.bias is not None:
          pairs.append(("bias", "params"))
        if layer.mode != "float":
          pairs += [
            ("key_w_scale", "params"),
            ("key_a_scale", "params"),
            ("key_a_zero_point", "params"),
          ]
        if layer.mode == "resq":
          pairs += [("res_w_scale", "params"), ("res_a_scale", "params")]
        for attr, col in pairs:
          dst = getattr(layer, attr)
          dst.copy_(get(col, attr).reshape(dst.shape))

  def flax_grads(self) -> dict:
    """Gradients as ``{'params/<path>/<leaf>': array}`` in resq_jax's layouts."""
    out = {}
    for name, layer in self.convs.items():
      path = name.replace("__", "/")
      for attr, p in layer.named_parameters(recurse=False):
        if p.grad is None:
          continue
        g = p.grad.detach().numpy()
        leaf = "kernel" if attr == "weight" else attr
        if attr == "weight":
          g = g.transpose(2, 3, 1, 0)
        elif g.shape == (1,):
          g = g.reshape(())
        out[f"params/{path}/{leaf}"] = g
    return out

  def reset_state(self) -> None:
    for layer in self.convs.values():
      layer.ref = layer.yref = None


def run_clip(model: TSegNet, clip: torch.Tensor, period: int) -> torch.Tensor:
  """``clip [B, T, C, H, W] -> outputs [B, T, classes, H, W]`` as resq_jax's ``run_clip``:
  stateless modes fold every frame into the batch; ResQ folds the keyframe groups into the
  batch, runs one key step on all of them, then the residual frames one by one."""
  b, t = clip.shape[:2]
  if model.mode != "resq":
    return model(clip.flatten(0, 1), "key").unflatten(0, (b, t))
  n_full = (t // period) * period
  parts = []
  for start, length in ((0, n_full), (n_full, t - n_full)):
    if not length:
      continue
    groups = clip[:, start : start + length]
    n_groups = groups.shape[1] // (period if start == 0 else length)
    k = groups.shape[1] // n_groups
    groups = groups.reshape(b * n_groups, k, *clip.shape[2:])
    ys = [model(groups[:, 0], "key")]
    ys += [model(groups[:, i], "residual") for i in range(1, k)]
    parts.append(torch.stack(ys, 1).reshape(b, n_groups * k, *ys[0].shape[1:]))
  model.reset_state()
  return torch.cat(parts, 1) if len(parts) > 1 else parts[0]


def make_job(
  job: str,
  model_kwargs: dict,
  flat: dict,
  clip: np.ndarray,
  labels: np.ndarray,
  *,
  period: int,
  lr: float,
):
  """A zero-argument callable running one step / evaluation of ``job`` (see bench_peer.py):
  'fp_train' (frames folded, BatchNorm batch statistics), 'fq_qat' / 'resq_qat' (``run_clip``,
  frozen folded BatchNorm), each forward + cross-entropy + backward + ``torch.optim.Adam``
  step; 'fp_eval' / 'resq_eval' (``run_clip`` under ``torch.inference_mode``).
  ``clip [B, T, H, W, C]`` (NHWC, as resq_jax) and ``labels [B, T, H, W]``."""
  model = TSegNet(**model_kwargs)
  model.load_flax(flat)
  tclip = torch.from_numpy(np.ascontiguousarray(np.asarray(clip).transpose(0, 1, 4, 2, 3)))
  tlabels = torch.from_numpy(np.asarray(labels).astype(np.int64))
  if job.endswith("eval"):

    def evaluate():
      with torch.inference_mode():
        return run_clip(model, tclip, period)

    return evaluate
  opt = torch.optim.Adam(model.parameters(), lr=lr)
  frames, flat_labels = tclip.flatten(0, 1), tlabels.flatten(0, 1)
  clip_period = period if model.mode == "resq" else 1

  def step():
    opt.zero_grad(set_to_none=True)
    if job == "fp_train":
      out = model(frames, "key", train=True)
    else:
      out = run_clip(model, tclip, clip_period).flatten(0, 1)
    loss = F.cross_entropy(out, flat_labels)
    loss.backward()
    opt.step()
    return loss.detach()

  return step


def _memory_worker(argv) -> dict:
  """``peer_torch.py JOB NPZ MODEL_KWARGS_JSON PERIOD LR STEPS``: peak RSS of ``STEPS`` steps in
  a process without JAX (bench_peer.py's memory measurement)."""
  import json  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel

  import peak_rss  # pylint: disable=import-outside-toplevel

  job, path, kwargs, period, lr, steps = argv
  torch.set_num_threads(os.cpu_count())
  data = dict(np.load(path))
  clip, labels = data.pop("__clip"), data.pop("__labels")
  out = {"rss_before_mib": peak_rss.rss_mib()}
  call = make_job(job, json.loads(kwargs), data, clip, labels, period=int(period), lr=float(lr))
  out["reset"] = peak_rss.reset_peak()  # trims freed heap first
  out["rss_before_steps_mib"] = peak_rss.rss_mib()
  for _ in range(int(steps)):
    call()
  out["peak_steps_mib"] = peak_rss.peak_mib()
  return out


__all__ = ["MODES", "TQConv", "TSegNet", "run_clip", "same_pads", "act_fq", "weight_fq", "make_job"]

if __name__ == "__main__":
  import json as _json
  import sys as _sys

  print(_json.dumps(_memory_worker(_sys.argv[1:])))
