"""Recipe execution inside a Flax module: quantizer parameters, ResQ state and per-frame stats.

Collections a quantized layer uses:
  * ``params``: the layer's weights and its quantizer scales / zero points (learnable);
  * ``resq_state``: the ResQ carry ``ref`` / ``yref`` (only for 'resq' and 'dynamic' recipes);
  * ``calibration``: written when mutable: the layer input ``x`` and effective weights ``w``;
  * ``resq_stats``: written when mutable, per example ``[B]``: ``act_bits`` (sum over input
    locations of the activation bit-width used, int32), ``w_bits`` (int32), ``density`` (fraction
    of locations not skipped), and ``bit_map`` ``[B, ...]`` (int8) for dynamic layers.
BOPs follow from ``act_bits`` and the layer's static MACs (``resq_jax.nn.costs``).

One state per call: a layer called several times in one ``apply`` (weight sharing: a shared
head, recurrent refinement) keeps one set of parameters (weights and quantizer scales, beside
its kernel) but one ResQ state, one set of stats and one calibration record per call. The
first call's live in the layer's own scope (``resq_state/<layer>/ref``), the n-th call's
(n >= 1) in a child scope ``call<n>`` (``resq_state/<layer>/call1/ref``): :func:`call_path`.
Calls are counted per layer and per ``apply`` (:func:`next_call_index`).

The phase: ``quantized_linear(..., phase=None)`` falls back to the phase of the enclosing
:func:`phase_scope` (``resq_jax.quantize`` sets it around the model, so the model's own code
never passes it).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from resq_jax.quant import dynamic as dyn
from resq_jax.quant import resq
from resq_jax.quant.cost import FP32_BITS, LayerCost
from resq_jax.quant.recipe import LayerRecipe
from resq_jax.quant.spec import QuantSpec
from resq_jax.quant.uniform import fake_quant, param_shape, scale_floor

PHASES = ("key", "residual")
# Initial activation ranges before calibration or learning: a generic unit-scale guess.
KEY_INIT_RANGE = (-3.0, 3.0)
RESIDUAL_INIT_RANGE = (-1.0, 1.0)


def weight_scale_init(w: jax.Array, spec: QuantSpec) -> jax.Array:
  """Min-max scale per channel (or per tensor): ``max|W| / qmax``, floored."""
  axis = None if spec.channel_axis is None else spec.channel_axis % w.ndim
  axes = tuple(i for i in range(w.ndim) if i != axis)
  amax = jnp.max(jnp.abs(w), axis=axes).reshape(param_shape(w.shape, spec))
  return jnp.maximum(amax / max(1, spec.qmax), scale_floor(w.dtype))


def act_qparams_init(lo: float, hi: float, spec: QuantSpec) -> tuple[float, float]:
  """(scale, zero_point) covering ``[lo, hi]`` on the grid of ``spec`` (zero included)."""
  lo, hi = min(lo, 0.0), max(hi, 0.0)
  if spec.symmetric:
    return max(abs(lo), abs(hi)) / max(1, spec.qmax), 0.0
  scale = (hi - lo) / (spec.qmax - spec.qmin)
  return scale, float(np.clip(spec.qmin - round(lo / scale), spec.qmin, spec.qmax))


# The quantizers of a layer and the names of their parameters: the one place that defines them
# (calibration, weight loading and the optimizer partition all find quantizer parameters here).
KEY_W, KEY_A, RES_W, RES_A = "key_w", "key_a", "res_w", "res_a"
WEIGHT_QUANTIZERS = (KEY_W, RES_W)
ACT_QUANTIZERS = (KEY_A, RES_A)


def scale_name(quantizer: str) -> str:
  return f"{quantizer}_scale"


def zero_point_name(quantizer: str) -> str:
  return f"{quantizer}_zero_point"


QUANT_PARAMS = tuple(scale_name(q) for q in WEIGHT_QUANTIZERS + ACT_QUANTIZERS) + tuple(
  zero_point_name(q) for q in ACT_QUANTIZERS
)


def is_quantizer_param(path) -> bool:
  """Whether a parameter path (a ``jax.tree_util`` key path, a tuple of names or a '/'-joined
  string) ends in a quantizer's scale or zero point."""
  last = path.rsplit("/", 1)[-1] if isinstance(path, str) else path[-1]
  return str(getattr(last, "key", last)) in QUANT_PARAMS


