"""Named evaluation sweeps (data): each is a tuple of settings, a setting a dict of ``quant``
keys that override the config's ``quant`` section (resq_jax/experiment/schema.py documents
them), plus an optional display ``name`` and report ``family``. ``configs/default.py`` puts
``SWEEPS`` into ``eval.sweeps``; ``--config.eval.sweep=NAME`` picks one.

The ``comparison`` sweep is the equal-cost comparison of docs/results.md: frame quantization
(FQ) at every bit-width, static ResQ over key grids x residual grids x periods, the reference
modes, dynamic ResQ over policy steps and ladders, and the controls / peer baselines of
docs/baselines.md (keyframe hold, Skip-Conv-style gating, DeltaCNN-style thresholded updates,
VideoIQ-style per-frame precision), all over the same layers and the same cost model.
``core`` is its subset for the other motion regimes and the pose task.
"""

FP = {"mode": "float", "name": "FP32"}

KEY_GRIDS = ((8, 8), (6, 6), (4, 4))
RESIDUAL_GRIDS = ((4, 4), (3, 3), (2, 2), (8, 4), (4, 8))
# Periods up to the clip length (8 frames in configs/results.py): a longer K runs as K = T.
# Longer periods (to 64) are measured on 64-frame clips in docs/drift.md.
PERIODS = (2, 4, 8)


def _wa(bits) -> str:
  w, a = bits
  return f"W{w}A{a}"


def fq(w: int, a: int) -> dict:
  return {"mode": "fq", "key_bits": (w, a), "name": f"FQ W{w}A{a}"}


def _stateful(mode, k, name, *, key=(8, 8), residual=(4, 4), ref_mode="closed", **extra) -> dict:
  """A setting with keyframes: ``mode`` 'resq' or 'dynamic' (then ``extra`` holds the policy)."""
  return {
    "mode": mode,
    "key_bits": tuple(key),
    "residual_bits": tuple(residual),
    "period": k,
    "ref_mode": ref_mode,
    **extra,
    "name": name,
  }


def resq(k: int, ref_mode: str = "closed", key=(8, 8), residual=(4, 4)) -> dict:
  name = f"ResQ K={k} {ref_mode} {_wa(key)}/{_wa(residual)}"
  return _stateful("resq", k, name, key=key, residual=residual, ref_mode=ref_mode)


def dynamic(step: float, k: int = 4, residual=(4, 4), bits=(0, 2, 4, 8)) -> dict:
  tag = "" if tuple(residual) == (4, 4) else f" {_wa(residual)}"
  return _stateful(
    "dynamic",
    k,
    f"DynResQ K={k} step={step:g}{tag}",
    residual=residual,
    policy="fixed_step",
    policy_bits=tuple(bits),
    policy_step=step,
  )


def ladder(thresholds, k: int = 4) -> dict:
  return _stateful(
    "dynamic",
    k,
    f"DynResQ K={k} ladder {'/'.join(f'{t:g}' for t in thresholds)}",
    policy="ladder",
    policy_bits=(0, 2, 4, 8),
    thresholds=tuple(thresholds),
  )


def hold(k: int) -> dict:
  """Keyframe hold: W8A8 keyframes, every residual skipped (the keyframe's output is reused)."""
  return _stateful(
    "dynamic", k, f"Hold K={k}", residual=(8, 8), policy="hold", policy_bits=(0,), family="hold"
  )


def _gate(family: str, label: str, threshold: float, k: int, ref_mode: str, bits: int, step):
  return _stateful(
    "dynamic",
    k,
    f"{label} K={k} gate={threshold:g}",
    residual=(8, 8),
    ref_mode=ref_mode,
    policy="gate",
    policy_bits=(0, bits),
    policy_step=step,
    gate_threshold=threshold,
    family=family,
  )


def skipconv(threshold: float, k: int = 8) -> dict:
  """Skip-Conv-style gating: residual vs the previous frame's input, skipped below the gate,
  else processed at key precision (W8A8); skipped changes are lost (open loop)."""
  return _gate("skipconv", "SkipConv", threshold, k, "prev", 8, 1.0)


def deltacnn(threshold: float, k: int = 8) -> dict:
  """DeltaCNN-style thresholded updates: skipped deltas accumulate (closed reference) until
  they pass the gate; updates are 16-bit (full-precision) residuals on 8-bit weights, on a grid
  covering the 8-bit residual grid's range (2^15 - 1 ~ 127 * 258)."""
  return _gate("deltacnn", "DeltaCNN", threshold, k, "closed", 16, 1.0 / 258)


def videoiq(thresholds, bits=((4, 4), (6, 6), (8, 8))) -> dict:
  """VideoIQ-style per-frame precision: one FQ bit-width per frame, from the frame's mean
  absolute change to the previous frame (normalised input units)."""
  return {
    "mode": "frame_precision",
    "frame_bits": tuple(tuple(b) for b in bits),
    "frame_thresholds": tuple(thresholds),
    "family": "videoiq",
    "name": "VideoIQ "
    + "/".join(_wa(b) for b in bits)
    + " @"
    + "/".join(f"{t:g}" for t in thresholds),
  }


