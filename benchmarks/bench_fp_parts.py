"""Where the float training step loses to PyTorch on CPU: component timings, both frameworks.

Times forward + backward (gradients wrt input and parameters) of the pieces of SegNet `demo`'s
float training step on the peer benchmark's batch (8 clips x 8 frames = 64 frames of 64x64),
in JAX (jitted) and in eager PyTorch, interleaved round-robin:

  * stem1: the 3 -> 24 channel 3x3 stride-2 conv on 64x64 frames;
  * conv24: a 24 -> 24 3x3 conv on the 16x16 maps of branch 0 (the most frequent conv);
  * conv48: a 48 -> 48 3x3 conv on the 8x8 maps of branch 1;
  * bn24: BatchNorm training math (batch statistics, normalisation) on [64, 16, 16, 24].

  python benchmarks/bench_fp_parts.py [--rounds N]      # needs the [peer] extra (torch)
"""

from __future__ import annotations

import os
import time

import harness  # benchmarks/harness.py
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

N = 64  # frames per step in the peer benchmark


def _jax_conv(cin, cout, hw, stride):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(N, hw, hw, cin)), jnp.float32)
  w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, cin, cout)) * 0.1, jnp.float32)

  def loss(x, w):
    y = jax.lax.conv_general_dilated(
      x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jnp.sum(y * y)

  f = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return lambda: jax.block_until_ready(f(x, w))


def _torch_conv(cin, cout, hw, stride):
  x = torch.randn(N, cin, hw, hw, requires_grad=True)
  w = (0.1 * torch.randn(cout, cin, 3, 3)).requires_grad_()

  def step():
    xp = F.pad(x, (0, 1, 0, 1)) if stride == 2 else x
    y = F.conv2d(xp, w, stride=stride, padding=0 if stride == 2 else 1)
    (y * y).sum().backward()
    x.grad = w.grad = None

  return step


def _jax_bn(hw, c):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(N, hw, hw, c)), jnp.float32)
  g, b = jnp.ones((c,)), jnp.zeros((c,))

  def loss(x, g, b):
    mu = jnp.mean(x, axis=(0, 1, 2))
    var = jnp.maximum(jnp.mean(x * x, axis=(0, 1, 2)) - mu * mu, 0.0)
    y = (x - mu) * (g * jax.lax.rsqrt(var + 1e-5)) + b
    return jnp.sum(y * y)

  f = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  return lambda: jax.block_until_ready(f(x, g, b))


def _torch_bn(hw, c):
  x = torch.randn(N, c, hw, hw, requires_grad=True)
  bn = torch.nn.BatchNorm2d(c)

  def step():
    y = bn(x)
    (y * y).sum().backward()
    x.grad = None
    bn.zero_grad()

  return step


PARTS = {
  "stem1 3->24 s2 @64x64": (lambda: _jax_conv(3, 24, 64, 2), lambda: _torch_conv(3, 24, 64, 2)),
  "conv 24->24 @16x16": (lambda: _jax_conv(24, 24, 16, 1), lambda: _torch_conv(24, 24, 16, 1)),
  "conv 48->48 @8x8": (lambda: _jax_conv(48, 48, 8, 1), lambda: _torch_conv(48, 48, 8, 1)),
  "BatchNorm train [64,16,16,24]": (lambda: _jax_bn(16, 24), lambda: _torch_bn(16, 24)),
}


def main() -> None:
  a = harness.BenchParser(__doc__, rounds=30).parse_args()
  start = time.perf_counter()
  torch.set_num_threads(os.cpu_count() or 1)
  print(harness.machine(["torch"]).text() + "\n", flush=True)
  head = ["part (fwd + bwd, 64 frames)", "JAX ms", "PyTorch ms", "JAX / PyTorch (IQR)"]
  print(harness.table_head(head, "lrrl"), flush=True)
  for name, (make_jax, make_torch) in PARTS.items():
    # Round-robin, the starting step rotating every round, so that both see the same load.
    t = harness.time_interleaved({"jax": make_jax(), "torch": make_torch()}, a.rounds, sync=None)
    cells = [f"{t.median_ms('jax'):.1f}", f"{t.median_ms('torch'):.1f}"]
    print(harness.table_row([name, *cells, t.ratio_text("jax", "torch", unit="")]), flush=True)
  print("\n" + harness.footer(start), flush=True)


if __name__ == "__main__":
  main()
