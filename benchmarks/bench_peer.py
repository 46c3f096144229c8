"""Peer benchmark: resq_jax against a PyTorch mirror of the same network and quantization.

Five jobs on SegNet ``demo`` (16.8 MMACs per 64x64 frame), 8 clips x 8 frames x 64x64, 7
classes, keyframe period K = 4:

  fp_train    FP training step: frames folded into one batch of 64, BatchNorm batch statistics;
  fq_qat      FQ W4A4 QAT step (frozen, folded BatchNorm; every frame in one batch);
  resq_qat    static ResQ QAT step (W8A8 keys / W4A4 residuals, closed loop): one keyframe step
              on the 16 keyframe groups, then the 3 residual frames (JAX: ``run_clip`` with
              ``unroll=True`` as train_lib with ``train.unroll=True``; PyTorch: a Python loop);
  fp_eval     FP evaluation (``run_clip`` outputs, BatchNorm folded);
  resq_eval   static ResQ evaluation (``run_clip`` outputs, residual scan not unrolled).

A training step is forward + mean softmax cross-entropy + backward + an Adam update (lr 1e-3,
every parameter including the quantizer scales and zero points) in both frameworks. JAX: one
``jax.jit`` per job (parameters and optimizer state donated), compiled ahead of time (the
compile time is reported apart), ``block_until_ready``. PyTorch: eager, ``torch.optim.Adam``
(default implementation), evaluation under ``torch.inference_mode``,
``torch.set_num_threads(os.cpu_count())``. The PyTorch mirror (``benchmarks/peer_torch.py``)
uses PyTorch's own learnable fake-quantization kernels (LSQ gradients).

Order of a run: (1) verification: the same weights in both frameworks, outputs, losses,
gradients and quantization codes compared (printed first); (2) timing: the ten callables
(5 jobs x 2 frameworks) interleaved round-robin in one process, the starting callable rotating
every round; per job the median ms, and the median (interquartile range) over rounds of the
per-round ratio resq_jax / PyTorch; (3) peak memory: one fresh subprocess per framework and job
(``--memory-worker``) reads the resident-set high-water mark (``VmHWM``) around the steps, reset
after setup and after compilation (``benchmarks/peak_rss.py``).

Usage:  python benchmarks/bench_peer.py [--quick] [--rounds N] [--no-memory] [--verify-only]
Needs the ``peer`` extra: ``pip install -e ".[peer]"`` (CPU PyTorch).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  benchmarks/harness.py
import peak_rss  # noqa: E402

from resq_jax.nn import CalibrationMethods, SegNet, calibrate_model, run_clip, segnet_preset  # noqa: E402
from resq_jax.nn.costs import layer_costs, network_macs  # noqa: E402
from resq_jax.quant.recipe import float_recipe, fq_recipe, resq_recipe  # noqa: E402
from resq_jax.quant.spec import activation_spec, residual_spec, weight_spec  # noqa: E402
from resq_jax.quant.uniform import quantize  # noqa: E402

JOBS = ("fp_train", "fq_qat", "resq_qat", "fp_eval", "resq_eval")
JOB_LABELS = {
  "fp_train": "FP training step",
  "fq_qat": "FQ W4A4 QAT step",
  "resq_qat": "static ResQ QAT step (W8A8 key / W4A4 residual, closed, unrolled)",
  "fp_eval": "FP eval",
  "resq_eval": "static ResQ eval",
}
RECIPE_OF_JOB = {
  "fp_train": "float",
  "fq_qat": "fq",
  "resq_qat": "resq",
  "fp_eval": "float",
  "resq_eval": "resq",
}
NUM_CLASSES = 7
PERIOD = 4
LR = 1e-3
KEY_BITS, RES_BITS, FQ_BITS = (8, 8), (4, 4), (4, 4)
MINMAX = CalibrationMethods("minmax", "minmax", "minmax", "minmax")


def recipe(name: str):
  return {
    "float": float_recipe(),
    "fq": fq_recipe(*FQ_BITS),
    "resq": resq_recipe(KEY_BITS, RES_BITS, "closed"),
  }[name]


def make_model(preset: str, name: str) -> SegNet:
  return SegNet(NUM_CLASSES, recipe=recipe(name), **segnet_preset(preset))


def torch_model_kwargs(preset: str, name: str) -> dict:
  bits = FQ_BITS if name == "fq" else KEY_BITS
  return dict(
    num_classes=NUM_CLASSES, mode=name, key_bits=bits, res_bits=RES_BITS, **segnet_preset(preset)
  )


# --------------------------------------------------------------------------------------------
# Data and variables


def make_data(batch: int, frames: int, size: int, seed: int = 0):
  """Smooth random video (a moving textured object on a static background, sensor noise:
  ``bench_resq.moving_object_clip``) and random labels: ``clip [B, T, H, W, 3]`` float32,
  ``labels [B, T, H, W]`` int32."""
  from bench_resq import moving_object_clip  # pylint: disable=import-outside-toplevel

  clip = np.asarray(moving_object_clip(seed, (batch, frames, size, size, 3)), np.float32)
  labels = np.random.default_rng(seed).integers(0, NUM_CLASSES, clip.shape[:4]).astype(np.int32)
  return clip, labels


def _init(model, seed: int, frame) -> dict:
  # Eager: jitting init compiled for 30 s per model here (eager ops are compiled once each).
  return model.init(jax.random.key(seed), frame, phase="key")


def float_variables(preset: str, frame: np.ndarray, seed: int = 0) -> dict:
  """FP variables: Flax init, then BatchNorm scales, offsets and running statistics drawn at
  random (so that folding them into the convs is exercised), deterministic in ``seed``."""
  variables = flax.core.unfreeze(_init(make_model(preset, "float"), seed, frame))
  rng = np.random.default_rng(seed + 1)
  flat = flax.traverse_util.flatten_dict(variables)
  draws = {
    "bn_scale": lambda n: rng.uniform(0.5, 1.5, n),
    "bn_bias": lambda n: rng.normal(0, 0.1, n),
    "mean": lambda n: rng.normal(0, 0.1, n),
    "var": lambda n: rng.uniform(0.5, 1.5, n),
  }
  for path, value in flat.items():
    if path[-1] in draws:
      flat[path] = jnp.asarray(draws[path[-1]](value.shape), jnp.float32)
  return flax.traverse_util.unflatten_dict(flat)


def quant_variables(preset: str, name: str, fp_vars: dict, calib_clip: np.ndarray) -> dict:
  """The FP weights in the quantized model, quantizers calibrated (min-max) on a clip."""
  model = make_model(preset, name)
  fresh = flax.traverse_util.flatten_dict(
    flax.core.unfreeze(_init(model, 0, calib_clip[:, 0])["params"])
  )
  for path, value in flax.traverse_util.flatten_dict(fp_vars["params"]).items():
    fresh[path] = value
  variables = {
    "params": flax.traverse_util.unflatten_dict(fresh),
    "batch_stats": fp_vars["batch_stats"],
  }
  return calibrate_model(
    model,
    float_model=model.float_twin(),
    variables=variables,
    clips=[jnp.asarray(calib_clip)],
    period=PERIOD,
    methods=MINMAX,
  )


def flat_numpy(variables: dict) -> dict:
  return {
    k: np.asarray(v)
    for k, v in flax.traverse_util.flatten_dict(
      {c: variables[c] for c in ("params", "batch_stats")}, sep="/"
    ).items()
  }


def unflat(flat: dict) -> dict:
  return flax.traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()}, sep="/")


# --------------------------------------------------------------------------------------------
# JAX jobs


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def jax_loss_fn(model, job: str):
  """``loss(params, batch_stats, clip, labels) -> (loss, (new_batch_stats, outputs))``."""
  if job == "fp_train":

    def loss(params, batch_stats, clip, labels):
      frames = clip.reshape(-1, *clip.shape[2:])
      out, mutated = model.apply(
        {"params": params, "batch_stats": batch_stats}, frames, train=True, mutable=["batch_stats"]
      )
      return (
        cross_entropy(out, labels.reshape(-1, *labels.shape[2:])),
        (mutated["batch_stats"], out),
      )

    return loss
  period = PERIOD if model.recipe.has_state else 1  # as train_lib: FQ has no temporal state

  def qat_loss(params, batch_stats, clip, labels):
    out = run_clip(
      model, {"params": params, "batch_stats": batch_stats}, clip, period=period, unroll=True
    ).outputs
    return cross_entropy(out, labels), (batch_stats, out)

  return qat_loss


def jax_job(job: str, model, variables: dict, clip, labels):
  """``(compiled function, argument tuple, call)``: ``call()`` runs one step / evaluation and
  keeps the training state (donated buffers) in a closure."""
  if job.endswith("eval"):
    fn = jax.jit(lambda v, c: run_clip(model, v, c, period=PERIOD).outputs)
    args = ({"params": variables["params"], "batch_stats": variables["batch_stats"]}, clip)
    return fn, args, None
  opt = optax.adam(LR)
  loss_fn = jax_loss_fn(model, job)

  def step(params, opt_state, batch_stats, clip, labels):
    (loss, (batch_stats, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, batch_stats, clip, labels
    )
    with jax.numpy_dtype_promotion("standard"):  # optax's int32 step count (strict-mode tests)
      updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, batch_stats, loss

  params = jax.tree.map(jnp.array, variables["params"])  # own copies: they are donated
  batch_stats = jax.tree.map(jnp.array, variables["batch_stats"])
  fn = jax.jit(step, donate_argnums=(0, 1, 2))
  return fn, (params, opt.init(params), batch_stats, clip, labels), None


def jax_caller(job: str, compiled, args):
  if job.endswith("eval"):
    return lambda: compiled(*args)
  state = list(args[:3])

  def call():
    p, o, b, loss = compiled(*state, *args[3:])
    state[:] = [p, o, b]
    return loss

  return call


# --------------------------------------------------------------------------------------------
# PyTorch jobs (torch imported lazily: the extra is optional)


OMP_DEFAULT_WAIT_POLICY = "PASSIVE"


def torch_setup(threads: int | None = None):
  """Import torch with ``threads`` intra-op threads (default: the core count).

  ``OMP_WAIT_POLICY`` defaults to PASSIVE here (an explicit setting in the environment wins; it
  must be set before torch loads libgomp): with the default active policy, OpenMP worker threads
  spin after every parallel region and, in a process that interleaves PyTorch with XLA's own
  thread pool on the same cores (or on a loaded machine), PyTorch ran 10-40x slower (measured:
  SegNet demo FP eval of 16 frames 0.2-0.8 s instead of 19 ms on 2 cores, load average 5).
  """
  os.environ.setdefault("OMP_WAIT_POLICY", OMP_DEFAULT_WAIT_POLICY)
  import torch  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(threads or os.cpu_count())
  return torch


def torch_job(job: str, preset: str, flat: dict, clip: np.ndarray, labels: np.ndarray):
  """A zero-argument callable running one PyTorch step / evaluation of ``job``."""
  import peer_torch  # pylint: disable=import-outside-toplevel

  torch_setup()
  return peer_torch.make_job(
    job, torch_model_kwargs(preset, RECIPE_OF_JOB[job]), flat, clip, labels, period=PERIOD, lr=LR
  )


# --------------------------------------------------------------------------------------------
# Verification


def rel_l2(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _jax_codes(model, variables, clip, name: str) -> list:
  """Per quantizer call, in execution order per layer: ``{layer: [(phase, act codes NCHW,
  weight codes OIHW)]}`` of resq_jax, frame by frame with the grouping of ``run_clip``."""
  params = flax.traverse_util.flatten_dict(variables["params"], sep="/")
  base = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
  apply = jax.jit(
    lambda v, x, phase: model.apply(v, x, phase=phase, mutable=["calibration", "resq_state"]),
    static_argnums=2,
  )
  b, t = clip.shape[:2]
  if name == "fq":
    steps = [(clip.reshape(b * t, *clip.shape[2:]), "key")]
  else:
    groups = clip.reshape(b * (t // PERIOD), PERIOD, *clip.shape[2:])
    steps = [(groups[:, i], "key" if i == 0 else "residual") for i in range(PERIOD)]
  out, state = {}, None
  for frames, phase in steps:
    v = dict(base, resq_state=state) if state is not None else base
    _, mutated = apply(v, jnp.asarray(frames), phase)
    obs = flax.traverse_util.flatten_dict(mutated["calibration"], sep="/")
    old_ref = {} if state is None else flax.traverse_util.flatten_dict(state, sep="/")
    for key in [k for k in obs if k.endswith("/x")]:
      layer = key[:-2]
      x, w = obs[key], obs[layer + "/w"]
      p = lambda leaf, layer=layer: params[f"{layer}/{leaf}"]
      if phase == "key":
        a = quantize(
          x,
          p("key_a_scale"),
          p("key_a_zero_point"),
          spec=activation_spec(model.recipe.key.act.bits),
        )
        wq = quantize(w, p("key_w_scale"), spec=weight_spec(model.recipe.key.weight.bits))
      else:
        r = x - old_ref[f"{layer}/ref"]
        a = quantize(r, p("res_a_scale"), spec=residual_spec(model.recipe.residual.act.bits))
        wq = quantize(w, p("res_w_scale"), spec=weight_spec(model.recipe.residual.weight.bits))
      out.setdefault(layer, []).append(
        (phase, np.asarray(a).transpose(0, 3, 1, 2), np.asarray(wq).transpose(3, 2, 0, 1))
      )
    state = mutated.get("resq_state")
  return out


def _code_diff(jax_codes: dict, torch_model) -> dict:
  n_a = d_a = n_w = d_w = 0
  max_a = 0.0
  for layer, calls in jax_codes.items():
    recorded = torch_model.conv(layer).record
    assert len(recorded) == len(calls), (layer, len(recorded), len(calls))
    for (phase, a, w), (tphase, ta, tw) in zip(calls, recorded):
      assert phase == tphase
      ta, tw = ta.numpy(), tw.numpy()
      n_a += a.size
      d_a += int(np.sum(a != ta))
      max_a = max(max_a, float(np.max(np.abs(a - ta))))
      n_w += w.size
      d_w += int(np.sum(w != tw))
  return {
    "act_codes": n_a,
    "act_code_diff_frac": d_a / n_a,
    "act_code_max_diff": max_a,
    "weight_codes": n_w,
    "weight_code_diff_frac": d_w / n_w,
  }


def verify(
  preset: str = "tiny",
  batch: int = 2,
  frames: int = 8,
  size: int = 32,
  seed: int = 0,
  train: bool = True,
  data=None,
) -> dict:
  """Copy resq_jax's weights into the PyTorch mirror and compare, per recipe: outputs (relative
  L2 over the clip), the loss, gradients of every parameter (pooled relative L2 and the worst
  leaf), parameters after one Adam step, and for quantized recipes the integer codes of every
  activation / residual and weight quantizer call (fraction that differ). ``train=False``:
  evaluation outputs and codes only (no gradients; faster). ``data``: ``(clip, labels,
  {'float' | 'fq' | 'resq': variables})`` already built (else made from the arguments)."""
  import peer_torch  # pylint: disable=import-outside-toplevel

  torch = torch_setup()
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  if data is None:
    clip, labels = make_data(batch, frames, size, seed)
    calib, _ = make_data(batch, frames, size, seed + 1)
    fp_vars = float_variables(preset, clip[:1, 0], seed)
    built = {"float": fp_vars, "fq": None, "resq": None}
  else:
    clip, labels, built = data
  tclip = torch.from_numpy(np.ascontiguousarray(clip.transpose(0, 1, 4, 2, 3)))
  tlabels = torch.from_numpy(labels.astype(np.int64))
  results = {}
  for name in ("float", "fq", "resq"):
    model = make_model(preset, name)
    variables = built[name] or quant_variables(preset, name, built["float"], calib)
    flat = flat_numpy(variables)
    tmodel = peer_torch.TSegNet(**torch_model_kwargs(preset, name))
    tmodel.load_flax(flat)
    res = {}
    # Evaluation outputs.
    y = np.asarray(run_clip(model, variables, jnp.asarray(clip), period=PERIOD).outputs)
    if name != "float":
      for layer in tmodel.convs.values():
        layer.record = []
    with torch.no_grad():
      ty = peer_torch.run_clip(tmodel, tclip, PERIOD).numpy().transpose(0, 1, 3, 4, 2)
    res["eval_out_rel_l2"] = rel_l2(ty, y)
    if name != "float":
      res.update(_code_diff(_jax_codes(model, variables, clip, name), tmodel))
      for layer in tmodel.convs.values():
        layer.record = None
    if not train:
      results[name] = res
      continue
    # One training step: loss, gradients, parameters after Adam.
    job = {"float": "fp_train", "fq": "fq_qat", "resq": "resq_qat"}[name]
    loss_fn = jax_loss_fn(model, job)
    (loss, (new_bs, out)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      variables["params"], variables["batch_stats"], jnp.asarray(clip), jnp.asarray(labels)
    )
    opt = optax.adam(LR)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 step count with floats
      updates, _ = opt.update(grads, opt.init(variables["params"]), variables["params"])
    new_params = optax.apply_updates(variables["params"], updates)
    topt = torch.optim.Adam(tmodel.parameters(), lr=LR)
    if job == "fp_train":
      tout = tmodel(tclip.flatten(0, 1), "key", train=True)
    else:
      tout = peer_torch.run_clip(tmodel, tclip, PERIOD if name == "resq" else 1).flatten(0, 1)
    tloss = F.cross_entropy(tout, tlabels.flatten(0, 1))
    tloss.backward()
    topt.step()
    res["train_out_rel_l2"] = rel_l2(
      tout.detach().numpy().transpose(0, 2, 3, 1),
      np.asarray(out).reshape(-1, *np.asarray(out).shape[-3:]),
    )
    res["loss_rel"] = abs(float(tloss.detach()) - float(loss)) / abs(float(loss))
    jg = {
      f"params/{k}": np.asarray(v)
      for k, v in flax.traverse_util.flatten_dict(grads, sep="/").items()
    }
    tg = tmodel.flax_grads()
    assert set(jg) == set(tg), sorted(set(jg) ^ set(tg))
    per_leaf = {k: rel_l2(tg[k], jg[k]) for k in jg}
    groups = {
      "weights": lambda k: k.split("/")[-1] in ("kernel", "bias", "bn_scale", "bn_bias"),
      "quantizers": lambda k: k.split("/")[-1].startswith(("key_", "res_")),
    }
    for gname, sel in groups.items():
      keys = [k for k in jg if sel(k)]
      if keys:
        res[f"grad_{gname}_rel_l2"] = rel_l2(
          np.concatenate([tg[k].ravel() for k in keys]),
          np.concatenate([jg[k].ravel() for k in keys]),
        )
        worst = max(keys, key=per_leaf.get)
        res[f"grad_{gname}_worst_leaf"] = (worst, per_leaf[worst])
    tflat = {
      f"params/{n.replace('__', '/')}/{('kernel' if a == 'weight' else a)}": p.detach()
      for n, layer in tmodel.convs.items()
      for a, p in layer.named_parameters()
    }
    jp = flax.traverse_util.flatten_dict(new_params, sep="/")
    step_err = []
    for k, v in jp.items():
      t = tflat[f"params/{k}"].numpy()
      t = t.transpose(2, 3, 1, 0) if k.endswith("kernel") else t.reshape(np.shape(v))
      step_err.append(np.max(np.abs(t - np.asarray(v))))
    res["adam_step_max_abs_param_diff"] = float(max(step_err))
    if job == "fp_train":
      jbs = flax.traverse_util.flatten_dict(new_bs, sep="/")
      res["bn_running_mean_rel_l2"] = rel_l2(
        np.concatenate([tmodel.conv(k[:-5]).mean.numpy() for k in jbs if k.endswith("/mean")]),
        np.concatenate([np.asarray(v) for k, v in jbs.items() if k.endswith("/mean")]),
      )
      res["bn_running_var_rel_l2"] = rel_l2(
        np.concatenate([tmodel.conv(k[:-4]).var.numpy() for k in jbs if k.endswith("/var")]),
        np.concatenate([np.asarray(v) for k, v in jbs.items() if k.endswith("/var")]),
      )
    results[name] = res
  return results


def format_verification(results: dict, preset: str, shape) -> str:
  lines = [
    f"## Verification (SegNet `{preset}`, clip {list(shape)}, K = {PERIOD}; same "
    "weights and quantizer parameters in both)",
    "",
  ]
  head = [
    "recipe",
    "eval out rel L2",
    "act codes differing",
    "weight codes differing",
    "train-mode out rel L2",
    "loss rel diff",
    "grad rel L2 (weights)",
    "grad rel L2 (quantizers)",
    "max |param diff| after Adam",
  ]
  trained = "loss_rel" in results["float"]
  head = head if trained else head[:4]
  rows = []
  for name, r in results.items():
    frac = lambda k, n, r=r: f"{r[k]:.2e} of {r[n]:,}" if k in r else "-"
    row = [
      name,
      f"{r['eval_out_rel_l2']:.1e}",
      frac("act_code_diff_frac", "act_codes"),
      frac("weight_code_diff_frac", "weight_codes"),
    ]
    if trained:
      row += [
        f"{r['train_out_rel_l2']:.1e}",
        f"{r['loss_rel']:.1e}",
        f"{r['grad_weights_rel_l2']:.1e}",
        f"{r['grad_quantizers_rel_l2']:.1e}" if "grad_quantizers_rel_l2" in r else "-",
        f"{r['adam_step_max_abs_param_diff']:.1e}",
      ]
    rows.append(row)
  lines.append(harness.markdown_table(head, rows))
  if not trained:
    lines += [
      "",
      "(--quick: evaluation outputs and codes only; the full run also compares "
      "a training step: loss, gradients, parameters after Adam.)",
    ]
    return "\n".join(lines)
  fl = results["float"]
  lines += [
    "",
    f"BatchNorm running statistics after the FP step: mean rel L2 "
    f"{fl['bn_running_mean_rel_l2']:.1e}, var rel L2 {fl['bn_running_var_rel_l2']:.1e} "
    "(PyTorch updates the running variance with the unbiased batch variance, resq_jax "
    "with the biased one).",
  ]
  worst = [
    f"{n}: {r['grad_weights_worst_leaf'][0]} {r['grad_weights_worst_leaf'][1]:.1e}"
    + (
      f", {r['grad_quantizers_worst_leaf'][0]} {r['grad_quantizers_worst_leaf'][1]:.1e}"
      if "grad_quantizers_worst_leaf" in r
      else ""
    )
    for n, r in results.items()
  ]
  lines.append("Worst gradient leaf (rel L2): " + "; ".join(worst) + ".")
  return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Timing


def _sync(out):
  """Wait for a step's result: PyTorch runs eagerly (its tensor is already computed; converted
  all the same, so that both frameworks' timed spans end alike), JAX dispatches asynchronously."""
  import torch  # pylint: disable=import-outside-toplevel

  if isinstance(out, torch.Tensor):
    out = out.detach().numpy()
  return jax.block_until_ready(out)


