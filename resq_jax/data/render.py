"""Rendering a sampled scene into a SynthRes example (frames and all labels), and
`generate_clip`, the pure-NumPy entry point.

Painter's algorithm: background, then the figure and objects in their depth order, each
primitive anti-aliased in its own window (see raster.py); then global brightness flicker,
Gaussian sensor noise and rounding to uint8. Labels are written by the same primitives, so
pixels and labels agree to within half a pixel.
"""

from __future__ import annotations

import functools

import numpy as np

from resq_jax.data import figure as figure_lib
from resq_jax.data import raster, spec, textures
from resq_jax.data import scene as scene_lib


def _paint_background(canvas: raster.Canvas, scene: scene_lib.Scene) -> None:
  """Pans the camera over the backdrop/ground canvas; labels backdrop vs ground."""
  hc, wc = scene.backdrop.shape[:2]
  ys = np.arange(hc, dtype=np.float32)[:, None]
  xs = np.arange(wc, dtype=np.float32)
  ground_cover = raster.coverage(scene_lib.horizon_y(scene, xs) - ys)[..., None]
  stuff = scene.backdrop + ground_cover * (scene.ground - scene.backdrop)  # [Hc, Wc, 3]
  h, w, m = scene.height, scene.width, canvas.margin
  off = scene.canvas_offset
  visible = canvas.pixels[:, m : m + h, m : m + w]
  visible[..., :3] = textures.sample_shifted(stuff, off[:, 1], off[:, 0], h, w)
  # Label of each frame pixel from the exact horizon at its canvas position.
  cy = np.arange(h)[None, :, None] + off[:, 1, None, None]  # [T, H, 1]
  cx = np.arange(w)[None, None, :] + off[:, 0, None, None]  # [T, 1, W]
  is_ground = cy >= scene_lib.horizon_y(scene, cx)
  visible[..., 3] = is_ground  # class 1 = ground, 0 = backdrop; instance stays 0


def _object_half(obj: scene_lib.ObjectSpec) -> int:
  return int(np.ceil(obj.radius)) + 1


def _paint_object(canvas: raster.Canvas, obj: scene_lib.ObjectSpec) -> None:
  half = _object_half(obj)
  win = raster.make_window(obj.centers[:, 1], obj.centers[:, 0], half, half, canvas)
  if obj.ellipse is not None:
    sdf = raster.ellipse_sdf(win, obj.centers, *obj.ellipse)
  else:  # union of convex pieces = min of their distances
    sdf = np.minimum.reduce([raster.convex_sdf(win, obj.centers, n, d) for n, d in obj.pieces])
  color = raster.texture_in_window(obj.texture, win, obj.centers)
  raster.paint(canvas, win, sdf, color, obj.class_id, obj.instance_id)


def _paint_figure(canvas: raster.Canvas, scene: scene_lib.Scene) -> None:
  fig = scene.figure
  root = fig.joints[:, spec.JOINT_INDEX["belly"]]
  for (a, b, _, material), radius in zip(figure_lib.LIMBS, fig.limb_radii):
    pa, pb = fig.joints[:, a], fig.joints[:, b]
    center = 0.5 * (pa + pb)
    # A rectangular window fitted to the limb's extent over the clip (a vertical leg
    # gets a narrow window): about half the pixels of a square one.
    half_w, half_h = (np.ceil(0.5 * np.abs(pb - pa).max(axis=0) + radius) + 1).astype(int)
    win = raster.make_window(center[:, 1], center[:, 0], int(half_h), int(half_w), canvas)
    sdf = raster.capsule_sdf(win, pa, pb, radius)
    # Clothes are glued to the root, so they move with the body (not per limb).
    color = raster.texture_in_window(scene.figure_textures[material], win, root)
    raster.paint(canvas, win, sdf, color, spec.PERSON_CLASS, spec.PERSON_ID)


_NOISE_BANK_SIZE = 1 << 22  # 4 M standard normals (16 MB): > 20 default clips of noise


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
  return np.random.default_rng(0x5E5_0002).standard_normal(_NOISE_BANK_SIZE, np.float32)


def _sensor_noise(seed: int, size: int) -> np.ndarray:
  """float32 [size] i.i.d. standard normals for one clip, deterministic in seed.

  A random window of a per-process bank: drawing fresh normals measured ~10% of the whole
  clip's generation time, and windows at random offsets are as good for sensor noise.
  """
  if size > _NOISE_BANK_SIZE:  # very large clips: draw fresh noise
    return np.random.default_rng(seed).standard_normal(size, np.float32)
  start = seed % (_NOISE_BANK_SIZE - size + 1)
  return _noise_bank()[start : start + size]


