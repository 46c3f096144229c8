"""Run a trained segmentation model online over a video file (``stream.py``).

The model comes from a run's workdir: the run's own recipe, or an FP run's weights under FQ,
static or dynamic ResQ, calibrated on the video's first frames; keyframes every ``period``
frames or where a keyframe trigger fires (docs/drift.md). :class:`StreamOptions` and
:func:`run_experiment` (``resq_jax.stream.options``) turn the run's ``config.json`` and the
options into the :class:`~resq_jax.experiment.spec.Experiment` to stream; :func:`prepare` and
:func:`load_models` (``resq_jax.stream.setup``) open the video, load the models and calibrate a
quantized recipe. Both modules' public names are re-exported here.

The float model (the same weights under the float recipe) always runs beside it, frame by
frame, as the reference for fidelity. Frames are decoded, scaled and centre-cropped to the
run's training size (``resq_jax.stream.video``), normalised as in training
(``resq_jax.tasks.normalise_frames``) and fed one at a time (batch 1) to the jitted
``stream_step``; both models are compiled on the first frame before timing starts, and the
number of recompilations afterwards (0 expected) is reported.

Outputs in ``out_dir``:

* ``overlay.mp4`` (or ``.gif``): input | prediction of the recipe | float prediction
  (| for dynamic ResQ, the bit map of its finest-resolution layer), a caption with the frame's
  cost and agreement, a white border on keyframes;
* ``frames.csv``: one row per frame, columns :data:`CSV_COLUMNS`: ``is_keyframe`` (1 when the
  key branch ran; every frame of a stateless FP / FQ model), ``gbops`` (exact BOPs of the
  frame / 1e9; plain Flax ops, ``LayerCost.float_op``, at 32 x 32 bits), ``pct_w8a8`` (% of
  W8A8 FQ's cost, ``64 * MACs``), ``density`` (fraction of the MACs whose input location was
  not skipped, MAC-weighted over layers, plain ops dense: below 1 only at dynamic residual
  frames), ``agreement`` (fraction of pixels whose argmax class equals the float model's),
  ``rel_error`` (``||logits - float logits|| / ||float logits||``), ``frames_per_s`` (1 /
  seconds of this frame's step of the model under test, synchronised; the float reference,
  decoding and drawing are not included);
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

import jax
import numpy as np

from resq_jax.experiment import log
from resq_jax.nn import clip_bops, stack_stream_stats, stream_init, stream_step, trigger_ops
from resq_jax.nn.costs import flatten_stats
from resq_jax.quant.cost import LayerCost
from resq_jax.stream import video
from resq_jax.stream.options import (
  StreamOptions,
)
from resq_jax.stream.setup import (
  _Stream,
  normalise,
  prepare,
)
from resq_jax.training import ProgressBar

CSV_COLUMNS = (
  "frame",
  "is_keyframe",
  "gbops",
  "pct_w8a8",
  "density",
  "agreement",
  "rel_error",
  "frames_per_s",
)


def layer_densities(stats, costs: dict[str, LayerCost]) -> list[float]:
  """Per layer of ``costs`` (in order), the fraction of its input locations not skipped in
  one frame (batch 1) of ``stream_step`` stats; plain float ops (``float_op``: no stats) are
  dense (1)."""
  flat = flatten_stats(stats)
  return [
    1.0 if c.float_op else float(np.asarray(flat[p]["density"]).reshape(-1)[0])
    for p, c in costs.items()
  ]


def frame_cost(stats, costs: dict[str, LayerCost]) -> tuple[float, float]:
  """``(BOPs, MAC-weighted density)`` of one frame (batch 1) from ``stream_step`` stats:
  ``clip_bops`` of the frame (plain float ops at ``MACs * 32 * 32``, dense)."""
  per_layer = clip_bops(stack_stream_stats([stats]), costs)  # {path: [T=1, B=1]}
  bops = float(sum(v[0, 0] for v in per_layer.values()))
  macs = sum(c.macs for c in costs.values())
  density = sum(c.macs * d for c, d in zip(costs.values(), layer_densities(stats, costs))) / macs
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


def _panels(s: _Stream, label: str, frame, y, y_ref, bit_map, finest) -> list:
  panels = [
    ("input", frame),
    (label, video.overlay_classes(frame, np.asarray(y)[0].argmax(-1))),
    ("float", video.overlay_classes(frame, np.asarray(y_ref)[0].argmax(-1))),
  ]
  if bit_map is not None:
    levels = tuple(getattr(s.recipe.policy, "bits", ()) or ())
    panels.append((f"bits: {finest.split('/')[-1]}", video.color_bit_map(bit_map, levels, s.size)))
  return panels


def _plots(s: _Stream, out: pathlib.Path, rows, densities, shown, maps, finest) -> None:
  from resq_jax.evaluation.plots import plot_bit_map  # pylint: disable=import-outside-toplevel

  keys = [r["is_keyframe"] for r in rows]
  plot_bit_map(
    np.stack(shown),
    np.stack(maps),
    out / "bit_map.png",
    candidates=tuple(getattr(s.recipe.policy, "bits", ()) or (0,)),
    keyframes=keys[: len(shown)],
    title=f"Dynamic ResQ bit map of layer {finest} (first {len(shown)} frames)",
  )
  _density_plot(list(s.costs), densities, keys, out / "density.png")


def _summary(s: _Stream, video_path, workdir, options, rows, fps, recompiled, overlay) -> dict:
  column = lambda k: np.asarray([r[k] for r in rows], np.float64)
  return {
    "video": str(video_path),
    "workdir": str(workdir),
    "recipe": options.recipe,
    "mode": s.recipe.mode,
    "period": s.period,
    "calibrated_on_frames": s.calibrated_on,
    "input_size": list(s.size),
    "source_size": [s.info.height, s.info.width],
    "source_fps": s.info.fps,
    "fps": fps,
    "frames": len(rows),
    "macs_per_frame": sum(c.macs for c in s.costs.values()),
    "gbops_avg": float(column("gbops").mean()),
    "gbops_peak": float(column("gbops").max()),
    "pct_w8a8_avg": float(column("pct_w8a8").mean()),
    "density_avg": float(column("density").mean()),
    "agreement_avg": float(column("agreement").mean()),
    "rel_error_avg": float(column("rel_error").mean()),
    "frames_per_s_median": float(np.median(column("frames_per_s"))),
    "recompilations": int(recompiled),
    "overlay": str(overlay),
  }


def stream_video(
  video_path: str, workdir: str, out_dir: str, options: StreamOptions = StreamOptions()
) -> dict:
  """Stream ``video_path`` through the model of ``workdir``; write the outputs (module
  docstring) to ``out_dir`` and return the summary. The libraries' logging (Orbax's restore,
  JAX's backend probe) is dropped during the call unless ``log.setup(verbose=True)``
  (``resq_jax.experiment.log.quiet_libraries``)."""
  with log.quiet_libraries():
    return _stream_video(video_path, workdir, out_dir, options)


def _stream_video(video_path: str, workdir: str, out_dir: str, options: StreamOptions) -> dict:
  s = prepare(video_path, workdir, options)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  macs = sum(c.macs for c in s.costs.values())
  trigger = options.trigger(s.period)

  def step(m, v, state, x, trig=None):
    return stream_step(
      m, v, state, x, period=s.period, reset_on_nonfinite=options.reset_on_nonfinite, trigger=trig
    )

  first = next(s.frames)
  x0 = normalise(first)
  for m, v, trig in ((s.model, s.variables, trigger), (s.float_model, s.float_vars, None)):
    # Compile both models up front (one program holds the keyframe and residual branches);
    # two steps, since a step's output state is committed to the device and stream_init's is not.
    _, _, warm = step(m, v, stream_init(m, v, x0, trigger=trig), x0, trig)
    jax.block_until_ready(step(m, v, warm, x0, trig))
  compiled = stream_step._cache_size()  # pylint: disable=protected-access
  fps = video.output_fps(s.info.fps, options.fps)
  bar = ProgressBar(
    options.max_frames or max(1, round(s.info.num_frames * fps / s.info.fps)),
    unit="frames",
    enabled=options.show_progress,
  )
  state, float_state = (
    stream_init(s.model, s.variables, x0, trigger=trigger),
    stream_init(s.float_model, s.float_vars, x0),
  )
  rows, densities, shown, maps, finest = [], [], [], [], None
  label = options.recipe if options.recipe != "run" else s.recipe.mode
  overlay = out / f"overlay.{options.video_format}"
  with (
    video.VideoWriter(overlay, fps) as writer,
    open(out / "frames.csv", "w", newline="") as csv_file,
  ):
    table = csv.DictWriter(csv_file, CSV_COLUMNS)
    table.writeheader()
    for t, frame in enumerate(itertools.chain([first], s.frames)):
      x = normalise(frame)
      start = time.perf_counter()
      y, stats, state = jax.block_until_ready(step(s.model, s.variables, state, x, trigger))
      seconds = time.perf_counter() - start
      y_ref, _, float_state = step(s.float_model, s.float_vars, float_state, x)
      stats = jax.device_get(stats)
      is_key = bool(np.asarray(state.is_keyframe).reshape(-1)[0])
      bops, density = frame_cost(stats, s.costs)
      agreement, rel_error = fidelity(y, y_ref)
      rows.append(
        {
          "frame": t,
          "is_keyframe": int(is_key),
          "gbops": bops / 1e9,
          "pct_w8a8": 100.0 * bops / (64 * macs),
          "density": density,
          "agreement": agreement,
          "rel_error": rel_error,
          "frames_per_s": 1.0 / seconds,
        }
      )
      table.writerow(rows[-1])
      bit_map = None
      if s.recipe.mode == "dynamic":
        flat = flatten_stats(stats)
        finest = finest or finest_dynamic_layer(stats)
        densities.append(layer_densities(stats, s.costs))
        bit_map = np.asarray(flat[finest]["bit_map"][0])
        if t < options.bit_map_frames:
          shown.append(frame)
          maps.append(bit_map)
      caption = (
        f"t={t} {'key' if is_key else 'res'} {bops / 1e9:.3g} GBOPs "
        f"({rows[-1]['pct_w8a8']:.0f}% W8A8) agree {100 * agreement:.1f}%"
      )
      writer.write(
        video.compose_panels(
          _panels(s, label, frame, y, y_ref, bit_map, finest),
          caption,
          video.zoom_for(s.size[0]),
          is_key,
        )
      )
      bar.update(t + 1, items=1)
  bar.close()
  recompiled = stream_step._cache_size() - compiled  # pylint: disable=protected-access
  if recompiled:
    warnings.warn(
      f"stream_step compiled {recompiled} more time(s) after the first frame", stacklevel=2
    )
  if s.recipe.mode == "dynamic":
    _plots(s, out, rows, densities, shown, maps, finest)
  summary = _summary(s, video_path, workdir, options, rows, fps, recompiled, overlay)
  summary["keyframes"] = sum(r["is_keyframe"] for r in rows)
  summary["trigger"] = dataclasses.asdict(trigger) if trigger is not None else None
  # The trigger's own arithmetic (subtractions, absolute values, additions): not in BOPs.
  summary["trigger_ops_per_frame"] = trigger_ops(trigger, s.size + (3,)) if trigger else 0
  (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  return summary