def _weight_quantizer(module, name: str, w: jax.Array, spec: QuantSpec):
  scale = module.param(scale_name(name), lambda _: weight_scale_init(w, spec))
  return lambda v: fake_quant(v, scale, spec=spec)


def _act_quantizer(
  module, name: str, spec: QuantSpec, init_range: tuple[float, float], x: jax.Array
):
  """The fake quantizer of activations like ``x`` and its scale parameter: one scale (and zero
  point) per tensor, or per channel of ``spec.channel_axis`` (e.g. per-channel residuals)."""
  s0, z0 = act_qparams_init(*init_range, spec)
  shape = () if spec.channel_axis is None else (x.shape[spec.channel_axis],)
  scale = module.param(scale_name(name), lambda _: jnp.full(shape, s0, jnp.float32))
  zero_point = None
  if not spec.symmetric:
    zero_point = module.param(zero_point_name(name), lambda _: jnp.full(shape, z0, jnp.float32))
  # batch_dims=1: LSQ's N counts features per example, so folding frames or keyframe groups
  # into the batch leaves the scale gradient a plain sum over examples.
  return (lambda v: fake_quant(v, scale, zero_point, spec=spec, batch_dims=1)), scale


_PHASE = contextvars.ContextVar("resq_jax_phase", default=None)


@contextlib.contextmanager
def phase_scope(phase: str | None):
  """Layers traced inside run with ``phase`` unless given one (trace time only)."""
  token = _PHASE.set(phase)
  try:
    yield
  finally:
    _PHASE.reset(token)


_PROBING = contextvars.ContextVar("resq_jax_probing", default=False)


@contextlib.contextmanager
def probe_scope():
  """Layers traced inside compute their float outputs from the probed input (``_probe``),
  including ops intercepted by ``resq_jax.quantize`` under the float recipe, which otherwise
  return the op's own output (trace time only; ``resq_jax.nn.sensitivity``)."""
  token = _PROBING.set(True)
  try:
    yield
  finally:
    _PROBING.reset(token)


def probing() -> bool:
  return _PROBING.get()


# Calls per layer in the current apply: {root scope of the apply: {layer path: calls so far}}.
# Every apply binds a new root scope, so the count restarts with each apply (and the weak keys
# let it go with the apply).
_CALLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def variable_path(module) -> tuple[str, ...]:
  """Where a bound module's variables live (the names of its scope's ancestors). Not always
  ``module.path``: a submodule given as an attribute of a model wrapped with shared scope
  (``nn.share_scope``: ``quantize``, ``with_recipe_rules``) reports the wrapper's attribute
  name in its path, while its variables sit where the unwrapped model puts them."""
  names, scope = [], module.scope
  while scope is not None and scope.parent is not None:
    names.append(scope.name)
    scope = scope.parent
  return tuple(names[::-1])


def next_call_index(module) -> int:
  """0 for the first call of bound ``module`` in this apply, 1 for the second, ..."""
  counts = _CALLS.setdefault(module.scope.root, {})
  path = variable_path(module)
  index = counts.get(path, 0)
  counts[path] = index + 1
  return index


def call_path(path: tuple[str, ...], index: int) -> tuple[str, ...]:
  """Where call ``index`` of the layer at ``path`` keeps its state, stats and calibration."""
  return path if index == 0 else (*path, f"call{index}")


