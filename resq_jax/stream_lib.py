"""Run a trained segmentation model online over a video file (``stream.py``).

The model comes from a run's workdir (its ``config.json`` rebuilds it, its newest checkpoint
gives the weights):

* ``recipe='run'``: the run's own recipe: an FP run runs in float; a PTQ or QAT run runs with
  its calibrated / learned quantizers.
* ``recipe`` in ``fp | fq | resq | dynamic``: the workdir must be an FP run. Its weights run
  under FQ ``key_bits``, static ResQ ``key_bits`` / ``residual_bits`` or dynamic ResQ (the
  run config's ``quant.ref_mode`` and policy); the quantizer ranges are calibrated (PTQ, with
  the run config's ``calibration`` methods) on the first ``calibration_frames`` frames of the
  video itself, as one clip, with keyframes every ``max(2, period)`` frames.

The float model (the same weights under the float recipe) always runs beside it, frame by
frame, as the reference for fidelity. Frames are decoded, scaled and centre-cropped to the
run's training size (``resq_jax.video``), normalised as in training (``model_lib.NORMALISE``)
and fed one at a time (batch 1) to the jitted ``stream_step``; both models are compiled on the
first frame before timing starts, and the number of recompilations afterwards (0 expected) is
reported.

Outputs in ``out_dir``:

* ``overlay.mp4`` (or ``.gif``): input | prediction of the recipe | float prediction
  (| for dynamic ResQ, the bit map of its finest-resolution layer), a caption with the frame's
  cost and agreement, a white border on keyframes;
* ``frames.csv``: one row per frame, columns :data:`CSV_COLUMNS`: ``is_keyframe`` (1 when the
  key branch ran; every frame of a stateless FP / FQ model), ``gbops`` (exact BOPs of the
  frame / 1e9), ``pct_w8a8`` (% of W8A8 FQ's cost, ``64 * MACs``), ``density`` (fraction of
  the MACs whose input location was not skipped, MAC-weighted over layers: below 1 only at
  dynamic residual frames), ``agreement`` (fraction of pixels whose argmax class equals the
  float model's), ``rel_error`` (``||logits - float logits|| / ||float logits||``),
  ``frames_per_s`` (1 / seconds of this frame's step of the model under test, synchronised;
  the float reference, decoding and drawing are not included);
* ``bit_map.png`` (dynamic ResQ): frames and bit maps of the finest layer over the first
  ``bit_map_frames`` frames; ``density.png`` (dynamic ResQ): density per layer over time;
* ``summary.json``: averages and peaks, the recipe, the sizes, recompilations.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import pathlib
import time
import warnings
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from resq_jax import config_lib, errors, model_lib, video
from resq_jax.nn import calibrate_model, layer_costs, stream_init, stream_step
from resq_jax.nn.calibrate import CalibrationMethods
from resq_jax.nn.costs import flatten_stats
from resq_jax.quant.cost import dynamic_bops
from resq_jax.quant.recipe import LayerRecipe, float_recipe
from resq_jax.training import ProgressBar, restore_fields_from

RECIPES = ("run", "fp", "fq", "resq", "dynamic")
CSV_COLUMNS = ("frame", "is_keyframe", "gbops", "pct_w8a8", "density", "agreement",
               "rel_error", "frames_per_s")


@dataclasses.dataclass(frozen=True)
class StreamOptions:
  """How to stream; ``None`` / 0 take the run config's value (``quant.key_bits``,
  ``quant.residual_bits``, ``quant.period``)."""
  recipe: str = "run"
  key_bits: tuple[int, int] | None = None
  residual_bits: tuple[int, int] | None = None
  period: int = 0
  calibration_frames: int = 16
  max_frames: int | None = None
  fps: float | None = None
  reset_on_nonfinite: bool = False
  video_format: str = "mp4"  # mp4 | gif
  bit_map_frames: int = 16
  show_progress: bool = True


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """The ``config.json`` a run saved in ``workdir``, as a ConfigDict."""
  saved = model_lib.read_run_config(workdir)
  if saved is None:
    raise errors.CheckpointError(f"{workdir!r} has no config.json: is it a train.py workdir?")
  return ml_collections.ConfigDict(saved)


def stream_recipe(config, options: StreamOptions) -> LayerRecipe:
  """The recipe that ``options.recipe`` names, from the run config's ``quant`` section."""
  if options.recipe not in RECIPES:
    raise errors.InvalidConfigError(f"recipe: got {options.recipe!r} (allowed: "
                                    f"{' | '.join(RECIPES)})")
  quant = ml_collections.ConfigDict(config.quant.to_dict())
  if options.recipe != "run":
    quant.mode = "float" if options.recipe == "fp" else options.recipe
  if options.key_bits is not None:
    quant.key_bits = tuple(options.key_bits)
  if options.residual_bits is not None:
    quant.residual_bits = tuple(options.residual_bits)
  try:
    return config_lib.recipe_from(quant)
  except ValueError as e:
    raise errors.InvalidConfigError(f"recipe {options.recipe}: {e}") from e


