"""SynthRes vocabulary: classes, skeleton, motion regimes, splits, and input validation.

Everything a consumer of SynthRes needs to interpret the labels lives here, with no NumPy
work, so that models and metrics can import it cheaply.

Pixel coordinate convention (shared by joints, bounding boxes and rendering): pixel (row i,
column j) has its centre at (x=j, y=i); it covers [j - 0.5, j + 0.5] x [i - 0.5, i + 0.5].
"""

from __future__ import annotations

import dataclasses
import operator

# --- Semantic classes -------------------------------------------------------------------------
# Two "stuff" classes split the background at a wavy horizon (as Cityscapes splits road from
# building/sky), one person class and four rigid object shapes.
CLASS_NAMES: tuple[str, ...] = (
  "backdrop",
  "ground",
  "person",
  "ellipse",
  "rectangle",
  "triangle",
  "cross",
)
NUM_CLASSES: int = len(CLASS_NAMES)
STUFF_CLASSES: tuple[int, ...] = (0, 1)
PERSON_CLASS: int = 2
SHAPE_CLASSES: tuple[int, ...] = (3, 4, 5, 6)
# RGB colours used by the visualisation (one per class).
CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
  (70, 130, 180),
  (128, 64, 128),
  (220, 20, 60),
  (250, 170, 30),
  (0, 200, 90),
  (160, 80, 255),
  (0, 220, 220),
)

# --- Instances -------------------------------------------------------------------------------
# Instance 0 is all stuff (background), 1 the person, 2.. the objects in sampling order.
BACKGROUND_ID: int = 0
PERSON_ID: int = 1
MAX_OBJECTS: int = 3

# --- Skeleton (JHMDB joint set and order) ----------------------------------------------------
JOINT_NAMES: tuple[str, ...] = (
  "neck",
  "belly",
  "face",
  "right_shoulder",
  "left_shoulder",
  "right_hip",
  "left_hip",
  "right_elbow",
  "left_elbow",
  "right_knee",
  "left_knee",
  "right_wrist",
  "left_wrist",
  "right_ankle",
  "left_ankle",
)
NUM_JOINTS: int = len(JOINT_NAMES)
_J = {name: i for i, name in enumerate(JOINT_NAMES)}
SKELETON: tuple[tuple[int, int], ...] = tuple(
  (_J[a], _J[b])
  for a, b in (
    ("neck", "face"),
    ("neck", "belly"),
    ("neck", "right_shoulder"),
    ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"),
    ("neck", "left_shoulder"),
    ("left_shoulder", "left_elbow"),
    ("left_elbow", "left_wrist"),
    ("belly", "right_hip"),
    ("right_hip", "right_knee"),
    ("right_knee", "right_ankle"),
    ("belly", "left_hip"),
    ("left_hip", "left_knee"),
    ("left_knee", "left_ankle"),
  )
)
JOINT_INDEX: dict[str, int] = dict(_J)


# --- Motion regimes --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Regime:
  """Ranges (lo, hi) from which each clip draws its motion and appearance parameters.

  Speeds are in pixels per frame at the reference size of 64 pixels and scale linearly with
  min(height, width) / 64, so a regime looks the same at every resolution.
  """

  name: str
  camera_speed: tuple[float, float]  # smooth pan speed
  shake: float  # max per-frame camera jitter per axis (uniform in [-shake, shake])
  object_speed: tuple[float, float]
  figure_speed: tuple[float, float]  # horizontal walking speed of the figure root
  gait_frequency: tuple[float, float]  # joint-angle oscillation, cycles per frame
  blur_sigma: tuple[float, float]  # background smoothing (pixels); small = sharp texture
  texture_zoom: tuple[int, ...]  # texture pyramid levels: 0 = native, 2 = 4x finer detail
  flicker: tuple[float, float]  # relative amplitude of the global brightness gain
  noise_sigma: tuple[float, float]  # sensor noise, in 8-bit grey levels
  # Hard scene cuts: each frame t >= min_cut_gap frames after the clip start or the last cut
  # starts a new, independently drawn scene (backdrop, objects, figure, camera) with this
  # probability. 0: one scene per clip.
  cut_probability: float = 0.0
  min_cut_gap: int = 4


