"""Trajectories: bouncing objects, camera pan with shake, global brightness flicker.

All functions are closed-form in the frame index t (no time stepping), vectorised over frames,
and draw their randomness from the generator passed in, so a clip is a pure function of its
seed.
"""

from __future__ import annotations

import numpy as np

from resq_jax.data.spec import Regime


def bounce(
  start: np.ndarray, velocity: np.ndarray, lo: np.ndarray, hi: np.ndarray, num_frames: int
) -> np.ndarray:
  """Positions [T, D] of a point moving at constant velocity, reflected at lo and hi.

  start, velocity, lo, hi: [D]. Reflection is the closed form of elastic bouncing (a
  triangle wave of period 2 (hi - lo)), so the speed |velocity| is preserved between bounces
  and the per-frame displacement never exceeds it.
  """
  t = np.arange(num_frames, dtype=np.float64)[:, None]
  span = np.maximum(hi - lo, 1e-9)
  m = np.mod(start - lo + velocity * t, 2.0 * span)
  return (lo + span - np.abs(m - span)).astype(np.float64)


def random_direction(rng: np.random.Generator, horizontal_bias: bool = False) -> np.ndarray:
  """Unit vector [2] (x, y); with horizontal_bias, within 30 degrees of the x axis."""
  if horizontal_bias:
    angle = rng.uniform(-np.pi / 6, np.pi / 6) + (np.pi if rng.uniform() < 0.5 else 0.0)
  else:
    angle = rng.uniform(0.0, 2.0 * np.pi)
  return np.array([np.cos(angle), np.sin(angle)])


def camera_path(
  rng: np.random.Generator, regime: Regime, num_frames: int, scale: float
) -> tuple[np.ndarray, np.ndarray]:
  """Returns (pan [T, 2], shake [T, 2]) camera offsets in pixels, as (x, y).

  pan is the smooth part, speed drawn from regime.camera_speed (scaled) in a mostly
  horizontal direction; shake is i.i.d. uniform jitter in [-regime.shake, regime.shake] per
  axis (scaled), zero at t = 0. The camera looks at world point (x, y) + pan[t] + shake[t].
  """
  speed = rng.uniform(*regime.camera_speed) * scale
  velocity = random_direction(rng, horizontal_bias=True) * speed
  pan = np.arange(num_frames)[:, None] * velocity[None, :]
  shake = rng.uniform(-1.0, 1.0, size=(num_frames, 2)) * regime.shake * scale
  shake[0] = 0.0
  return pan, shake


def flicker_gain(rng: np.random.Generator, regime: Regime, num_frames: int) -> np.ndarray:
  """Global brightness gain [T] float32: 1 + A (0.7 sin(2 pi f t + phi) + 0.3 u_t).

  A is drawn from regime.flicker, f from 0.1-0.4 cycles per frame (lamp flicker, auto
  exposure hunting) and u_t uniform in [-1, 1]; so |gain - 1| <= A.
  """
  amplitude = rng.uniform(*regime.flicker)
  freq = rng.uniform(0.1, 0.4)
  phase = rng.uniform(0.0, 2.0 * np.pi)
  t = np.arange(num_frames)
  wobble = 0.7 * np.sin(2.0 * np.pi * freq * t + phase) + 0.3 * rng.uniform(-1, 1, num_frames)
  return (1.0 + amplitude * wobble).astype(np.float32)