def _abstract_variables(model, config) -> dict:
  """Shapes and dtypes of ``model_lib.init_variables`` (traced, nothing computed or compiled:
  an eager Flax init compiles every operation on its own, measured 27 s for the tiny preset on
  2 busy cores, and 20 s under jit for a quantized model)."""
  return jax.eval_shape(lambda rng: model_lib.init_variables(model, config, rng),
                        jax.random.key(0))


def _restore(model, config, workdir: str) -> dict:
  """The run's ``params`` and ``batch_stats`` for ``model``, as ``model_lib.load_fp`` /
  ``load_run`` read them, from an abstract template."""
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  template = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                          _abstract_variables(model, config))
  try:
    restored = restore_fields_from(workdir, params=template["params"],
                                   model_state=template.get("batch_stats", {}))
  except FileNotFoundError as e:
    raise errors.CheckpointError(f"{workdir}: {e}") from e
  return {"params": restored["params"], "batch_stats": restored["model_state"]}


def _from_fp(model, config, fp_vars: dict) -> dict:
  """As ``model_lib.init_from_fp``: the FP weights and BatchNorm statistics in the quantized
  model; its quantizer parameters are NaN until :func:`calibrate_model` sets them (and
  :func:`_check_calibrated` makes sure that it set every one)."""
  fp = flax.traverse_util.flatten_dict(fp_vars["params"])
  shapes = flax.traverse_util.flatten_dict(_abstract_variables(model, config)["params"])
  missing = sorted("/".join(p) for p in set(fp) - set(shapes))
  if missing:
    raise errors.CheckpointError(f"FP parameters {missing} have no counterpart in the "
                                 "quantized model")
  params = {p: fp[p] if p in fp else jnp.full(s.shape, jnp.nan, s.dtype)
            for p, s in shapes.items()}
  return {"params": flax.traverse_util.unflatten_dict(params),
          "batch_stats": fp_vars["batch_stats"]}


def calibration_methods(config) -> CalibrationMethods:
  """The run config's ``calibration`` methods (weight, key_act, residual_act,
  residual_weight)."""
  section = config.get("calibration", {})
  names = [f.name for f in dataclasses.fields(CalibrationMethods)]
  return CalibrationMethods(**{n: section[n] for n in names if n in section})


def _check_calibrated(variables: dict) -> None:
  flat = flax.traverse_util.flatten_dict(variables["params"])
  unset = sorted("/".join(p) for p, v in flat.items() if np.isnan(np.asarray(v)).any())
  if unset:
    raise ValueError(f"calibration left quantizer parameters unset: {unset}")


def _float_part(float_model, config, variables: dict) -> dict:
  """``variables`` without the quantizer parameters (the float model's own tree: the float
  reference then compiles once whatever the run)."""
  shapes = flax.traverse_util.flatten_dict(_abstract_variables(float_model, config)["params"])
  params = flax.traverse_util.flatten_dict(variables["params"])
  return {"params": flax.traverse_util.unflatten_dict({p: params[p] for p in shapes}),
          "batch_stats": variables["batch_stats"]}