class LayerCall(NamedTuple):
  """One call of a quantized layer, as seen by an abstract trace (``resq_jax.nn.tracing``).

  ``path``: where the call's state and stats live ('/'-joined, :func:`call_path`);
  ``layer_path``: where the layer's parameters live; ``layer``: the bound layer (a
  ``QuantLayer``, or an ``InterceptedOp`` view of a plain Flax op); ``x_shape``: its input
  shape; ``recipe``: the recipe it executes; ``cost``: its static cost for one example."""

  path: str
  layer_path: str
  layer: Any
  x_shape: tuple
  recipe: LayerRecipe
  cost: LayerCost


_CALL_LOG = contextvars.ContextVar("resq_jax_call_log", default=None)


@contextlib.contextmanager
def recording_calls(on_record: Callable[[LayerCall], None] | None = None):
  """Collects a :class:`LayerCall` for every quantized layer call traced inside, calling
  ``on_record(call)`` as each is made (inside the trace, while the layer is bound)."""
  log: list[LayerCall] = []

  def record(call: LayerCall) -> None:
    log.append(call)
    if on_record is not None:
      on_record(call)

  token = _CALL_LOG.set(record)
  try:
    yield log
  finally:
    _CALL_LOG.reset(token)


def _record(site, batch: int, n_loc: int, a_bits, w_bits: int, bit_map=None) -> None:
  """Write this frame's stats; ``a_bits`` is an int or a per-location map ``[B, ...]``."""
  if not site.is_mutable_collection("resq_stats"):
    return
  if bit_map is None:
    act_bits = jnp.full((batch,), a_bits * n_loc, jnp.int32)
    density = jnp.full((batch,), 1.0 if a_bits > 0 else 0.0, jnp.float32)
  else:
    flat = bit_map.reshape(batch, -1)
    act_bits = jnp.sum(flat, axis=1, dtype=jnp.int32)
    density = jnp.mean((flat > 0).astype(jnp.float32), axis=1)
    site.put_variable("resq_stats", "bit_map", bit_map.astype(jnp.int8))
  site.put_variable("resq_stats", "act_bits", act_bits)
  site.put_variable("resq_stats", "w_bits", jnp.full((batch,), w_bits, jnp.int32))
  site.put_variable("resq_stats", "density", density)