def joint_visibility(joints: np.ndarray, instance: np.ndarray) -> np.ndarray:
  """bool [T, J]: joint (x, y) lies in the frame and its pixel shows the person.

  joints: [T, J, 2] pixel coordinates; instance: uint8 [T, H, W]. A joint covered by an
  object in front of the figure, or outside the frame, is invisible.
  """
  t, h, w = instance.shape
  ix = np.floor(joints[..., 0] + 0.5).astype(np.int64)
  iy = np.floor(joints[..., 1] + 0.5).astype(np.int64)
  inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
  shown = instance[np.arange(t)[:, None], np.clip(iy, 0, h - 1), np.clip(ix, 0, w - 1)]
  return inside & (shown == spec.PERSON_ID)


def person_bbox(instance: np.ndarray) -> np.ndarray:
  """float32 [T, 4] (x0, y0, x1, y1): pixel-edge box of the person's visible pixels.

  Pixel j spans [j - 0.5, j + 0.5], so the box contains every visible person pixel (and
  every visible joint); all zeros in a frame where the person is fully hidden.
  """
  mask = instance == spec.PERSON_ID
  rows, cols = mask.any(axis=2), mask.any(axis=1)  # [T, H], [T, W]
  y0 = np.argmax(rows, axis=1)
  y1 = rows.shape[1] - 1 - np.argmax(rows[:, ::-1], axis=1)
  x0 = np.argmax(cols, axis=1)
  x1 = cols.shape[1] - 1 - np.argmax(cols[:, ::-1], axis=1)
  box = np.stack([x0 - 0.5, y0 - 0.5, x1 + 0.5, y1 + 0.5], axis=-1)
  return np.where(rows.any(axis=1)[:, None], box, 0.0).astype(np.float32)


def render_scene(scene: scene_lib.Scene) -> dict[str, np.ndarray]:
  """Renders a scene into an example dict (see `generate_clip` for the keys and shapes)."""
  # The margin must exceed every primitive's window (raster.make_window checks): the longest
  # limb plus its thickness is 0.44 figure heights, and a window adds up to 5 pixels.
  margin = max(
    [int(np.ceil(0.45 * scene.figure.height)) + 6]
    + [2 * _object_half(obj) + 1 for obj in scene.objects]
  )
  canvas = raster.Canvas.create(scene.num_frames, scene.height, scene.width, margin)
  _paint_background(canvas, scene)
  for layer in scene.depth_order:
    if layer == 0:
      _paint_figure(canvas, scene)
    else:
      _paint_object(canvas, scene.objects[layer - 1])
  rgb, semantic, instance = canvas.crop()
  levels = rgb * (scene.gain[:, None, None, None] * np.float32(255.0))
  levels += _sensor_noise(scene.noise_seed, levels.size).reshape(levels.shape) * np.float32(
    scene.noise_sigma
  )
  # Round half up: truncation of (x + 0.5) equals floor(x + 0.5) once clipped to >= 0.
  levels += np.float32(0.5)
  np.clip(levels, 0.0, 255.0, out=levels)
  frames = levels.astype(np.uint8)
  instance = np.ascontiguousarray(instance)
  return {
    "frames": frames,
    "semantic": np.ascontiguousarray(semantic),
    "instance": instance,
    "joints": scene.figure.joints.astype(np.float32),
    "joint_visible": joint_visibility(scene.figure.joints, instance),
    "bbox": person_bbox(instance),
  }


def generate_clip(
  regime: str,
  split: str,
  index: int,
  *,
  height: int = spec.DEFAULT_HEIGHT,
  width: int = spec.DEFAULT_WIDTH,
  num_frames: int = spec.DEFAULT_NUM_FRAMES,
) -> dict[str, np.ndarray]:
  """Generates clip `index` of `split` in motion regime `regime` (pure NumPy, deterministic).

  Returns a dict of NumPy arrays (T = num_frames, H = height, W = width, J = NUM_JOINTS):
    frames        uint8 [T, H, W, 3]  RGB
    semantic      uint8 [T, H, W]     class ids, see CLASS_NAMES
    instance      uint8 [T, H, W]     0 background, 1 person, 2.. objects
    joints        float32 [T, J, 2]   (x, y) pixels, pixel centres at integers
    joint_visible bool [T, J]         in frame and not occluded by an object
    bbox          float32 [T, 4]      (x0, y0, x1, y1) pixel-edge box of the visible person

  In regimes with scene cuts ('cuts') the clip is the concatenation of independent scenes
  (`scene.sample_segments`; cut frames from `scene.cut_frames`), and every label follows the
  cut: the new scene's classes, its instances (ids restart at 1 for its person and 2.. for
  its objects: instance ids are per scene) and its figure's joints.

  Raises ValueError (listing valid options) for an unknown regime or split, a negative index,
  non-positive sizes, or frames smaller than spec.MIN_SIZE.
  """
  segments = scene_lib.sample_segments(
    regime, split, index, height=height, width=width, num_frames=num_frames
  )
  parts = [render_scene(scene) for _, scene in segments]
  if len(parts) == 1:
    return parts[0]
  return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