def load_models(config, workdir: str, recipe: LayerRecipe, options: StreamOptions):
  """``(model, variables, float_model, float_variables, needs_calibration)``."""
  stage = config.get("stage", "fp")
  float_model = model_lib.make_model(config, float_recipe())
  if options.recipe == "run" and stage != "fp":
    model = model_lib.make_model(config, recipe)
    variables = _restore(model, config, workdir)
    return model, variables, float_model, _float_part(float_model, config, variables), False
  if stage != "fp":
    raise errors.InvalidConfigError(
        f"recipe: --recipe={options.recipe} needs the workdir of an FP run, and {workdir} is a "
        f"{stage} run (use --recipe=run for its own quantizers, or its init_from "
        f"{config.get('init_from', '')!r})")
  float_vars = _restore(float_model, config, workdir)
  if not recipe.is_quantized:
    return float_model, float_vars, float_model, float_vars, False
  model = model_lib.make_model(config, recipe)
  return model, _from_fp(model, config, float_vars), float_model, float_vars, True


def normalise(frame: np.ndarray) -> jax.Array:
  """uint8 ``[H, W, 3]`` -> float32 ``[1, H, W, 3]`` as in training."""
  mean, std = model_lib.NORMALISE
  return ((jnp.asarray(frame, jnp.float32) / 255.0 - mean) / std)[None]


def frame_cost(stats, costs) -> tuple[float, float]:
  """``(BOPs, MAC-weighted density)`` of one frame (batch 1) from ``stream_step`` stats."""
  flat = flatten_stats(stats)
  bops = sum(float(dynamic_bops(c.macs, c.n_locations, flat[p]["w_bits"],
                                flat[p]["act_bits"])[0]) for p, c in costs.items())
  macs = sum(c.macs for c in costs.values())
  density = sum(c.macs * float(flat[p]["density"][0]) for p, c in costs.items()) / macs
  return bops, density


def fidelity(logits, float_logits) -> tuple[float, float]:
  """``(argmax agreement, relative L2 error)`` of logits against the float model's."""
  y, ref = np.asarray(logits, np.float64), np.asarray(float_logits, np.float64)
  agreement = float(np.mean(y.argmax(-1) == ref.argmax(-1)))
  norm = float(np.linalg.norm(ref))
  rel = float(np.linalg.norm(y - ref)) / norm if norm > 0 else float(np.linalg.norm(y))
  return agreement, rel


def finest_dynamic_layer(stats) -> str | None:
  """The layer with a bit map of the most locations (first in order on ties)."""
  maps = {p: v["bit_map"] for p, v in flatten_stats(stats).items() if "bit_map" in v}
  return max(maps, key=lambda p: math.prod(maps[p].shape[1:])) if maps else None


