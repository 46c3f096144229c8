"""Post-training calibration (PTQ) of every quantizer of a model from a few clips.

The float twin of the model (same modules, float recipes) runs over the clips while each
quantized layer records its input and effective (BatchNorm-folded) weights; ranges then follow
from :func:`resq_jax.quant.calibration.calibrate`:

* key activations: all frames; weights: the folded weights;
* residual activations: the residuals the layer would see in float execution, ``x_t - x_{t-1}``
  for 'closed' / 'prev' and ``x_t - x_key`` for 'key', at the non-key frames of the run: those
  with ``t % period != 0``, or under a keyframe trigger (``trigger=``) every frame where the
  trigger does not fire on that example's clip (``quant.keyframes.trigger_keyframes``: the
  keyframes ``run_clip(..., trigger=)`` uses).
  Residuals are heavy-tailed (docs/design.md section 3): prefer 'mse' or 'percentile' over 'minmax'.

Clip batches stream through one at a time; per quantizer a running min / max and a bounded
uniform sample (:class:`Reservoir`) are kept, so memory does not grow with the number of
batches. Each layer uses the recipe it executes (per-layer ``RecipeRules`` applied).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import warnings
from collections.abc import Iterable
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from resq_jax.nn.costs import flatten_stats
from resq_jax.nn.layers import float_twin
from resq_jax.nn.quantized import KEY_A, KEY_W, RES_A, RES_W, scale_name, zero_point_name
from resq_jax.nn.tracing import check_hashable, layer_calls, model_variables
from resq_jax.quant.calibration import calibrate
from resq_jax.quant.keyframes import KeyframeTrigger, keyframe_period, trigger_keyframes
from resq_jax.quant.recipe import LayerRecipe


@dataclasses.dataclass(frozen=True)
class CalibrationMethods:
  """Range-setting method per quantizer kind ('minmax', 'percentile' or 'mse')."""

  weight: str = "minmax"
  key_act: str = "mse"
  residual_act: str = "mse"
  residual_weight: str = "mse"


@functools.partial(jax.jit, static_argnames="float_model")
def _observe_frames(float_model, variables, frames):
  _, observed = float_model.apply(variables, frames, phase="key", mutable=["calibration"])
  return observed["calibration"]


def _observe(float_model, variables, clip):
  """``{layer path: {'x': [B, T, ...], 'w': ...}}`` for one clip batch ``[B, T, H, W, C]``."""
  batch, length = clip.shape[:2]
  frames = clip.reshape(batch * length, *clip.shape[2:])
  flat = flatten_stats(_observe_frames(float_model, variables, frames))
  for entry in flat.values():
    entry["x"] = np.asarray(entry["x"]).reshape(batch, length, *entry["x"].shape[1:])
    entry["w"] = np.asarray(entry["w"])
  return flat


def residual_samples(x: np.ndarray, keyframes, ref_mode: str) -> np.ndarray:
  """Float residuals of layer inputs ``x [B, T, ...]`` at non-key frames, against the previous
  frame ('closed', 'prev') or the example's last keyframe ('key').

  ``keyframes``: a period K (keyframes at ``t % K == 0``) or a bool mask ``[T]`` shared by the
  batch, giving residuals ``[B, n, ...]``; or a per-example bool mask ``[B, T]`` (e.g.
  :func:`~resq_jax.quant.keyframes.trigger_keyframes`), giving ``[N, ...]`` (the non-key
  ``(b, t)`` in order, empty where every frame is a keyframe). Frame 0 must be a keyframe."""
  length = x.shape[1]
  if isinstance(keyframes, (int, np.integer)) and not isinstance(keyframes, bool):
    keys = np.arange(length) % int(keyframes) == 0
  else:
    keys = np.asarray(keyframes, bool)
  if keys.shape not in ((length,), (x.shape[0], length)):
    raise ValueError(f"keyframes must be a period, [T] or [B, T] = {x.shape[:2]}, got {keys.shape}")
  if not np.all(keys[..., 0]):
    raise ValueError("keyframes: frame 0 of every clip must be a keyframe (it has no reference)")
  t = np.broadcast_to(np.arange(length), keys.shape)
  last_key = np.maximum.accumulate(np.where(keys, t, 0), axis=-1)
  ref = last_key if ref_mode == "key" else t - 1
  if keys.ndim == 1:
    if keys.all():
      what = f"period={keyframes}" if np.ndim(keyframes) == 0 else "these keyframes"
      raise ValueError(f"clips of {length} frames have no residual frame at {what}")
    res_t = np.flatnonzero(~keys)
    return x[:, res_t] - x[:, ref[res_t]]
  b, res_t = np.nonzero(~keys)
  return x[b, res_t] - x[b, ref[b, res_t]]


MAX_ACT_SAMPLES = 1 << 18


def subsample(values: np.ndarray, max_elements: int = MAX_ACT_SAMPLES) -> np.ndarray:
  """A fixed random subset of the elements of ``values`` (flattened) when it is larger than
  ``max_elements``: per-tensor ranges from 2^18 samples are as good as from all of them, and the
  MSE search costs ``num_candidates`` passes over its input."""
  flat = values.reshape(-1)
  if flat.size <= max_elements:
    return flat
  return flat[np.random.default_rng(0).choice(flat.size, max_elements, replace=False)]


class Reservoir:
  """A uniform random subset of at most ``capacity`` rows of everything added (rows: elements
  for per-tensor grids, channel vectors ``[C]`` for per-channel ones), with a fixed seed.

  While everything fits it holds all rows in order (so small calibration sets give exactly the
  ranges of the whole data); beyond that each ``add`` keeps a uniform subset of all rows seen
  (hypergeometric split between the kept and the new rows), so memory is bounded by
  ``capacity`` whatever the number of batches. Exact running min / max ride along."""

  def __init__(self, capacity: int, seed: int = 0):
    self.capacity, self.seen, self.rows = capacity, 0, None
    self.lo = self.hi = None
    self._rng = np.random.default_rng(seed)

  def add(self, rows: np.ndarray) -> None:
    rows = np.asarray(rows)
    if not rows.shape[0]:
      return
    lo, hi = rows.min(axis=0), rows.max(axis=0)
    self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
    self.hi = hi if self.hi is None else np.maximum(self.hi, hi)
    n_old, n_new = self.seen, rows.shape[0]
    self.seen += n_new
    if self.rows is None:
      self.rows = rows[:0]
    if n_old + n_new <= self.capacity:
      self.rows = np.concatenate([self.rows, rows])
      return
    keep_new = int(self._rng.hypergeometric(n_new, n_old, self.capacity))
    new = rows[np.sort(self._rng.choice(n_new, keep_new, replace=False))]
    old = self.rows[
      np.sort(self._rng.choice(self.rows.shape[0], self.capacity - keep_new, replace=False))
    ]
    self.rows = np.concatenate([old, new])


class _Accumulator:
  """Streaming calibration data of one quantized input (key activations or residuals)."""

  def __init__(self, spec, max_elements: int = MAX_ACT_SAMPLES):
    self.spec = spec
    self.per_channel = spec.channel_axis is not None
    self.reservoir = None
    self.max_elements = max_elements
    self.sample_shape = None

  def add(self, values: np.ndarray) -> None:
    if self.per_channel:
      values = np.moveaxis(values, self.spec.channel_axis % values.ndim, -1)
      rows = values.reshape(-1, values.shape[-1])
    else:
      rows = values.reshape(-1)
    if self.reservoir is None:
      capacity = self.max_elements // (rows.shape[1] if rows.ndim == 2 else 1)
      self.reservoir = Reservoir(max(1, capacity))
    self.reservoir.add(rows)

  def calibrate(self, method: str):
    r = self.reservoir
    if method == "minmax":
      # Exact over everything seen, not only the kept sample.
      data = np.stack([r.lo, r.hi])
    else:
      data = r.rows
    if self.per_channel:
      return calibrate(data, dataclasses.replace(self.spec, channel_axis=-1), method)
    return calibrate(data, self.spec, method)


def _warn_if_constant(path: str, what: str, acc: _Accumulator) -> None:
  """A zero range gives a degenerate grid (the scale floor): say so instead of calibrating on."""
  r = acc.reservoir
  if r is not None and float(np.max(r.hi)) == float(np.min(r.lo)):
    warnings.warn(
      f"calibration of layer {path!r}: every {what} value equals "
      f"{float(np.min(r.lo)):g} (zero range); its quantizer range is "
      "degenerate. Calibrate on representative, moving clips.",
      stacklevel=4,
    )


class _LayerData:
  """Running calibration data of one layer: its effective weights (the same every batch), and
  bounded reservoirs of its key inputs and of its float residuals."""

  def __init__(self, recipe: LayerRecipe, period: int):
    self.recipe, self.period, self.w = recipe, period, None
    self.key = _Accumulator(recipe.key.act)
    self.residual = _Accumulator(recipe.residual.act) if recipe.has_state else None

  def add(self, entry, keyframes=None) -> None:
    """One batch; ``keyframes``: its per-example keyframes ``[B, T]`` (None: the period)."""
    if self.w is None:
      self.w = np.asarray(entry["w"])
    x = np.asarray(entry["x"])
    self.key.add(x)
    if self.residual is not None:
      keys = self.period if keyframes is None else keyframes
      self.residual.add(residual_samples(x, keys, self.recipe.ref_mode))


def _qparams(path: str, data: _LayerData, methods: CalibrationMethods) -> dict:
  recipe, w = data.recipe, data.w
  _warn_if_constant(path, "input", data.key)
  out = {scale_name(KEY_W): calibrate(w, recipe.key.weight, methods.weight)[0]}
  s, z = data.key.calibrate(methods.key_act)
  out[scale_name(KEY_A)] = s
  if not recipe.key.act.symmetric:
    out[zero_point_name(KEY_A)] = z
  if recipe.has_state:
    out[scale_name(RES_W)] = calibrate(w, recipe.residual.weight, methods.residual_weight)[0]
    if data.residual.reservoir is None or data.residual.reservoir.lo is None:
      raise ValueError(
        f"calibration of layer {path!r}: the trigger made every frame of the clips a keyframe, "
        "so there is no residual to calibrate on: use longer or calmer clips"
      )
    _warn_if_constant(path, "residual", data.residual)
    s, z = data.residual.calibrate(methods.residual_act)
    out[scale_name(RES_A)] = s
    if not recipe.residual.act.symmetric:
      out[zero_point_name(RES_A)] = z
  return out


class Observations(NamedTuple):
  """What the float model's layers saw: ``layers[path] = {'x': [N, T, ...], 'w': ...}`` and
  the shape of one input frame batch ``[B, H, W, C]``."""

  layers: dict
  frame_shape: tuple


def observe(float_model, variables, clips: Iterable[jax.Array]) -> Observations:
  """Inputs and effective weights of every layer of the float model over ``clips`` (clip
  batches ``[B, T, H, W, C]``, concatenated). Reusable across the calibration of many recipes of
  the same network."""
  clips = [jnp.asarray(c) for c in clips]
  if not clips:
    raise ValueError("clips must hold at least one clip batch")
  variables = model_variables(variables)
  parts = [_observe(float_model, variables, c) for c in clips]
  layers = {
    path: {"x": np.concatenate([p[path]["x"] for p in parts]), "w": parts[0][path]["w"]}
    for path in parts[0]
  }
  return Observations(layers, (clips[0].shape[0], *clips[0].shape[2:]))


def _observed_batches(float_model, variables, clips, observations, trigger=None):
  """Per clip batch ``({path: {'x': [B, T, ...], 'w': ...}}, keyframes)``, one batch at a time;
  ``keyframes``: where ``trigger`` fires on the clip, bool ``[B, T]`` (None without one)."""
  if observations is not None:
    yield observations.layers, None
    return
  empty = True
  for clip in clips:
    empty = False
    clip = jnp.asarray(clip)
    keys = None if trigger is None else np.asarray(trigger_keyframes(trigger, clip))
    yield _observe(float_model, variables, clip), keys
  if empty:
    raise ValueError("clips must hold at least one clip batch")


def _first_frame(clips, observations):
  """A frame batch of the calibration data (to trace the model) and the clips, unconsumed."""
  if observations is not None:
    return jax.ShapeDtypeStruct(observations.frame_shape, jnp.float32), clips
  iterator = iter(clips)
  try:
    first = jnp.asarray(next(iterator))
  except StopIteration:
    raise ValueError("clips must hold at least one clip batch") from None
  return first[:, 0], itertools.chain([first], iterator)


def calibrate_model(
  model,
  *,
  float_model=None,
  variables,
  clips: Iterable[jax.Array] = (),
  period: int | None = None,
  trigger: KeyframeTrigger | None = None,
  methods: CalibrationMethods = CalibrationMethods(),
  observations: Observations | None = None,
) -> dict:
  """Variables of ``model`` with every quantizer's scale / zero point set from ``clips``.

  Clip batches are observed one at a time (an iterator or generator is consumed lazily): each
  layer keeps running min / max and a bounded uniform sample of its inputs and residuals
  (:class:`Reservoir`, at most ``MAX_ACT_SAMPLES`` values per quantizer), so host memory does
  not grow with the calibration set; sets that fit the sample give the ranges of all the data.

  Args:
    model: the quantized model; each layer's recipe (per-layer rules applied) decides which
      quantizers exist. Must be hashable (a static argument of jit).
    float_model: the same architecture in float; None: :func:`~resq_jax.nn.layers.float_twin`
      of ``model`` (every layer float, whatever its recipes or rules).
    variables: variables of ``model`` (``params`` must already hold its quantizer entries).
    clips: an iterable of clip batches ``[B, T, H, W, C]``.
    period: keyframe period used to pick residual frames (required without ``trigger``).
    trigger: the :class:`~resq_jax.quant.keyframes.KeyframeTrigger` the model will run with:
      residuals are then taken where it does not fire on each example of each clip batch
      (each batch starts with a keyframe, as in ``run_clip(..., trigger=)``), so calibration
      sees the run's residuals. Its ``max_period`` is the one source of the longest distance
      between keyframes: leave ``period`` out or pass the same value (else a ValueError).
      Needs ``clips`` (not ``observations``, which do not keep the input frames).
    observations: the result of :func:`observe` instead of ``clips``.

  Every argument after ``model`` is a keyword.
  """
  check_hashable(model, "calibrate_model")
  period = keyframe_period(period, trigger, "calibrate_model")
  if trigger is not None and observations is not None:
    raise ValueError(
      "calibrate_model: trigger needs clips (its keyframes depend on the input frames, which "
      "observations do not keep): pass clips=... instead of observations"
    )
  float_model = float_twin(model) if float_model is None else float_model
  check_hashable(float_model, "calibrate_model (float_model)")
  variables = model_variables(variables)
  frame, clips = _first_frame(clips, observations)
  # A layer called several times per frame has one set of quantizers (beside its kernel),
  # calibrated on what all its calls see (each call's residuals against its own reference).
  data, owner = {}, {}
  for call in layer_calls(model, variables, frame):
    if call.recipe.is_quantized:
      data.setdefault(call.layer_path, _LayerData(call.recipe, period))
      owner[call.path] = call.layer_path
  for batch, keys in _observed_batches(float_model, variables, clips, observations, trigger):
    for path, layer_path in owner.items():
      data[layer_path].add(batch[path], keys)
  params = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]), sep="/")
  for path, layer in data.items():
    for name, value in _qparams(path, layer, methods).items():
      key = f"{path}/{name}" if path else name
      if key not in params:
        raise ValueError(
          f"variables have no parameter {key!r}: were they initialised with this quantized model?"
        )
      params[key] = jnp.asarray(value, params[key].dtype).reshape(params[key].shape)
  new_params = flax.traverse_util.unflatten_dict(params, sep="/")
  return dict(variables, params=new_params)
