"""Real pretrained networks on real video: the TFLite importer's verification against LiteRT and
each model's per-layer cost table (the first half of docs/real_models.md).

  python benchmarks/real_assets.py --out runs/real      # models and videos (once)
  pip install -e ".[litert]"                            # the runtime to verify against
  python benchmarks/real_models.py --assets runs/real --out runs/real/report

Writes ``verification.md`` and ``costs.md`` under ``--out`` and prints both. Verification runs
every frame of every video (scaled to cover the model's input and centre-cropped) through the
imported module and through LiteRT, with XNNPACK (LiteRT's default CPU path) and with its builtin
kernels where they run the model (MediaPipe's custom transposed convolution runs only under
XNNPACK), and against the same graph evaluated in float64, and reports per output the largest
absolute error and that error relative to the output's largest magnitude.
"""

from __future__ import annotations

import pathlib
import sys
import time

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


def main(argv=None) -> None:
  parser = BenchParser(__doc__)
  parser.add_argument("--assets", default="runs/real", help="real_assets.py's --out")
  parser.add_argument("--out", default="runs/real/report")
  parser.add_argument("--stride", type=int, default=4, help="verify every N-th frame")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  assets, out = pathlib.Path(args.assets), pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  header = "\n".join(machine(["ai-edge-litert", "tflite"]).lines())
  ver, cost = [header, ""], [header, ""]
  for name, (task, outputs) in MODELS.items():
    path = assets / "tflite" / name
    if not path.exists():
      sys.exit(f"{path} is missing: run python benchmarks/real_assets.py --out {assets}")
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
  ver.append(footer(start))
  (out / "verification.md").write_text("\n".join(ver) + "\n")
  (out / "costs.md").write_text("\n".join(cost) + "\n")
  print("\n".join(ver))


if __name__ == "__main__":
  main()
