"""An articulated 2-D figure with the 15 JHMDB joints, driven by smooth joint-angle motion.

Forward kinematics from a root (the belly) with joint angles that are sums of a per-clip base
pose and a sinusoid in time, so every joint trajectory is smooth (infinitely differentiable
between the root's bounces) and its speed is bounded by the angular amplitudes and frequency.

Angles are measured from "straight down" in image coordinates: direction(theta) =
(sin theta, cos theta) as (x, y) with y pointing down.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from resq_jax.data import motion
from resq_jax.data.spec import JOINT_INDEX as J
from resq_jax.data.spec import NUM_JOINTS, Regime

# Segment lengths and limb radii as fractions of the figure height (ankle to top of head).
_LEN = dict(
  torso=0.27,
  neck=0.11,
  shoulder=0.10,
  hip_width=0.07,
  hip_drop=0.03,
  upper_arm=0.15,
  forearm=0.14,
  thigh=0.21,
  shin=0.21,
)
HEAD_RADIUS = 0.075
MIN_RADIUS_PX = 0.9  # a joint's pixel centre (<= 0.71 px away) must be inside its own limb

SKIN, SHIRT, PANTS = 0, 1, 2
# (joint a, joint b, radius / height, material), painted in this order (back to front). A
# segment with a == b is a disc (the head).
LIMBS: tuple[tuple[int, int, float, int], ...] = (
  (J["left_shoulder"], J["left_elbow"], 0.040, SHIRT),
  (J["left_elbow"], J["left_wrist"], 0.033, SKIN),
  (J["left_hip"], J["left_knee"], 0.050, PANTS),
  (J["left_knee"], J["left_ankle"], 0.042, PANTS),
  # The torso is thick enough (0.085 h) to cover the shoulder and hip joints (<= 0.1 h
  # from its axis, where the 0.04 h arms and 0.05 h thighs begin) and the neck up to the
  # head, so no separate shoulder, hip or neck segments are needed.
  (J["neck"], J["belly"], 0.085, SHIRT),
  (J["face"], J["face"], HEAD_RADIUS, SKIN),
  (J["right_hip"], J["right_knee"], 0.050, PANTS),
  (J["right_knee"], J["right_ankle"], 0.042, PANTS),
  (J["right_shoulder"], J["right_elbow"], 0.040, SHIRT),
  (J["right_elbow"], J["right_wrist"], 0.033, SKIN),
)

# Actions: per joint angle (base, amplitude, phase) in radians; `side` actions are seen from the
# side (limbs swing along the walking direction), the others from the front (limbs mirrored).
_ANGLES = ("lean", "nod", "sh_r", "sh_l", "el_r", "el_l", "hip_r", "hip_l", "kn_r", "kn_l")
_ACTIONS: dict[str, tuple[bool, float, dict[str, tuple[float, float, float]]]] = {
  # name: (side view, shoulder/hip width factor, angle table)
  "walk": (
    True,
    0.35,
    dict(
      lean=(0.05, 0.03, 0.0),
      nod=(0.0, 0.05, 0.0),
      sh_r=(0.0, 0.5, 0.0),
      sh_l=(0.0, 0.5, np.pi),
      el_r=(0.35, 0.2, 0.0),
      el_l=(0.35, 0.2, np.pi),
      hip_r=(0.0, 0.45, np.pi),
      hip_l=(0.0, 0.45, 0.0),
      kn_r=(0.35, 0.3, np.pi / 2),
      kn_l=(0.35, 0.3, -np.pi / 2),
    ),
  ),
  "jumping_jack": (
    False,
    1.0,
    dict(
      lean=(0.0, 0.03, 0.0),
      nod=(0.0, 0.05, 0.5),
      sh_r=(1.3, 1.0, 0.0),
      sh_l=(1.3, 1.0, 0.0),
      el_r=(0.2, 0.1, 0.0),
      el_l=(0.2, 0.1, 0.0),
      hip_r=(0.22, 0.15, 0.0),
      hip_l=(0.22, 0.15, 0.0),
      kn_r=(0.1, 0.08, 0.0),
      kn_l=(0.1, 0.08, 0.0),
    ),
  ),
  "wave": (
    False,
    1.0,
    dict(
      lean=(0.0, 0.06, 0.0),
      nod=(0.0, 0.1, 1.0),
      sh_r=(2.3, 0.25, 0.0),
      sh_l=(0.25, 0.1, 0.0),
      el_r=(0.7, 0.6, np.pi / 2),
      el_l=(0.2, 0.1, 0.0),
      hip_r=(0.12, 0.03, 0.0),
      hip_l=(0.12, 0.03, np.pi),
      kn_r=(0.05, 0.05, 0.0),
      kn_l=(0.05, 0.05, np.pi),
    ),
  ),
}
ACTIONS: tuple[str, ...] = tuple(_ACTIONS)


@dataclasses.dataclass(frozen=True)
class FigureMotion:
  """A figure's trajectory: joints [T, NUM_JOINTS, 2] as (x, y) pixels, and how to draw it."""

  joints: np.ndarray
  height: float  # pixels, ankle to top of head when standing straight
  root_velocity: float  # horizontal speed of the belly in pixels per frame (signed)
  action: str
  limb_radii: tuple[float, ...]  # pixels, one per LIMBS entry