def quantized_linear(
  module,
  x: jax.Array,
  w: jax.Array,
  b: jax.Array | None,
  *,
  linear,
  recipe: LayerRecipe,
  phase: str | None,
  cost: Callable[[], LayerCost] | None = None,
  layer=None,
) -> jax.Array:
  """Run ``y = L(x; W) + b`` under ``recipe`` inside ``module`` (a compact Flax method).

  Args:
    x: input ``[B, ..., C_in]`` (channels last).
    w: weights whose last axis is the output channel (per-channel weight scales live there).
    linear: ``(x, w) -> L(x; w)`` without bias.
    phase: 'key' or 'residual'; ignored by 'float' and 'fq' recipes, for which None is 'key'.
      None: the phase of the enclosing :func:`phase_scope`; still None under a recipe with
      state (ResQ) raises outside ``init``: a silent default would run the keyframe branch on
      every frame.
    cost: ``() -> LayerCost`` of this call (read only by an abstract trace that records calls).
    layer: what a recorded call reports as its layer (default ``module``).
  Returns ``L(q(x); q(W)) + b`` ``[B, ..., C_out]``. The call's state, stats and calibration
  record live in its own scope (:func:`call_path`); parameters in ``module``'s.
  """
  index = next_call_index(module)
  site = module.scope if index == 0 else module.scope.push(f"call{index}", reuse=True)
  record = _CALL_LOG.get()
  if record is not None and cost is not None:
    path = variable_path(module)
    record(
      LayerCall(
        "/".join(call_path(path, index)),
        "/".join(path),
        module if layer is None else layer,
        tuple(x.shape),
        recipe,
        cost(),
      )
    )
  phase = _PHASE.get() if phase is None else phase
  if phase is None:
    if recipe.has_state and not module.is_initializing():
      raise ValueError(
        f"layer {'/'.join(variable_path(module))!r} runs a {recipe.mode!r} recipe, which "
        "carries state across frames: call it with phase='key' or phase='residual' (run_clip and "
        "stream_step do), or run the model through run_clip / stream_step"
      )
    phase = "key"
  if phase not in PHASES:
    raise ValueError(f"phase must be one of {PHASES}, got phase={phase!r}")
  batch, n_loc = x.shape[0], math.prod(x.shape[1:-1])
  x = _probe(site, x)
  if site.is_mutable_collection("calibration"):
    # Observation for post-training calibration (resq_jax.nn.calibrate): the layer's input
    # and the weights that actually run (BatchNorm folded).
    site.put_variable("calibration", "x", x)
    site.put_variable("calibration", "w", w)
  if recipe.mode == "float":
    _record(site, batch, n_loc, FP32_BITS, FP32_BITS)
    return resq.add_bias(linear(x, w), b)
  quant_kw = _weight_quantizer(module, KEY_W, w, recipe.key.weight)
  quant_ka, _ = _act_quantizer(module, KEY_A, recipe.key.act, KEY_INIT_RANGE, x)
  key_bits = recipe.key.bits
  if recipe.mode == "fq":
    _record(site, batch, n_loc, key_bits[1], key_bits[0])
    return resq.fq_forward(x, w, b, linear=linear, quant_x=quant_ka, quant_w=quant_kw)
  # ResQ: both branches' parameters exist whatever the phase, so that init creates them all.
  quant_rw = _weight_quantizer(module, RES_W, w, recipe.residual.weight)
  quant_ra, res_scale = _act_quantizer(module, RES_A, recipe.residual.act, RESIDUAL_INIT_RANGE, x)
  if phase == "key":
    y, new_state = resq.key_forward(
      x, w, b, linear=linear, quant_x=quant_ka, quant_w=quant_kw, ref_mode=recipe.ref_mode
    )
    key_map = None
    if recipe.mode == "dynamic":
      key_map = jnp.full(x.shape[:-1], key_bits[1], jnp.int32)
    _record(site, batch, n_loc, key_bits[1], key_bits[0], key_map)
  else:
    state = _state(site)
    if recipe.mode == "dynamic":
      quant_r = dyn.dynamic_residual_quantizer(recipe.policy, jax.lax.stop_gradient(res_scale))
    else:
      quant_r = resq.static_residual_quantizer(quant_ra)
    y, new_state, bit_map = resq.residual_forward(
      x,
      w,
      state,
      linear=linear,
      quant_r=quant_r,
      quant_w=quant_rw,
      ref_mode=recipe.ref_mode,
      stop_ref_gradient=recipe.stop_ref_gradient,
    )
    _record(site, batch, n_loc, recipe.residual.act.bits, recipe.residual.weight.bits, bit_map)
  _write_state(site, new_state)
  return y


PROBES = "perturbations"


def _probe(site, x: jax.Array) -> jax.Array:
  """``x`` plus the layer's zero perturbation when one is asked for (``resq_jax.nn.sensitivity``:
  the gradient of the output with respect to it is the gradient at this layer's input). A
  ``perturbations`` collection made mutable outside ``init`` creates zeros; passed in, it is
  added; otherwise (every ordinary run) nothing happens."""
  if site.has_variable(PROBES, "input"):
    return x + site.get_variable(PROBES, "input")
  if site.is_mutable_collection(PROBES) and not site.get_flag("initializing", False):
    site.put_variable(PROBES, "input", jnp.zeros_like(x))
  return x


def _state(site) -> resq.ResQState:
  ref = site.get_variable("resq_state", "ref")
  yref = site.get_variable("resq_state", "yref")
  if ref is None or yref is None:
    raise ValueError(
      f"layer {'/'.join(site.path)!r} has no ResQ state: run a keyframe ('key' phase) "
      "before a residual frame"
    )
  return resq.ResQState(ref=ref, yref=yref)


def _write_state(site, state: resq.ResQState) -> None:
  if site.is_mutable_collection("resq_state"):
    site.put_variable("resq_state", "ref", state.ref)
    site.put_variable("resq_state", "yref", state.yref)