# --------------------------------------------------------------------------------------------
# Peak memory (fresh subprocesses)


def memory_worker(framework: str, job: str, preset: str, data_path: str, steps: int) -> dict:
  """Run in a fresh process: set up ``job``, compile (JAX), run ``steps`` steps; the peaks."""
  data = dict(np.load(data_path))
  clip, labels = data.pop("__clip"), data.pop("__labels")
  out = {"rss_before_mib": peak_rss.rss_mib()}
  if framework == "jax":
    fn, args, _ = jax_job(
      job,
      make_model(preset, RECIPE_OF_JOB[job]),
      unflat(data),
      jnp.asarray(clip),
      jnp.asarray(labels),
    )
    out["rss_before_mib"] = peak_rss.rss_mib()
    out["reset"] = peak_rss.reset_peak()
    compiled, out["compile_s"] = harness.compile_ahead(fn, *args)
    out["peak_compile_mib"] = peak_rss.peak_mib()
    call = jax_caller(job, compiled, args)
  else:  # pragma: no cover - the PyTorch worker is peer_torch.py's main
    raise ValueError(framework)
  out["reset"] = peak_rss.reset_peak()  # trims freed heap first
  out["rss_before_steps_mib"] = peak_rss.rss_mib()
  for _ in range(steps):
    jax.block_until_ready(call()) if framework == "jax" else call()
  out["peak_steps_mib"] = peak_rss.peak_mib()
  return out


