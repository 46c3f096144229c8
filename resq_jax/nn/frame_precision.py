"""VideoIQ-style per-frame precision as a policy over the same layers (docs/baselines.md).

VideoIQ (Sun et al. 2021) runs each frame of a video at one precision chosen for that frame
from a few candidates. Here the candidates are recipes of one network (e.g. the tiny SegNet
under ``fq_recipe(4, 4)``, ``fq_recipe(6, 6)`` and ``fq_recipe(8, 8)``), each with its own
calibrated variables, and the choice is a fixed rule on the frame's change (VideoIQ learns its
policy network; this is the rule-based stand-in, so that the comparison is with the same layers
and the same cost accounting):

  ``m_t = mean |x_t - x_{t-1}|`` over ``H, W, C`` per clip row, ``m_0 = inf`` (the first frame
  of a clip gets the top candidate); candidate index = the number of thresholds ``< m_t``.

:func:`run_clip_frame_precision` runs every candidate on every frame (period 1: the candidates
are stateless) and selects outputs and per-layer stats per ``(t, b)``. FQ stats carry each
frame's bits (``act_bits = a_bits * N``, ``w_bits``), so ``bops_report`` of the selected stats
counts every frame at its chosen precision. The rule itself costs one mean of ``|x_t - x_{t-1}|``
(``H * W * C`` subtractions and additions) and ``len(thresholds)`` comparisons per frame: not bit
operations of a layer, not in the BOPs.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from resq_jax.nn.runner import ClipResult, run_clip
from resq_jax.nn.tracing import check_hashable, model_variables

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class FramePrecisionPolicy:
  """``clip [B, T, ...] -> candidate index [B, T]`` (int32): the number of ``thresholds``
  strictly below ``m_t = mean |x_t - x_{t-1}|`` (over every axis after T), the top candidate
  ``len(thresholds)`` on the first frame and on a frame whose ``m_t`` is NaN. Thresholds are in
  the units of the clip (normalised frames), positive and strictly ascending."""

  thresholds: tuple[float, ...] = (0.05, 0.15)

  def __post_init__(self):
    # A tuple keeps the policy hashable (a static argument of the jitted runner).
    object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
    t = self.thresholds
    bad = any(not (v > 0 and math.isfinite(v)) for v in t)
    if bad or any(not a < b for a, b in zip(t, t[1:])):
      raise ValueError(
        f"thresholds must be positive, finite and strictly ascending, got thresholds={t}"
      )

  @property
  def num_candidates(self) -> int:
    return len(self.thresholds) + 1

  def magnitudes(self, clip: Array) -> Array:
    """``m [B, T]``: ``mean |x_t - x_{t-1}|`` over the frame's axes, ``inf`` at ``t = 0``."""
    axes = tuple(range(2, clip.ndim))
    change = jnp.mean(jnp.abs(clip[:, 1:] - clip[:, :-1]), axis=axes)
    first = jnp.full((clip.shape[0], 1), jnp.inf, change.dtype)
    return jnp.concatenate([first, change], axis=1)

  def __call__(self, clip: Array) -> Array:
    m = self.magnitudes(clip)
    table = jnp.asarray(self.thresholds, m.dtype).reshape(1, 1, -1)
    count = jnp.sum((m[..., None] > table).astype(jnp.int32), axis=-1)
    return jnp.where(jnp.isnan(m), jnp.int32(len(self.thresholds)), count)


def _check_clip(clip: Array) -> None:
  if clip.ndim < 3 or clip.shape[0] < 1 or clip.shape[1] < 1:
    raise ValueError(f"clip must be [B, T, ...] with B, T >= 1, got shape {clip.shape}")
  if not jnp.issubdtype(clip.dtype, jnp.floating):
    raise TypeError(f"clip must be floating point, got dtype {clip.dtype}")


def run_clip_frame_precision(
  models, variables, clip: Array, policy: FramePrecisionPolicy, *, check: bool = True
) -> tuple[ClipResult, Array]:
  """Run ``clip [B, T, H, W, C]`` with each frame at the precision ``policy`` picks.

  Args:
    models: one model per candidate, ascending precision (hashable Flax modules taking
      ``(frame, phase=...)``, e.g. the same SegNet under stateless FQ recipes).
    variables: their variables, one set per model (each calibrated for its own recipe).
    policy: :class:`FramePrecisionPolicy` with ``len(models) - 1`` thresholds.
    check: refuse stale quantizer parameters (as :func:`~resq_jax.nn.runner.run_clip`).
  Returns:
    ``(ClipResult, index)``: ``outputs [B, T, ...]`` and ``stats[layer][name] [T, B, ...]`` of
    the chosen candidate per frame (``bops_report`` counts each frame at its precision), state
    ``{}`` (every candidate runs with period 1); ``index [B, T]`` (int32) the chosen candidates.
  """
  models, variables = tuple(models), tuple(variables)
  if not isinstance(policy, FramePrecisionPolicy):
    raise TypeError(f"policy must be a FramePrecisionPolicy, got {type(policy).__name__}")
  if not len(models) == len(variables) == policy.num_candidates:
    raise ValueError(
      f"{len(models)} models and {len(variables)} variable sets for a policy with "
      f"{policy.num_candidates} candidates: give one model and one variable set per candidate"
    )
  for model in models:
    check_hashable(model, "run_clip_frame_precision")
  _check_clip(clip)
  if check:
    from resq_jax.nn.weights import check_quantizers  # weights imports layers and costs

    for model, v in zip(models, variables):
      check_quantizers(model, model_variables(v), clip[:, 0])
  variables = tuple(model_variables(v) for v in variables)
  return _run_frame_precision(models, variables, clip, policy)


def _select(index: Array, candidates) -> Array:
  """``candidates[index[i, j]][i, j, ...]`` for arrays ``[I, J, ...]``, ``index [I, J]``."""
  out = candidates[0]
  index = index.reshape(index.shape + (1,) * (out.ndim - index.ndim))
  for k, value in enumerate(candidates[1:], start=1):
    out = jnp.where(index == k, value, out)
  return out


@functools.partial(jax.jit, static_argnames=("models", "policy"))
def _run_frame_precision(models, variables, clip: Array, policy: FramePrecisionPolicy):
  """The jitted body of :func:`run_clip_frame_precision`, which checks the arguments."""
  index = policy(clip)  # [B, T]
  runs = [run_clip(m, v, clip, period=1, check=False) for m, v in zip(models, variables)]
  structures = {str(jax.tree.structure(r.stats)) for r in runs}
  if len(structures) != 1:
    raise ValueError(
      "the candidate models record different stats (layers or recipes of another kind): "
      "frame precision selects among recipes of one network"
    )
  outputs = jax.tree.map(lambda *c: _select(index, c), *[r.outputs for r in runs])
  stats = jax.tree.map(lambda *c: _select(index.T, c), *[r.stats for r in runs])  # [T, B, ...]
  result = ClipResult(outputs, stats, {})
  keyframes = [getattr(r, "keyframes", None) for r in runs]
  if all(k is not None for k in keyframes):  # where run_clip reports its keyframes [B, T]
    result = result._replace(keyframes=_select(index, keyframes))
  return result, index


__all__ = ["FramePrecisionPolicy", "run_clip_frame_precision"]
