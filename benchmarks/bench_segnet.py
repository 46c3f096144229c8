"""SegNet MACs, parameters and CPU throughput on 64x64 frames (docs/model.md)."""

import json
import sys
import time

import harness  # benchmarks/harness.py
import jax
import numpy as np
import optax

from resq_jax.nn import SegNet, layer_costs, network_macs, run_clip, segnet_preset
from resq_jax.quant.recipe import resq_recipe


def median_fps(f, args, frames, n):
  t = harness.time_interleaved({"f": lambda: f(*args)}, n)  # one warm-up call (after compiling)
  return dict(
    fps_median=round(1e3 * frames / t.median_ms("f"), 1),
    fps_best=round(1e3 * frames / t.min_ms("f"), 1),
    cpu_ms_per_frame=round(t.cpu_median_ms("f") / frames, 2),
  )


def bench(kw, batch=16, hw=64, n=15):
  model, qmodel = SegNet(7, **kw), SegNet(7, **kw, recipe=resq_recipe((8, 8), (4, 4)))
  rng = np.random.default_rng(0)
  x = jax.numpy.asarray(rng.normal(size=(batch, hw, hw, 3)), "float32")
  y = jax.numpy.asarray(rng.integers(0, 7, size=(batch, hw, hw)), "int32")
  v, qv = (
    model.init(jax.random.key(0), x[:1], phase="key"),
    qmodel.init(jax.random.key(0), x[:1], phase="key"),
  )
  ce = lambda out, y: optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

  def train_loss(p, bs, x, y):
    out, mut = model.apply({"params": p, "batch_stats": bs}, x, train=True, mutable=["batch_stats"])
    return ce(out, y), mut

  def qat_loss(p, c, y):  # ResQ W8A8 keys / W4A4 residuals, 2 clips x 8 frames, K = 4
    return ce(run_clip(qmodel, dict(qv, params=p), c, period=4, unroll=3).outputs, y)

  clip, ylab = x.reshape(2, batch // 2, hw, hw, 3), y.reshape(2, batch // 2, hw, hw)
  jobs = {
    "float_train": (
      jax.jit(jax.grad(train_loss, has_aux=True)),
      (v["params"], v["batch_stats"], x, y),
    ),
    "float_eval": (jax.jit(model.apply), (v, x)),
    "resq_qat": (jax.jit(jax.grad(qat_loss)), (qv["params"], clip, ylab)),
    "resq_eval": (jax.jit(lambda v, c: run_clip(qmodel, v, c, period=4).outputs), (qv, clip)),
  }
  out = dict(
    kw=kw,
    macs=network_macs(layer_costs(model, v, x[:1])),
    params=int(sum(p.size for p in jax.tree.leaves(v["params"]))),
  )
  for name, (f, args) in jobs.items():
    _, compile_s = harness.timed(lambda f=f, args=args: f(*args))  # the first call compiles
    out[name] = dict(compile_s=round(compile_s, 1), **median_fps(f, args, batch, n))
  return out


if __name__ == "__main__":
  start = time.perf_counter()
  print(harness.machine().text() + "\n", flush=True)
  for arg in sys.argv[1:] or ["tiny", "demo", "base"]:
    kw = json.loads(arg) if arg.startswith("{") else segnet_preset(arg)
    print(json.dumps(bench(kw)), "loadavg", harness.load_average(), flush=True)
  print("\n" + harness.footer(start), flush=True)