REGIME_SPECS: dict[str, Regime] = {
  r.name: r
  for r in (
    Regime(
      "static_cam",
      camera_speed=(0.0, 0.0),
      shake=0.0,
      object_speed=(0.3, 1.0),
      figure_speed=(0.1, 0.5),
      gait_frequency=(0.02, 0.05),
      blur_sigma=(0.6, 1.6),
      texture_zoom=(0, 1),
      flicker=(0.0, 0.0),
      noise_sigma=(1.0, 2.5),
    ),
    Regime(
      "slow_pan",
      camera_speed=(0.2, 0.8),
      shake=0.0,
      object_speed=(0.3, 1.2),
      figure_speed=(0.1, 0.6),
      gait_frequency=(0.02, 0.05),
      blur_sigma=(0.6, 1.6),
      texture_zoom=(0, 1),
      flicker=(0.0, 0.01),
      noise_sigma=(1.0, 2.5),
    ),
    # The stress case: sharp, fine texture under a fast, shaky pan and fast objects, so
    # frame-to-frame residuals are large.
    Regime(
      "fast_pan",
      camera_speed=(2.5, 5.0),
      shake=0.5,
      object_speed=(2.0, 4.0),
      figure_speed=(1.0, 2.0),
      gait_frequency=(0.05, 0.08),
      blur_sigma=(0.0, 0.3),
      texture_zoom=(1, 2),
      flicker=(0.0, 0.01),
      noise_sigma=(1.0, 2.5),
    ),
    # Static camera, slow content, strong global brightness changes: residuals are
    # dense but low-frequency.
    Regime(
      "flicker",
      camera_speed=(0.0, 0.0),
      shake=0.0,
      object_speed=(0.3, 1.0),
      figure_speed=(0.1, 0.5),
      gait_frequency=(0.02, 0.05),
      blur_sigma=(0.6, 1.6),
      texture_zoom=(0, 1),
      flicker=(0.08, 0.2),
      noise_sigma=(1.0, 2.5),
    ),
    # slow_pan plus hard scene cuts (about one every 12 frames, at least 4 apart): the case
    # for adaptive keyframes (docs/drift.md). Must stay last: a regime's position in REGIMES
    # seeds its motion streams, so the regimes before it keep their clips bit for bit.
    Regime(
      "cuts",
      camera_speed=(0.2, 0.8),
      shake=0.0,
      object_speed=(0.3, 1.2),
      figure_speed=(0.1, 0.6),
      gait_frequency=(0.02, 0.05),
      blur_sigma=(0.6, 1.6),
      texture_zoom=(0, 1),
      flicker=(0.0, 0.01),
      noise_sigma=(1.0, 2.5),
      cut_probability=1.0 / 12.0,
      min_cut_gap=4,
    ),
  )
}
REGIMES: tuple[str, ...] = tuple(REGIME_SPECS)
SPLITS: tuple[str, ...] = ("train", "validation", "test")

# --- Sizes -----------------------------------------------------------------------------------
DEFAULT_HEIGHT, DEFAULT_WIDTH, DEFAULT_NUM_FRAMES = 64, 64, 16
REFERENCE_SIZE = 64  # regime speeds and figure proportions are specified at this size
# Below 32 pixels the limbs of the figure get thinner than a pixel and joints stop being
# covered by their own limb, so visibility labels would become meaningless.
MIN_SIZE = 32
MAX_SIZE = 1024  # instance/semantic maps and texture crops are sized for this at most


def validate_regime(regime: str) -> Regime:
  """Returns the regime's spec; ValueError listing the valid names otherwise."""
  if regime not in REGIME_SPECS:
    raise ValueError(f"Unknown SynthRes regime {regime!r}; valid regimes: {list(REGIMES)}")
  return REGIME_SPECS[regime]


def validate_split(split: str) -> int:
  """Returns the split's integer id (used to seed it); ValueError listing valid splits."""
  if split not in SPLITS:
    raise ValueError(f"Unknown SynthRes split {split!r}; valid splits: {list(SPLITS)}")
  return SPLITS.index(split)


def as_int(value, name: str) -> int:
  """Returns value as a Python int (NumPy integers accepted); ValueError for bools/floats."""
  if isinstance(value, bool):
    raise ValueError(f"SynthRes {name} must be an int, got {value!r}")
  try:
    return operator.index(value)
  except TypeError:
    raise ValueError(f"SynthRes {name} must be an int, got {value!r}") from None


def validate_size(height: int, width: int, num_frames: int) -> None:
  """Raises ValueError unless MIN_SIZE <= height, width <= MAX_SIZE and num_frames >= 1."""
  for name, value in (("height", height), ("width", width), ("num_frames", num_frames)):
    if as_int(value, name) <= 0:
      raise ValueError(f"SynthRes {name} must be positive, got {value!r}")
  if min(height, width) < MIN_SIZE:
    raise ValueError(
      f"SynthRes frames of {height}x{width} are too small for the articulated figure; "
      f"height and width must be in [{MIN_SIZE}, {MAX_SIZE}] pixels"
    )
  if max(height, width) > MAX_SIZE:
    raise ValueError(
      f"SynthRes frames of {height}x{width} are too large; height and width must be in "
      f"[{MIN_SIZE}, {MAX_SIZE}] pixels"
    )


def validate_index(index: int) -> None:
  """Raises ValueError unless index is a non-negative int (it seeds the clip)."""
  if as_int(index, "example index") < 0:
    raise ValueError(f"SynthRes example index must be non-negative, got {index!r}")
