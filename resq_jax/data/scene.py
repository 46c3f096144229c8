"""Sampling a SynthRes scene: every random choice of a clip, before any pixel is drawn.

Determinism and pairing: each component (background, objects, figure, camera, noise) draws from
its own NumPy stream seeded by (split, index, component). Content streams (what is in the
scene) do not depend on the regime; motion streams (how it moves, how sharp, how noisy) do.
So clip i of split s shows the same backdrop, objects and figure in every regime, and regimes
can be compared on paired clips; splits use disjoint seeds.

Scene cuts (regimes with ``cut_probability > 0``, e.g. 'cuts'): the cut frames come from the
clip's own 'cuts' motion stream (:func:`cut_frames`), and the clip is a sequence of segments
(:func:`sample_segments`), each an independent scene. Segment 0 uses the clip's seeds (so it
shares its content with the other regimes); segment k >= 1 draws every component from streams
that add k to the seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from resq_jax.data import figure as figure_lib
from resq_jax.data import motion, spec, textures

_SEED_TAG = 0x5E5_0001  # namespaces SynthRes seeds away from other users of SeedSequence
_CONTENT_STREAMS = ("background", "objects", "figure", "clothes", "depth")
# New streams go at the end: a stream's position is part of its seed.
_MOTION_STREAMS = ("camera", "objects", "figure", "background", "noise", "cuts")


def component_rng(
  split: str, index: int, component: str, regime: str | None = None, segment: int = 0
):
  """Returns the generator for one component of clip `index` of `split`.

  regime=None selects a content stream (shared across regimes), otherwise a motion stream.
  segment k >= 1 (the scene after the k-th cut) gets streams of its own; segment 0 has the
  clip's streams.
  """
  split_id = spec.validate_split(split)
  if regime is None:
    stream = _CONTENT_STREAMS.index(component)
  else:
    stream = 100 + 10 * spec.REGIMES.index(regime) + _MOTION_STREAMS.index(component)
  seed = [_SEED_TAG, split_id, index, stream] + ([int(segment)] if segment else [])
  return np.random.default_rng(seed)


def cut_frames(regime: str, split: str, index: int, num_frames: int) -> tuple[int, ...]:
  """Frames where clip `index` cuts to a new scene (ascending, all >= 1); () for regimes
  without cuts. Frame t >= min_cut_gap after the previous cut (or the clip start) cuts with
  the regime's cut_probability; the cuts of a shorter clip are a prefix of a longer one's."""
  reg = spec.validate_regime(regime)
  if reg.cut_probability <= 0.0 or num_frames < 2:
    return ()
  draws = component_rng(split, index, "cuts", regime).uniform(size=num_frames)
  cuts, last = [], 0
  for t in range(1, num_frames):
    if t - last >= reg.min_cut_gap and draws[t] < reg.cut_probability:
      cuts.append(t)
      last = t
  return tuple(cuts)


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
  """A textured rigid object: shape, trajectory ([T, 2] centres as (x, y)) and texture."""

  class_id: int
  instance_id: int
  # Convex pieces (normals [E, 2], offsets [E]) whose union is the shape; empty for ellipses.
  pieces: tuple[tuple[np.ndarray, np.ndarray], ...]
  ellipse: tuple[float, float, float] | None  # (rx, ry, angle) or None
  radius: float  # bounding radius in pixels
  centers: np.ndarray  # float64 [T, 2]
  velocity: np.ndarray  # float64 [2], pixels per frame before bounces
  texture: np.ndarray  # float32 [S, S, 3], centred on the object


@dataclasses.dataclass(frozen=True)
class Scene:
  """All parameters of one clip; `render.render_scene` turns it into pixels and labels."""

  regime: str
  height: int
  width: int
  num_frames: int
  backdrop: np.ndarray  # float32 [Hc, Wc, 3] canvas the camera pans over
  ground: np.ndarray  # float32 [Hc, Wc, 3]
  horizon: tuple[float, float, float, float, float]  # canvas y = h0 + a1 sin(w1 x + p1) ...
  camera_pan: np.ndarray  # [T, 2] smooth camera path (x, y), pixels
  camera_shake: np.ndarray  # [T, 2]
  canvas_offset: np.ndarray  # [T, 2] (x, y) canvas position of frame pixel (0, 0)
  objects: tuple[ObjectSpec, ...]
  figure: figure_lib.FigureMotion
  figure_textures: np.ndarray  # float32 [3, S, S, 3]: skin, shirt, pants
  depth_order: tuple[int, ...]  # painting order; 0 = figure, k >= 1 = objects[k - 1]
  gain: np.ndarray  # float32 [T] brightness flicker
  noise_sigma: float  # sensor noise, 8-bit grey levels
  noise_seed: int  # seeds the per-pixel sensor noise drawn at render time


def _horizon_y(params, x: np.ndarray) -> np.ndarray:
  h0, a1, w1, p1, a2 = params
  return h0 + a1 * np.sin(w1 * x + p1) + a2 * np.sin(2.7 * w1 * x + 2.0 * p1)


def horizon_y(scene: Scene, x: np.ndarray) -> np.ndarray:
  """Canvas row of the backdrop/ground boundary at canvas column(s) x."""
  return _horizon_y(scene.horizon, x)


def _stuff_texture(rng, level_u: float, regime: spec.Regime, sigma: float, h: int, w: int):
  level = regime.texture_zoom[int(level_u * len(regime.texture_zoom))]
  gray = textures.random_texture(rng, h, w, (level,), noise_weight=rng.uniform(0.0, 0.6))
  return textures.colorize(textures.smooth(gray, sigma), textures.random_palette(rng))


def _sample_background(split, index, regime: spec.Regime, height, width, extent, segment=0):
  """Backdrop and ground canvases of extent (Hc, Wc) plus the horizon parameters."""
  content = component_rng(split, index, "background", segment=segment)
  look = component_rng(split, index, "background", regime.name, segment)
  sigma = look.uniform(*regime.blur_sigma) * min(height, width) / spec.REFERENCE_SIZE
  hc, wc = extent
  backdrop = _stuff_texture(content, look.uniform(), regime, sigma, hc, wc)
  ground = _stuff_texture(content, look.uniform(), regime, sigma, hc, wc)
  horizon = (
    content.uniform(0.3, 0.6) * height,
    content.uniform(0.0, 0.08) * height,
    2.0 * np.pi / (content.uniform(0.5, 2.0) * width),
    content.uniform(0, 2 * np.pi),
    content.uniform(0.0, 0.03) * height,
  )
  return backdrop, ground, horizon


def _shape_pieces(rng, class_id: int, size: float):
  """Convex pieces (or ellipse radii) and bounding radius of a shape of scale `size` px."""
  angle = rng.uniform(0.0, np.pi)
  c, s = np.cos(angle), np.sin(angle)
  axes = np.array([[c, s], [-c, -s], [-s, c], [s, -c]])  # +u, -u, +v, -v normals

  def box(a, b):
    return axes, np.array([a, a, b, b])

  name = spec.CLASS_NAMES[class_id]
  if name == "ellipse":
    ry = size * rng.uniform(0.5, 1.0)
    return (), (size, ry, angle), size
  if name == "rectangle":
    b = size * rng.uniform(0.45, 1.0)
    return (box(size, b),), None, float(np.hypot(size, b))
  if name == "triangle":  # equilateral, centroid at the centre, so it is the mask centroid
    k = angle + 2.0 * np.pi * np.arange(3) / 3.0 + np.pi / 3.0
    normals = np.stack([np.cos(k), np.sin(k)], axis=-1)
    return ((normals, np.full(3, size / 2.0)),), None, size
  thick = size * rng.uniform(0.3, 0.45)  # cross: union of two perpendicular bars
  bars = (box(size, thick), (axes, np.array([thick, thick, size, size])))
  return bars, None, float(np.hypot(size, thick))


def _sample_objects(split, index, regime: spec.Regime, height, width, num_frames, segment=0):
  content = component_rng(split, index, "objects", segment=segment)
  moves = component_rng(split, index, "objects", regime.name, segment)
  scale = min(height, width) / spec.REFERENCE_SIZE
  objects = []
  for k in range(int(content.integers(1, spec.MAX_OBJECTS + 1))):
    class_id = int(content.choice(spec.SHAPE_CLASSES))
    pieces, ellipse, radius = _shape_pieces(content, class_id, content.uniform(5, 10) * scale)
    lo = np.full(2, radius + 1.0)
    hi = np.array([width - 2.0 - radius, height - 2.0 - radius])
    start = content.uniform(lo, hi)
    speed = moves.uniform(*regime.object_speed) * scale
    velocity = motion.random_direction(moves) * speed
    size = 2 * int(np.ceil(radius)) + 9
    # One zoom level finer than the background: objects are small, and coarse texture
    # would look flat on them.
    zoom = min(int(moves.choice(regime.texture_zoom)) + 1, textures.NUM_ZOOM_LEVELS - 1)
    gray = textures.random_texture(content, size, size, (zoom,), noise_weight=0.0)
    tex = textures.colorize(gray, textures.random_palette(content))
    centers = motion.bounce(start, velocity, lo, hi, num_frames)
    objects.append(
      ObjectSpec(class_id, spec.PERSON_ID + 1 + k, pieces, ellipse, radius, centers, velocity, tex)
    )
  return tuple(objects)


def _figure_textures(split, index, size: int, segment: int = 0) -> np.ndarray:
  rng = component_rng(split, index, "clothes", segment=segment)
  skin_tone = rng.uniform([0.35, 0.2, 0.1], [0.95, 0.75, 0.6])
  # Skin: a faint texture (palette from 80% to 100% of the tone); clothes: full textures.
  skin = textures.colorize(
    textures.random_texture(rng, size, size, (1,), 0.0),
    np.stack([skin_tone * 0.8, skin_tone]).astype(np.float32),
  )
  cloth = [
    textures.colorize(
      textures.random_texture(rng, size, size, (1, 2), 0.0), textures.random_palette(rng)
    )
    for _ in range(2)
  ]
  return np.stack([skin] + cloth).astype(np.float32)


def sample_scene(
  regime: str,
  split: str,
  index: int,
  *,
  height: int = spec.DEFAULT_HEIGHT,
  width: int = spec.DEFAULT_WIDTH,
  num_frames: int = spec.DEFAULT_NUM_FRAMES,
  segment: int = 0,
) -> Scene:
  """Draws every parameter and trajectory of clip `index` (validating all arguments).

  ``segment`` k >= 1: the independent scene after the clip's k-th cut (its streams seeded
  apart from the clip's), over ``num_frames`` frames; :func:`sample_segments` draws them all.
  """
  reg = spec.validate_regime(regime)
  spec.validate_split(split)
  spec.validate_index(index)
  spec.validate_size(height, width, num_frames)
  if spec.as_int(segment, "segment") < 0:
    raise ValueError(f"SynthRes segment must be non-negative, got {segment!r}")
  scale = min(height, width) / spec.REFERENCE_SIZE
  k = int(segment)

  pan, shake = motion.camera_path(
    component_rng(split, index, "camera", regime, k), reg, num_frames, scale
  )
  cam = pan + shake
  # The canvas spans every position the camera visits, plus one pixel for bilinear taps.
  offset = cam - cam.min(axis=0)
  extent = (
    height + int(np.ceil(offset[:, 1].max())) + 2,
    width + int(np.ceil(offset[:, 0].max())) + 2,
  )
  backdrop, ground, horizon = _sample_background(split, index, reg, height, width, extent, k)
  objects = _sample_objects(split, index, reg, height, width, num_frames, k)
  fig = figure_lib.sample_figure(
    component_rng(split, index, "figure", segment=k),
    component_rng(split, index, "figure", regime, k),
    reg,
    height,
    width,
    num_frames,
  )
  tex_size = 2 * int(np.ceil(fig.height)) + 7
  order_rng = component_rng(split, index, "depth", segment=k)
  depth_order = tuple(int(i) for i in order_rng.permutation(len(objects) + 1))
  noise_rng = component_rng(split, index, "noise", regime, k)
  return Scene(
    regime=regime,
    height=height,
    width=width,
    num_frames=num_frames,
    backdrop=backdrop,
    ground=ground,
    horizon=horizon,
    camera_pan=pan,
    camera_shake=shake,
    canvas_offset=offset,
    objects=objects,
    figure=fig,
    figure_textures=_figure_textures(split, index, tex_size, k),
    depth_order=depth_order,
    gain=motion.flicker_gain(noise_rng, reg, num_frames),
    noise_sigma=float(noise_rng.uniform(*reg.noise_sigma)),
    noise_seed=int(noise_rng.integers(2**63)),
  )


def sample_segments(
  regime: str,
  split: str,
  index: int,
  *,
  height: int = spec.DEFAULT_HEIGHT,
  width: int = spec.DEFAULT_WIDTH,
  num_frames: int = spec.DEFAULT_NUM_FRAMES,
) -> tuple[tuple[int, Scene], ...]:
  """``((start frame, Scene), ...)``: the scenes of clip `index`, one per segment between its
  :func:`cut_frames`; one segment ``((0, sample_scene(...)),)`` for regimes without cuts."""
  spec.validate_size(height, width, num_frames)
  starts = (0, *cut_frames(regime, split, index, num_frames))
  stops = (*starts[1:], num_frames)
  return tuple(
    (
      start,
      sample_scene(
        regime, split, index, height=height, width=width, num_frames=stop - start, segment=k
      ),
    )
    for k, (start, stop) in enumerate(zip(starts, stops))
  )