def measure_memory(jobs_data: dict, preset: str, steps: int) -> dict:
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    for job, (flat, clip, labels) in jobs_data.items():
      path = os.path.join(tmp, f"{job}.npz")
      np.savez(path, __clip=clip, __labels=labels, **flat)
      for fw in ("jax", "torch"):
        harness.log(f"memory: {fw} {job}")
        if fw == "jax":
          cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--memory-worker",
            fw,
            job,
            path,
            "--preset",
            preset,
            "--memory-steps",
            str(steps),
          ]
        else:  # without JAX in the process
          cmd = [
            sys.executable,
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_torch.py"),
            job,
            path,
            json.dumps(torch_model_kwargs(preset, RECIPE_OF_JOB[job])),
            str(PERIOD),
            str(LR),
            str(steps),
          ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
          raise RuntimeError(f"memory worker {fw} {job} failed:\n{proc.stderr[-3000:]}")
        results[(job, fw)] = json.loads(proc.stdout.strip().splitlines()[-1])
  return results


# --------------------------------------------------------------------------------------------


def header(threads: int) -> str:
  import torch  # pylint: disable=import-outside-toplevel

  return "\n".join(
    [
      "# Peer benchmark: resq_jax vs PyTorch",
      "",
      harness.machine(["flax", "optax", "torch"]).text(),
      f"- torch: eager, torch.set_num_threads({threads}), {torch.get_num_interop_threads()} "
      f"interop threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
    ]
  )


def main():
  parser = harness.BenchParser(
    __doc__,
    rounds=7,
    quick_rounds=3,
    quick_help="a short run (mostly XLA compilation: 3.5 min at load average 7-9 on 2 cores, "
    "meant for < 2 min idle): >= 3 rounds, 2 clips, verification of evaluation only, no memory "
    "subprocesses",
  )
  parser.add_argument("--preset", default="demo")
  parser.add_argument(
    "--clips", type=int, default=None, help="clips per batch (default 8, 2 with --quick)"
  )
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument(
    "--memory",
    action=argparse.BooleanOptionalAction,
    default=None,
    help="peak memory in subprocesses (default: on, off with --quick)",
  )
  parser.add_argument("--verify-only", action="store_true")
  parser.add_argument(
    "--memory-worker", nargs=3, metavar=("FRAMEWORK", "JOB", "NPZ"), help=argparse.SUPPRESS
  )
  parser.add_argument("--memory-steps", type=int, default=None)
  args = parser.parse_args()
  if args.memory_worker:
    fw, job, path = args.memory_worker
    if fw == "jax":
      jax.config.update("jax_platforms", "cpu")
    print(json.dumps(memory_worker(fw, job, args.preset, path, args.memory_steps or 3)))
    return
  args.clips = args.clips or (2 if args.quick else 8)
  budget = 10.0 if args.quick else 240.0
  t_start = time.perf_counter()
  torch = torch_setup()
  threads = torch.get_num_threads()
  print(header(threads), flush=True)

  if not args.quick:
    harness.log("verification (tiny)")
    shape = (2, 8, 32, 32, 3)
    print("\n" + format_verification(verify("tiny", *shape[:3]), "tiny", shape), flush=True)

  clip, labels = make_data(args.clips, args.frames, args.size, seed=0)
  calib, _ = make_data(args.clips, args.frames, args.size, seed=1)
  fp_vars = float_variables(args.preset, clip[:1, 0])
  variables = {"float": fp_vars}
  for name in ("fq", "resq"):
    harness.log(f"calibrating {name}")
    variables[name] = quant_variables(args.preset, name, fp_vars, calib)
  # The timed preset and weights, on the first two clips (--quick: evaluation only).
  harness.log(f"verification ({args.preset})")
  vdata = (clip[:2], labels[:2], variables)
  print(
    "\n"
    + format_verification(
      verify(args.preset, train=not args.quick, data=vdata), args.preset, clip[:2].shape
    ),
    flush=True,
  )
  if args.verify_only:
    return
  macs = network_macs(layer_costs(make_model(args.preset, "float"), fp_vars, clip[:1, 0]))
  jclip, jlabels = jnp.asarray(clip), jnp.asarray(labels)
  fns, compile_s, jobs_data = {}, {}, {}
  for job in JOBS:
    name = RECIPE_OF_JOB[job]
    harness.log(f"compiling {job}")
    fn, fargs, _ = jax_job(job, make_model(args.preset, name), variables[name], jclip, jlabels)
    compiled, compile_s[job] = harness.compile_ahead(fn, *fargs)
    fns[(job, "jax")] = jax_caller(job, compiled, fargs)
    flat = flat_numpy(variables[name])
    fns[(job, "torch")] = torch_job(job, args.preset, flat, clip, labels)
    jobs_data[job] = (flat, clip, labels)

  load_before = harness.load_text()
  harness.log("timing")
  # The 10 callables round-robin in one process, the starting one rotating every round.
  times = harness.time_interleaved(fns, args.rounds, budget_s=budget, max_rounds=30, sync=_sync)
  load_after = harness.load_text()
  memory = None
  if args.memory if args.memory is not None else not args.quick:
    memory = measure_memory(jobs_data, args.preset, args.memory_steps or (2 if args.quick else 3))

  n_frames = args.clips * args.frames
  print(
    "\n"
    + "\n".join(
      [
        f"## Timing: SegNet `{args.preset}` ({macs / 1e6:.1f} MMACs per {args.size}x{args.size} "
        f"frame), {args.clips} clips x {args.frames} frames x {args.size}x{args.size}, "
        f"K = {PERIOD}",
        "",
        f"- {load_before} (before timing), {load_after} (after)",
        f"- {times.rounds} round-robin rounds of the 10 callables after one "
        "warm-up call each; ms per step (a whole batch of clips); ratio: median (interquartile "
        "range) over rounds of resq_jax / PyTorch in the same round",
        "",
      ]
    ),
    flush=True,
  )
  rows = []
  for job in JOBS:
    mj, mt = times.median_ms((job, "jax")), times.median_ms((job, "torch"))
    row = [
      JOB_LABELS[job],
      f"{mj:.0f}",
      f"{mt:.0f}",
      times.ratio_text((job, "jax"), (job, "torch")),
      f"{1e3 * n_frames / mj:.0f} / {1e3 * n_frames / mt:.0f}",
      f"{compile_s[job]:.1f}",
    ]
    if memory:
      mj, mt = memory[(job, "jax")], memory[(job, "torch")]
      row += [
        f"{mj['peak_steps_mib']:.0f} (+{mj['peak_steps_mib'] - mj['rss_before_steps_mib']:.0f})",
        f"{mt['peak_steps_mib']:.0f} (+{mt['peak_steps_mib'] - mt['rss_before_steps_mib']:.0f})",
        f"{mj['peak_compile_mib']:.0f}",
      ]
    rows.append(row)
  head = [
    "job",
    "resq_jax ms (median)",
    "PyTorch ms (median)",
    "resq_jax / PyTorch (IQR)",
    "frames/s jax / torch",
    "JAX compile s",
  ]
  if memory:
    head += [
      "resq_jax peak RSS MiB (+ over pre-step)",
      "PyTorch peak RSS MiB (+ over pre-step)",
      "resq_jax peak RSS during compile MiB",
    ]
  print(harness.markdown_table(head, rows), flush=True)
  notes = [
    "",
    "JAX compile s: `jit(...).lower(...).compile()` of the step in the timing "
    "process (tracing + XLA), not included in the step times; PyTorch runs eagerly "
    "(no compilation).",
  ]
  if memory:
    reset = all(m.get("reset") for m in memory.values())
    notes.append(
      "Peak memory: each (framework, job) in a fresh subprocess (same weights and data from "
      "an .npz; the PyTorch one never imports JAX, the JAX one never imports torch); "
      f"resident-set high-water mark `VmHWM` over {args.memory_steps or (2 if args.quick else 3)} "
      "steps (the first included; JAX compiled before), "
      + (
        "freed heap returned to the OS (`malloc_trim`) and the mark reset "
        "(`/proc/self/clear_refs`) after setup and after compilation, so the step peak "
        "excludes the compiler's; "
        if reset
        else "NOT reset (cumulative: /proc/self/clear_refs unavailable); "
      )
      + "in parentheses the rise over the RSS just before the first step (the framework, "
      "the model and the data were already resident)."
    )
  print("\n".join(notes), flush=True)
  print("\n" + harness.footer(t_start))


if __name__ == "__main__":
  main()