def _density_plot(names, densities, keyframes, path) -> None:
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from matplotlib.ticker import MaxNLocator

  data = np.asarray(densities, np.float64).T  # [layers, T]
  fig = Figure(figsize=(min(14.0, 3.0 + 0.08 * data.shape[1]), 1.2 + 0.22 * len(names)))
  ax = fig.add_subplot()
  image = ax.imshow(data, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
  ax.set_yticks(range(len(names)), names, fontsize=6)
  for t in np.flatnonzero(keyframes):
    ax.axvline(t, color="white", lw=0.4, alpha=0.6)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_xlabel("frame (white lines: keyframes)")
  ax.set_title("Dynamic ResQ: fraction of input locations not skipped, per layer", fontsize=9)
  fig.colorbar(image, ax=ax, label="density")
  FigureCanvasAgg(fig)
  fig.savefig(path, dpi=110, bbox_inches="tight")


class _Stream(NamedTuple):
  """What the loop needs: both models with their variables, costs, sizes and the frames."""
  recipe: LayerRecipe
  period: int
  model: Any
  variables: dict
  float_model: Any
  float_vars: dict
  costs: dict
  size: tuple[int, int]
  info: video.VideoInfo
  frames: Any  # iterator of uint8 [H, W, 3]
  calibrated_on: int


def prepare(video_path: str, workdir: str, options: StreamOptions) -> _Stream:
  """Open the video, load the run's models and calibrate a quantized recipe on its first
  frames (raises ``DataError`` / ``CheckpointError`` / ``InvalidConfigError``)."""
  try:
    info = video.video_info(video_path)
  except (FileNotFoundError, ValueError) as e:
    raise errors.DataError(str(e)) from e
  config = run_config(workdir)
  task = config.get("task", "segmentation")
  if task != "segmentation":
    raise errors.InvalidConfigError(f"task: {workdir} is a {task!r} run; stream.py draws and "
                                    "scores segmentation runs only (allowed: segmentation)")
  recipe = stream_recipe(config, options)
  period = options.period or int(config.quant.period)
  model, variables, float_model, float_vars, calibrate = load_models(config, workdir, recipe,
                                                                     options)
  size = (int(config.data.height), int(config.data.width))
  frames = video.read_video(video_path, size=size, max_frames=options.max_frames,
                            fps=options.fps)
  head = list(itertools.islice(frames, max(1, options.calibration_frames)))
  if not head:
    raise errors.DataError(f"{video_path} has no frames")
  if calibrate:
    if len(head) < 2:
      raise errors.DataError(f"{video_path}: calibration needs >= 2 frames, got {len(head)}")
    clip = jnp.concatenate([normalise(f) for f in head])[None]
    variables = calibrate_model(model, float_model, variables, [clip], period=max(2, period),
                                methods=calibration_methods(config))
    _check_calibrated(variables)
  costs = layer_costs(model, variables, normalise(head[0]))
  return _Stream(recipe, period, model, variables, float_model, float_vars, costs, size, info,
                 itertools.chain(head, frames), len(head) if calibrate else 0)


def _panels(s: _Stream, label: str, frame, y, y_ref, bit_map, finest) -> list:
  panels = [("input", frame),
            (label, video.overlay_classes(frame, np.asarray(y)[0].argmax(-1))),
            ("float", video.overlay_classes(frame, np.asarray(y_ref)[0].argmax(-1)))]
  if bit_map is not None:
    levels = tuple(getattr(s.recipe.policy, "bits", ()) or ())
    panels.append((f"bits: {finest.split('/')[-1]}", video.color_bit_map(bit_map, levels,
                                                                         s.size)))
  return panels


def _plots(s: _Stream, out: pathlib.Path, rows, densities, shown, maps, finest) -> None:
  from resq_jax.evaluation.plots import plot_bit_map  # pylint: disable=import-outside-toplevel

  keys = [r["is_keyframe"] for r in rows]
  plot_bit_map(np.stack(shown), np.stack(maps), out / "bit_map.png",
               candidates=tuple(getattr(s.recipe.policy, "bits", ()) or (0,)),
               keyframes=keys[:len(shown)],
               title=f"Dynamic ResQ bit map of layer {finest} (first {len(shown)} frames)")
  _density_plot(list(s.costs), densities, keys, out / "density.png")


def _summary(s: _Stream, video_path, workdir, options, rows, fps, recompiled, overlay) -> dict:
  column = lambda k: np.asarray([r[k] for r in rows], np.float64)
  return {"video": str(video_path), "workdir": str(workdir), "recipe": options.recipe,
          "mode": s.recipe.mode, "period": s.period, "calibrated_on_frames": s.calibrated_on,
          "input_size": list(s.size), "source_size": [s.info.height, s.info.width],
          "source_fps": s.info.fps, "fps": fps, "frames": len(rows),
          "macs_per_frame": sum(c.macs for c in s.costs.values()),
          "gbops_avg": float(column("gbops").mean()), "gbops_peak": float(column("gbops").max()),
          "pct_w8a8_avg": float(column("pct_w8a8").mean()),
          "density_avg": float(column("density").mean()),
          "agreement_avg": float(column("agreement").mean()),
          "rel_error_avg": float(column("rel_error").mean()),
          "frames_per_s_median": float(np.median(column("frames_per_s"))),
          "recompilations": int(recompiled), "overlay": str(overlay)}


def stream_video(video_path: str, workdir: str, out_dir: str,
                 options: StreamOptions = StreamOptions()) -> dict:
  """Stream ``video_path`` through the model of ``workdir``; write the outputs (module
  docstring) to ``out_dir`` and return the summary."""
  s = prepare(video_path, workdir, options)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  macs = sum(c.macs for c in s.costs.values())
  step = lambda m, v, state, x: stream_step(m, v, state, x, period=s.period,
                                            reset_on_nonfinite=options.reset_on_nonfinite)
  first = next(s.frames)
  x0 = normalise(first)
  for m, v in ((s.model, s.variables), (s.float_model, s.float_vars)):
    # Compile both models up front (one program holds the keyframe and residual branches);
    # two steps, since a step's output state is committed to the device and stream_init's is not.
    _, _, warm = step(m, v, stream_init(m, v, x0), x0)
    jax.block_until_ready(step(m, v, warm, x0))
  compiled = stream_step._cache_size()  # pylint: disable=protected-access
  fps = video.output_fps(s.info.fps, options.fps)
  bar = ProgressBar(options.max_frames or max(1, round(s.info.num_frames * fps / s.info.fps)),
                    unit="frames", enabled=options.show_progress)
  state, float_state = (stream_init(s.model, s.variables, x0),
                        stream_init(s.float_model, s.float_vars, x0))
  rows, densities, shown, maps, finest = [], [], [], [], None
  label = options.recipe if options.recipe != "run" else s.recipe.mode
  overlay = out / f"overlay.{options.video_format}"
  with video.VideoWriter(overlay, fps) as writer, \
      open(out / "frames.csv", "w", newline="") as csv_file:
    table = csv.DictWriter(csv_file, CSV_COLUMNS)
    table.writeheader()
    for t, frame in enumerate(itertools.chain([first], s.frames)):
      x = normalise(frame)
      start = time.perf_counter()
      y, stats, state = jax.block_until_ready(step(s.model, s.variables, state, x))
      seconds = time.perf_counter() - start
      y_ref, _, float_state = step(s.float_model, s.float_vars, float_state, x)
      stats = jax.device_get(stats)
      is_key = int(state.since_key) == 1
      bops, density = frame_cost(stats, s.costs)
      agreement, rel_error = fidelity(y, y_ref)
      rows.append({"frame": t, "is_keyframe": int(is_key), "gbops": bops / 1e9,
                   "pct_w8a8": 100.0 * bops / (64 * macs), "density": density,
                   "agreement": agreement, "rel_error": rel_error,
                   "frames_per_s": 1.0 / seconds})
      table.writerow(rows[-1])
      bit_map = None
      if s.recipe.mode == "dynamic":
        flat = flatten_stats(stats)
        finest = finest or finest_dynamic_layer(stats)
        densities.append([float(flat[p]["density"][0]) for p in s.costs])
        bit_map = np.asarray(flat[finest]["bit_map"][0])
        if t < options.bit_map_frames:
          shown.append(frame)
          maps.append(bit_map)
      caption = (f"t={t} {'key' if is_key else 'res'} {bops / 1e9:.3g} GBOPs "
                 f"({rows[-1]['pct_w8a8']:.0f}% W8A8) agree {100 * agreement:.1f}%")
      writer.write(video.compose_panels(_panels(s, label, frame, y, y_ref, bit_map, finest),
                                        caption, video.zoom_for(s.size[0]), is_key))
      bar.update(t + 1, items=1)
  bar.close()
  recompiled = stream_step._cache_size() - compiled  # pylint: disable=protected-access
  if recompiled:
    warnings.warn(f"stream_step compiled {recompiled} more time(s) after the first frame",
                  stacklevel=2)
  if s.recipe.mode == "dynamic":
    _plots(s, out, rows, densities, shown, maps, finest)
  summary = _summary(s, video_path, workdir, options, rows, fps, recompiled, overlay)
  (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  return summary
