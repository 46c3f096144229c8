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

import argparse
import datetime
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from machine import cpu_model  # benchmarks/machine.py

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


def round_robin(steps: dict, rounds: int) -> dict:
  """Seconds per call of each step over ``rounds`` rounds (one warm-up call each first), the
  starting step rotating every round so that both see the same load."""
  for step in steps.values():
    step()
  names, times = list(steps), {name: [] for name in steps}
  for r in range(rounds):
    for name in names[r % len(names) :] + names[: r % len(names)]:
      t0 = time.perf_counter()
      steps[name]()
      times[name].append(time.perf_counter() - t0)
  return times


PARTS = {
  "stem1 3->24 s2 @64x64": (lambda: _jax_conv(3, 24, 64, 2), lambda: _torch_conv(3, 24, 64, 2)),
  "conv 24->24 @16x16": (lambda: _jax_conv(24, 24, 16, 1), lambda: _torch_conv(24, 24, 16, 1)),
  "conv 48->48 @8x8": (lambda: _jax_conv(48, 48, 8, 1), lambda: _torch_conv(48, 48, 8, 1)),
  "BatchNorm train [64,16,16,24]": (lambda: _jax_bn(16, 24), lambda: _torch_bn(16, 24)),
}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rounds", type=int, default=30)
  a = p.parse_args()
  torch.set_num_threads(os.cpu_count() or 1)
  print(
    f"# {datetime.datetime.now():%Y-%m-%d %H:%M} {cpu_model()}, {os.cpu_count()} cores, "
    f"jax {jax.__version__}, torch {torch.__version__}, load {os.getloadavg()}",
    flush=True,
  )
  print("| part (fwd + bwd, 64 frames) | JAX ms | PyTorch ms | JAX / PyTorch (IQR) |")
  print("| --- | ---: | ---: | --- |")
  for name, (make_jax, make_torch) in PARTS.items():
    jax_step, torch_step = make_jax(), make_torch()
    times = round_robin({"jax": jax_step, "torch": torch_step}, a.rounds)
    ratio = np.asarray(times["jax"]) / np.asarray(times["torch"])
    q1, q3 = np.percentile(ratio, [25, 75])
    print(
      f"| {name} | {1e3 * np.median(times['jax']):.1f} | "
      f"{1e3 * np.median(times['torch']):.1f} | {np.median(ratio):.2f} ({q1:.2f}-{q3:.2f}) |",
      flush=True,
    )
  print(f"# load after {os.getloadavg()}", flush=True)


if __name__ == "__main__":
  main()
