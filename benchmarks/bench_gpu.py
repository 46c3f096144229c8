"""Accelerator throughput of SegNet training and evaluation under each quantization family.

Jobs (each in a fresh subprocess, so that its peak device memory is its own):

  train_fp, train_fq, train_resq, train_dynamic   one optimizer step (forward + cross-entropy +
      backward + Adam) on clips ``[B, T, H, W, 3]``; float trains frame-wise with batch-statistics
      BatchNorm as ``train_lib`` does, the quantized families run ``run_clip`` (FQ W4A4, static
      ResQ W8A8 keys / W4A4 residuals, dynamic ResQ fixed-step (0, 2, 4, 8) bits), K = period;
  eval_fp, eval_resq                               ``run_clip`` forward only.

``--fill`` first runs each job at ``--batch`` clips, reads the device's peak memory and reruns it
at the batch that would take ``--fill`` of the device memory (linear in the batch; capped by
``--max_batch``); without a memory reading (CPU) the batch stays. ``--bf16`` runs the float parts
(the float recipe's weights, activations and BatchNorm) in bfloat16 with float32 master weights
and loss; quantized jobs are unaffected (fake quantization needs float32 steps).

Prints one JSON object per job and a Markdown table (clips/s, frames/s, ms/step, compile s, peak
device MiB). Usage:

  python benchmarks/bench_gpu.py [--preset base] [--batch 16] [--fill 0.6] [--bf16]
  python benchmarks/bench_gpu.py --preset tiny --hw 32 --batch 2 --frames 4 --rounds 2  # smoke
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import harness  # benchmarks/harness.py

JOBS = ("train_fp", "train_fq", "train_resq", "train_dynamic", "eval_fp", "eval_resq")


def _recipe(job: str):
  from resq_jax.quant.dynamic import FixedStepPolicy
  from resq_jax.quant.recipe import dynamic_recipe, float_recipe, fq_recipe, resq_recipe

  family = job.split("_", 1)[1]
  return {
    "fp": float_recipe(),
    "fq": fq_recipe(4, 4),
    "resq": resq_recipe((8, 8), (4, 4)),
    "dynamic": dynamic_recipe(FixedStepPolicy(bits=(0, 2, 4, 8))),
  }[family]


def _step_fn(job: str, model, variables, period: int, bf16: bool):
  """``(fn, args)``: a jitted function of one step and its arguments."""
  import jax
  import jax.numpy as jnp
  import optax

  from resq_jax.nn import run_clip

  optimizer = optax.adam(1e-4)
  cast = (lambda t: jax.tree.map(lambda a: a.astype(jnp.bfloat16), t)) if bf16 else (lambda t: t)

  def loss_fn(params, batch_stats, clips, labels):
    if job == "train_fp":
      flat = clips.reshape(-1, *clips.shape[2:])
      logits, mutated = model.apply(
        {"params": cast(params), "batch_stats": cast(batch_stats)},
        cast(flat),
        train=True,
        mutable=["batch_stats"],
      )
      labels = labels.reshape(-1, *labels.shape[2:])
      batch_stats = jax.tree.map(lambda a: a.astype(jnp.float32), mutated["batch_stats"])
    else:
      logits = run_clip(
        model, {"params": params, "batch_stats": batch_stats}, clips, period=period, unroll=True
      ).outputs
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    return jnp.mean(ce), batch_stats

  @jax.jit
  def train_step(params, opt_state, batch_stats, clips, labels):
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, batch_stats, clips, labels
    )
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, batch_stats, loss

  if job.startswith("eval"):
    period_ = period if model.recipe.has_state else 1
    fn = jax.jit(lambda v, c: run_clip(model, v, c, period=period_).outputs)
    return fn, lambda clips, labels: (variables, clips)
  opt_state = optimizer.init(variables["params"])
  return train_step, lambda clips, labels: (
    variables["params"],
    opt_state,
    variables["batch_stats"],
    clips,
    labels,
  )


def _memory_mib(device, key: str) -> float | None:
  """A ``memory_stats()`` entry in MiB (``peak_bytes_in_use``, ``bytes_limit``); None on CPU."""
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if not stats or key not in stats:
    return None
  return stats[key] / 2**20


def run_job(job: str, a) -> dict:
  """One job in this process: compile, warm up, time ``a.rounds`` steps (median)."""
  import jax
  import numpy as np

  from resq_jax.nn import SegNet, segnet_preset
  from resq_jax.nn.calibrate import CalibrationMethods, calibrate_model

  model = SegNet(num_classes=7, recipe=_recipe(job), **segnet_preset(a.preset))
  rng = np.random.default_rng(0)
  shape = (a.batch, a.frames, a.hw, a.hw, 3)
  # Smooth clips (a random field plus small steps), so that residuals are residual-like.
  clips = np.cumsum(0.1 * rng.normal(size=shape), axis=1) + rng.normal(
    size=(a.batch, 1, *shape[2:])
  )
  clips = jax.device_put(clips.astype(np.float32))
  labels = jax.device_put(rng.integers(0, 7, size=shape[:-1]).astype(np.int32))
  variables = model.init(jax.random.key(0), clips[:1, 0], phase="key")
  if model.recipe.is_quantized:
    minmax = CalibrationMethods("minmax", "minmax", "minmax", "minmax")
    variables = calibrate_model(
      model,
      float_model=model.float_twin(),
      variables=variables,
      clips=[clips[:2]],
      period=a.period,
      methods=minmax,
    )
  fn, args = _step_fn(job, model, variables, a.period, a.bf16 and job == "train_fp")
  call = lambda: fn(*args(clips, labels))
  _, compile_s = harness.timed(call)  # the first call compiles
  step_s = harness.time_interleaved({job: call}, a.rounds, warmup=0).median_ms(job) / 1e3
  frames = a.batch * a.frames
  return dict(
    job=job,
    preset=a.preset,
    batch_clips=a.batch,
    frames=a.frames,
    hw=a.hw,
    bf16=bool(a.bf16 and job == "train_fp"),
    ms_per_step=round(1e3 * step_s, 2),
    clips_per_s=round(a.batch / step_s, 1),
    frames_per_s=round(frames / step_s, 1),
    compile_s=round(compile_s, 1),
    peak_mib=_memory_mib(jax.devices()[0], "peak_bytes_in_use"),
    capacity_mib=_memory_mib(jax.devices()[0], "bytes_limit"),
    device=jax.devices()[0].device_kind,
    backend=jax.default_backend(),
    jax=jax.__version__,
  )


def _subprocess(job: str, a, batch: int) -> dict:
  argv = [sys.executable, __file__, "--job", job, "--batch", str(batch)] + [
    f"--{k}={v}"
    for k, v in (
      ("preset", a.preset),
      ("frames", a.frames),
      ("hw", a.hw),
      ("period", a.period),
      ("rounds", a.rounds),
    )
  ]
  argv += ["--bf16"] if a.bf16 else []
  out = subprocess.run(argv, capture_output=True, text=True)
  if out.returncode:
    errors = [line for line in out.stderr.splitlines() if "Error" in line.split(":")[0]]
    return dict(job=job, batch_clips=batch, error=(errors or out.stderr.splitlines() or ["?"])[-1])
  return json.loads(out.stdout.strip().splitlines()[-1])


def _fill_batch(row: dict, a) -> int:
  if not row.get("capacity_mib") or not row.get("peak_mib"):
    return a.batch
  target = int(a.batch * a.fill * row["capacity_mib"] / row["peak_mib"])
  return max(a.batch, min(a.max_batch, target // 8 * 8 or a.batch))


def _table(rows: list[dict]) -> str:
  head = ["job", "clips/step", "clips/s", "frames/s", "ms/step", "compile s", "peak MiB"]
  cells = []
  for r in rows:
    if "error" in r:
      cells.append([r["job"], r["batch_clips"], f"error: {r['error']}", "", "", "", ""])
      continue
    peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
    name = r["job"] + (" (bf16)" if r["bf16"] else "")
    keys = ("batch_clips", "clips_per_s", "frames_per_s", "ms_per_step", "compile_s")
    cells.append([name, *(r[k] for k in keys), peak])
  return harness.markdown_table(head, cells, "lrrrrrr")


def main() -> None:
  p = harness.BenchParser(__doc__, rounds=5)
  p.add_argument("--preset", default="base")
  p.add_argument("--batch", type=int, default=16, help="clips per step (first run)")
  p.add_argument("--frames", type=int, default=8)
  p.add_argument("--hw", type=int, default=128)
  p.add_argument("--period", type=int, default=4)
  p.add_argument("--fill", type=float, default=0.0, help="fraction of device memory to fill")
  p.add_argument("--max_batch", type=int, default=1024)
  p.add_argument("--bf16", action="store_true")
  p.add_argument("--jobs", default=",".join(JOBS))
  p.add_argument("--job", help=argparse.SUPPRESS)  # internal: run one job in this process
  a = p.parse_args()
  if a.job:
    print(json.dumps(run_job(a.job, a)), flush=True)
    return
  # The parent never initialises JAX: a backend here would hold device memory that the jobs need.
  start = time.perf_counter()
  print(harness.machine(["jax", "jaxlib", "flax"], jax=False).text() + "\n", flush=True)
  rows = []
  for job in a.jobs.split(","):
    row = _subprocess(job, a, a.batch)
    if a.fill and "error" not in row:
      batch = _fill_batch(row, a)
      if batch != a.batch:
        row = _subprocess(job, a, batch)
    print(json.dumps(row), flush=True)
    rows.append(row)
  # The table last: gpu_check.sh shows the script's last 8 lines.
  print(harness.footer(start) + "\n", flush=True)
  print(_table(rows), flush=True)


if __name__ == "__main__":
  main()