def _direction(theta: np.ndarray) -> np.ndarray:
  """[T] angles -> [T, 2] unit vectors (x, y); theta = 0 points down the image."""
  return np.stack([np.sin(theta), np.cos(theta)], axis=-1)


def _angles(
  rng: np.random.Generator, action: str, freq: float, num_frames: int
) -> dict[str, np.ndarray]:
  """Per-angle time series [T]: jittered base + amplitude * sin(2 pi f t + phase)."""
  _, _, table = _ACTIONS[action]
  t = np.arange(num_frames)
  phase0 = rng.uniform(0.0, 2.0 * np.pi)
  out = {}
  for name in _ANGLES:
    base, amp, phase = table[name]
    base *= rng.uniform(0.8, 1.2)
    amp *= rng.uniform(0.8, 1.2)
    out[name] = base + amp * np.sin(2.0 * np.pi * freq * t + phase + phase0)
  return out


def sample_figure(
  content_rng: np.random.Generator,
  motion_rng: np.random.Generator,
  regime: Regime,
  height: int,
  width: int,
  num_frames: int,
) -> FigureMotion:
  """Samples a figure and its motion in a height x width frame.

  content_rng fixes who the figure is (action, size, pose jitter, start) and is shared by all
  regimes; motion_rng fixes how fast it moves (regime-specific speed and gait frequency).
  """
  scale = min(height, width) / 64.0
  action = ACTIONS[int(content_rng.integers(len(ACTIONS)))]
  side_view, width_factor, _ = _ACTIONS[action]
  fig_h = content_rng.uniform(0.55, 0.72) * min(height, width)
  if action == "wave" and content_rng.uniform() < 0.5:
    swap = True  # wave with the left arm instead
  else:
    swap = False
  ground_y = content_rng.uniform(0.88, 0.96) * (height - 1)
  x_lo, x_hi = 0.25 * fig_h, (width - 1) - 0.25 * fig_h
  x0 = content_rng.uniform(x_lo, x_hi)
  freq = motion_rng.uniform(*regime.gait_frequency)
  speed = motion_rng.uniform(*regime.figure_speed) * scale
  direction = 1.0 if motion_rng.uniform() < 0.5 else -1.0
  ang = _angles(content_rng, action, freq, num_frames)
  if swap:
    for a, b in (("sh_r", "sh_l"), ("el_r", "el_l")):
      ang[a], ang[b] = ang[b], ang[a]

  t = np.arange(num_frames)
  root_x = motion.bounce(
    np.array([x0]), np.array([speed * direction]), np.array([x_lo]), np.array([x_hi]), num_frames
  )[:, 0]
  legs = (_LEN["hip_drop"] + _LEN["thigh"] + _LEN["shin"]) * fig_h
  bob = 0.015 * fig_h * np.sin(4.0 * np.pi * freq * t)  # two bobs per gait cycle
  belly = np.stack([root_x, ground_y - legs + bob], axis=-1)  # [T, 2]

  lean = ang["lean"] * (direction if side_view else 1.0)
  up = -_direction(lean)
  perp = np.stack([np.cos(lean), -np.sin(lean)], axis=-1)  # image-right when upright
  joints = np.zeros((num_frames, NUM_JOINTS, 2))
  joints[:, J["belly"]] = belly
  neck = belly + _LEN["torso"] * fig_h * up
  joints[:, J["neck"]] = neck
  joints[:, J["face"]] = neck - _LEN["neck"] * fig_h * _direction(lean + ang["nod"])
  # side = +1 is the figure's left, drawn on the image right (the figure faces the camera);
  # `sign` mirrors front-view angles and makes side-view limbs swing along the walk.
  for side, suffix in ((-1.0, "r"), (1.0, "l")):
    sign = direction if side_view else side
    name = "right" if suffix == "r" else "left"
    shoulder = neck + side * _LEN["shoulder"] * width_factor * fig_h * perp
    theta = lean + sign * ang["sh_" + suffix]
    elbow = shoulder + _LEN["upper_arm"] * fig_h * _direction(theta)
    wrist = elbow + _LEN["forearm"] * fig_h * _direction(theta + sign * ang["el_" + suffix])
    hip = (
      belly + side * _LEN["hip_width"] * width_factor * fig_h * perp - _LEN["hip_drop"] * fig_h * up
    )
    theta = 0.3 * lean + sign * ang["hip_" + suffix]
    knee = hip + _LEN["thigh"] * fig_h * _direction(theta)
    ankle = knee + _LEN["shin"] * fig_h * _direction(theta - sign * ang["kn_" + suffix])
    for joint, value in (
      ("shoulder", shoulder),
      ("elbow", elbow),
      ("wrist", wrist),
      ("hip", hip),
      ("knee", knee),
      ("ankle", ankle),
    ):
      joints[:, J[f"{name}_{joint}"]] = value
  radii = tuple(max(r * fig_h, MIN_RADIUS_PX) for _, _, r, _ in LIMBS)
  return FigureMotion(joints, float(fig_h), float(speed * direction), action, radii)
