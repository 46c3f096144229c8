"""The :class:`~resq_jax.experiment.spec.Experiment` that ``stream.py`` streams: a run's
``config.json`` with the stream options applied.

:class:`StreamOptions` say how to stream; :func:`run_experiment` parses the run's
``config.json`` (``parse.parse``) with them applied:

* ``recipe='run'``: the run's own recipe: an FP run runs in float; a PTQ or QAT run runs with
  its calibrated / learned quantizers.
* ``recipe`` in ``fp | fq | resq | dynamic``: the workdir must be an FP run. Its weights run
  under FQ ``key_bits``, static ResQ ``key_bits`` / ``residual_bits`` or dynamic ResQ (the
  run config's ``quant.ref_mode`` and policy); the quantizer ranges are calibrated (PTQ, with
  the run config's ``calibration`` methods, ``QuantPlan.calibration``) on the first
  ``calibration_frames`` frames of the video itself, as one clip, with keyframes every
  ``max(2, period)`` frames (``QuantPlan.calibration_period``; ``resq_jax.stream.setup``).

Adaptive keyframes (``cut_threshold`` / ``drift_threshold``): a
:class:`~resq_jax.quant.keyframes.KeyframeTrigger` with ``max_period = period``
(:meth:`StreamOptions.trigger`) decides each keyframe from the input (a scene cut, or the
motion accumulated since the keyframe), instead of every ``period`` frames (docs/drift.md).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from resq_jax import errors
from resq_jax.experiment import parse, runs
from resq_jax.experiment.log import get_logger
from resq_jax.experiment.schema import RULES, default_config
from resq_jax.experiment.spec import Experiment
from resq_jax.nn import KeyframeTrigger

log = get_logger(__name__)

RECIPES = ("run", "fp", "fq", "resq", "dynamic")
# The run config keys that streaming reads (a key or a whole section): the rest need not pass
# today's validation (see run_experiment).
STREAM_KEYS = (
  "stage",
  "init_from",
  "task",
  "model",
  "quant",
  "calibration.weight",
  "calibration.key_act",
  "calibration.residual_act",
  "calibration.residual_weight",
  "data.height",
  "data.width",
)
_SWEEP = "stream"  # the one-setting eval sweep of a streamed Experiment


@dataclasses.dataclass(frozen=True)
class StreamOptions:
  """How to stream; ``None`` / 0 take the run config's value (``quant.key_bits``,
  ``quant.residual_bits``, ``quant.period``). ``cut_threshold`` / ``drift_threshold`` (None:
  off) switch on adaptive keyframes with ``period`` as the longest distance between two
  keyframes and ``min_period`` the shortest (:meth:`trigger`)."""

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
  cut_threshold: float | None = None
  drift_threshold: float | None = None
  min_period: int = 1

  def trigger(self, period: int) -> KeyframeTrigger | None:
    """The keyframe trigger for a stream of keyframe period ``period`` (None: fixed period)."""
    if self.cut_threshold is None and self.drift_threshold is None:
      return None
    try:
      return KeyframeTrigger(
        cut_threshold=self.cut_threshold,
        drift_threshold=self.drift_threshold,
        max_period=int(period),
        min_period=min(int(self.min_period), int(period)),
      )
    except ValueError as e:
      raise errors.InvalidConfigError(f"keyframe trigger: {e}") from None


def _is_stream_key(key: str) -> bool:
  return any(key == k or key.startswith(k + ".") for k in STREAM_KEYS)


def _set(tree: dict, key: str, value) -> None:
  *sections, leaf = key.split(".")
  for section in sections:
    tree = tree[section]
  tree[leaf] = value


def _overrides(options: StreamOptions) -> dict:
  """The quant keys that ``options`` override."""
  if options.recipe not in RECIPES:
    raise errors.InvalidConfigError(
      f"recipe: got {options.recipe!r} (allowed: {' | '.join(RECIPES)})"
    )
  out = {}
  if options.recipe != "run":
    out["quant.mode"] = "float" if options.recipe == "fp" else options.recipe
  if options.key_bits is not None:
    out["quant.key_bits"] = tuple(options.key_bits)
  if options.residual_bits is not None:
    out["quant.residual_bits"] = tuple(options.residual_bits)
  if options.period:
    out["quant.period"] = int(options.period)
  return out


def _stream_config(saved: dict, overrides: dict, keep) -> tuple[ml_collections.ConfigDict, list]:
  """Today's defaults, the saved values of the known keys that ``keep(key)`` selects, then
  ``overrides``; the eval sweep is the streamed setting alone. Also returns the saved keys
  that today's schema does not know."""
  config = default_config().to_dict()
  unknown = []
  for key, value in parse.flatten(saved):
    if key not in RULES:
      unknown.append(key)
    elif keep(key) and key not in ("eval.sweeps", "eval.sweep"):
      _set(config, key, value)
  for key, value in overrides.items():
    _set(config, key, value)
  # A stream has no clip length: its period is bounded by nothing but itself (the config
  # refuses a period above data.num_frames, which only clips have).
  config["data"]["num_frames"] = max(config["data"]["num_frames"], config["quant"]["period"])
  config["eval"]["sweeps"] = {_SWEEP: ({"name": _SWEEP},)}
  config["eval"]["sweep"] = _SWEEP
  return ml_collections.ConfigDict(config), unknown


def run_experiment(workdir: str, options: StreamOptions = StreamOptions()) -> Experiment:
  """The run's ``config.json`` parsed (``parse.parse``) into the Experiment to stream,
  ``options`` applied (recipe, bits, period: ``Experiment.quant``; its ``eval.sweep`` is that
  one setting).

  Streaming runs on one device with batch 1 (parsed with ``num_devices=1``) and reads only
  :data:`STREAM_KEYS`. Runs saved under an older schema still stream: keys added since take
  today's defaults and keys no longer in the schema are ignored; if the config then fails
  today's validation only in keys streaming does not read (data sizes, optimiser, training,
  evaluation; e.g. a rule tightened since the run), those keys take today's defaults, with a
  warning. Problems in keys it reads (and bad options, e.g. residual bits above the key
  bits) raise ``ConfigError``, one line each; no ``config.json``: ``CheckpointError``.
  """
  saved = runs.read_run_config(workdir)
  if saved is None:
    raise errors.CheckpointError(f"{workdir!r} has no config.json: is it a train.py workdir?")
  overrides = _overrides(options)
  config, unknown = _stream_config(saved, overrides, keep=lambda key: True)
  if unknown:
    log.warning(
      f"{workdir}: config.json keys no longer in the schema ignored: {', '.join(unknown)}"
    )
  try:
    return parse.parse(config, num_devices=1)
  except parse.ConfigError as e:
    relevant = [p for p in e.problems if _is_stream_key(p.partition(":")[0])]
    if relevant:
      raise parse.ConfigError(relevant) from None
    log.warning(
      f"{workdir}: config.json fails today's validation in keys streaming does not "
      f"read; they take today's defaults: {'; '.join(e.problems)}"
    )
  config, _ = _stream_config(saved, overrides, keep=_is_stream_key)
  return parse.parse(config, num_devices=1)