def adaptive(entry: dict, cut: float = 0.25, drift: float = 0.0) -> dict:
  """``entry`` (a ResQ, dynamic or hold setting) with adaptive keyframes: a keyframe where the
  input's mean |x_t - x_key| exceeds ``cut`` (a scene cut) or its summed motion since the
  keyframe exceeds ``drift`` (0: off), at most ``period`` frames apart (docs/drift.md)."""
  tags = [f"cut={cut:g}"] * (cut > 0) + [f"drift={drift:g}"] * (drift > 0)
  return {
    **entry,
    "cut_threshold": cut,
    "drift_threshold": drift,
    "name": f"{entry['name']} adaptive {' '.join(tags)}",
  }


ADAPTIVE_POINTS = tuple(
  adaptive(e, cut, drift)
  for e in (hold(8), resq(8), resq(8, residual=(8, 4)))
  for cut, drift in ((0.25, 0.0), (0.25, 0.5))
)

FQ_FRONT = tuple(fq(b, b) for b in range(8, 1, -1)) + (fq(4, 8), fq(8, 4))
# Every key grid x residual grid x period, less the residual grids dearer than their key grid
# (w * a bits per MAC above the key's: a keyframe would be cheaper; the config refuses them).
STATIC_GRID = tuple(
  resq(k, key=key, residual=res)
  for key in KEY_GRIDS
  for res in RESIDUAL_GRIDS
  if res[0] * res[1] <= key[0] * key[1]
  for k in PERIODS
)
REF_MODE_POINTS = tuple(
  resq(k, mode, residual=res)
  for mode in ("key", "prev")
  for res in ((4, 4), (8, 4))
  for k in (4, 8)
)
DYNAMIC_POINTS = (
  tuple(dynamic(s) for s in (0.5, 1.0, 2.0, 4.0, 8.0))
  + tuple(dynamic(s, 8) for s in (1.0, 2.0, 4.0))
  + tuple(dynamic(s, residual=(8, 4)) for s in (1.0, 2.0, 4.0))
  + (ladder((0.5, 1.5, 7.5, 127.5)), ladder((1.0, 3.0, 15.0, 127.5)))
)
CONTROLS = (
  tuple(hold(k) for k in PERIODS)
  + tuple(skipconv(t) for t in (4.0, 8.0, 16.0, 32.0))
  + tuple(deltacnn(t) for t in (4.0, 8.0, 16.0, 32.0))
  + tuple(videoiq(t) for t in ((0.02, 0.05), (0.05, 0.1), (0.1, 0.3)))
)

SWEEPS = {
  "fp": (FP,),
  # FP; FQ W8A8 to W2A2; static ResQ per period and reference mode; dynamic ResQ per step.
  "demo": (
    FP,
    fq(8, 8),
    fq(6, 6),
    fq(5, 5),
    fq(4, 4),
    fq(3, 3),
    fq(2, 2),
    resq(2),
    resq(4),
    resq(8),
    resq(4, residual=(8, 4)),
    resq(4, "key"),
    resq(4, "prev"),
    dynamic(1.0),
    dynamic(2.0),
    dynamic(4.0),
    dynamic(8.0),
    hold(4),
  ),
  "tiny": (FP, fq(8, 8), resq(2), dynamic(1.0, 2)),
  # Clips of 4 frames (configs/cityscapes.py): periods up to 4.
  "short": (FP, fq(8, 8), fq(4, 4), resq(2), resq(4), dynamic(1.0), dynamic(2.0), hold(4)),
  # Fixed against adaptive keyframes (scene-cut trigger) on the same recipes.
  "adaptive": (FP, hold(4), adaptive(hold(4)), resq(4), adaptive(resq(4))),
  "comparison": (
    FP,
    *FQ_FRONT,
    *STATIC_GRID,
    *REF_MODE_POINTS,
    *DYNAMIC_POINTS,
    *CONTROLS,
    *ADAPTIVE_POINTS,
  ),
  "core": (
    FP,
    *FQ_FRONT,
    *(resq(k, residual=res) for res in ((4, 4), (8, 4), (2, 2)) for k in (4, 8)),
    resq(4, "key"),
    resq(4, "prev"),
    *(dynamic(s) for s in (1.0, 2.0, 4.0)),
    dynamic(2.0, residual=(8, 4)),
    *(hold(k) for k in (4, 8)),
    # Two points per peer, placed by the slow_pan sweep's costs inside 15-80% of W8A8 (one
    # point per peer often cost more than every ResQ setting, leaving nothing to compare).
    *(skipconv(t) for t in (16.0, 32.0)),
    *(deltacnn(t) for t in (32.0, 64.0)),
    *(videoiq(t) for t in ((0.05, 0.1), (0.1, 0.3))),
    *ADAPTIVE_POINTS,
  ),
}
