"""Pictures of a clip with its labels overlaid: a PNG strip and an animated GIF.

Works on any example dict with the SynthRes keys (a `generate_clip` result, a record read
back from TFDS, or one element of a loader batch). Drawing is plain NumPy plus scikit-image's
line/disc rasterisers; files are written with Pillow (a dependency of matplotlib and
scikit-image).
"""

from __future__ import annotations

import os

import numpy as np

from resq_jax.data import spec

_PALETTE = np.array(spec.CLASS_COLORS, np.float32)
# Left limbs in cyan, right limbs in yellow, trunk/head in white (as in pose-estimation plots).
_RIGHT = {i for i, n in enumerate(spec.JOINT_NAMES) if n.startswith("right")}
_LEFT = {i for i, n in enumerate(spec.JOINT_NAMES) if n.startswith("left")}


def _edge_color(a: int, b: int) -> tuple[int, int, int]:
  if a in _RIGHT or b in _RIGHT:
    return (255, 230, 0)
  if a in _LEFT or b in _LEFT:
    return (0, 230, 255)
  return (255, 255, 255)


def _upscale(img: np.ndarray, zoom: int) -> np.ndarray:
  return np.repeat(np.repeat(img, zoom, axis=0), zoom, axis=1)


def _draw_pose(
  img: np.ndarray, joints: np.ndarray, visible: np.ndarray, bbox: np.ndarray, zoom: int
) -> None:
  """Draws skeleton edges, joints (filled if visible, hollow if not) and the box, in place."""
  import skimage.draw  # Local import: visualisation only.

  h, w = img.shape[:2]
  # Pixel-centre coordinates scale as (c + 0.5) * zoom - 0.5 under nearest upscaling.
  pts = (joints + 0.5) * zoom - 0.5
  for a, b in spec.SKELETON:
    rr, cc = skimage.draw.line(
      int(round(pts[a, 1])), int(round(pts[a, 0])), int(round(pts[b, 1])), int(round(pts[b, 0]))
    )
    keep = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    img[rr[keep], cc[keep]] = _edge_color(a, b)
  radius = max(1.0, zoom * 0.6)
  for j, (x, y) in enumerate(pts):
    if visible[j]:
      rr, cc = skimage.draw.disk((y, x), radius, shape=(h, w))
      img[rr, cc] = (255, 0, 0)
    else:
      rr, cc = skimage.draw.circle_perimeter(
        int(round(y)), int(round(x)), int(np.ceil(radius)), shape=(h, w)
      )
      img[rr, cc] = (160, 160, 160)
  # Pixel edges e = c - 0.5 map to the first upscaled pixel (e + 0.5) * zoom.
  x0, y0, x1, y1 = ((np.asarray(bbox) + 0.5) * zoom).round().astype(int)
  if x1 > x0 and y1 > y0:  # rectangle_perimeter draws just outside the box's pixels
    rr, cc = skimage.draw.rectangle_perimeter((y0, x0), end=(y1 - 1, x1 - 1), shape=(h, w))
    img[rr, cc] = (255, 255, 255)


def overlay_frame(example: dict, t: int, zoom: int = 4, alpha: float = 0.5) -> np.ndarray:
  """uint8 [zoom H, zoom W, 3]: frame t with class colours blended in, skeleton and box."""
  frame = np.asarray(example["frames"][t], np.float32)
  colors = _PALETTE[np.asarray(example["semantic"][t])]
  blended = ((1 - alpha) * frame + alpha * colors).round().astype(np.uint8)
  img = _upscale(blended, zoom)
  _draw_pose(
    img,
    np.asarray(example["joints"][t]),
    np.asarray(example["joint_visible"][t]),
    np.asarray(example["bbox"][t]),
    zoom,
  )
  return img


def instance_frame(example: dict, t: int, zoom: int = 4) -> np.ndarray:
  """uint8 [zoom H, zoom W, 3]: instance ids as grey levels (0 black, person brightest)."""
  inst = np.asarray(example["instance"][t]).astype(np.int32)
  grey = np.where(inst == 0, 0, 255 - 50 * (inst - 1)).clip(0, 255).astype(np.uint8)
  return _upscale(np.repeat(grey[..., None], 3, axis=-1), zoom)


def strip_image(example: dict, zoom: int = 4, max_frames: int = 8) -> np.ndarray:
  """uint8 image: rows = raw frames, class/pose overlay, instance map; columns = frames.

  Shows at most max_frames frames, evenly spaced over the clip (first and last included).
  """
  num_frames = np.asarray(example["frames"]).shape[0]
  ts = np.unique(np.linspace(0, num_frames - 1, min(max_frames, num_frames)).round().astype(int))
  gap = 2
  rows = []
  for render in (
    lambda t: _upscale(np.asarray(example["frames"][t]), zoom),
    lambda t: overlay_frame(example, t, zoom),
    lambda t: instance_frame(example, t, zoom),
  ):
    tiles = [render(int(t)) for t in ts]
    sep = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
    rows.append(np.concatenate([x for tile in tiles for x in (tile, sep)][:-1], axis=1))
  sep = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
  return np.concatenate([rows[0], sep, rows[1], sep, rows[2]], axis=0)


def save_clip_strip(
  example: dict, path: str | os.PathLike, *, zoom: int = 4, max_frames: int = 8
) -> None:
  """Writes `strip_image(example)` as a PNG: frames, label overlay, instances."""
  from PIL import Image

  Image.fromarray(strip_image(example, zoom, max_frames)).save(os.fspath(path), format="PNG")


def save_clip_gif(
  example: dict, path: str | os.PathLike, *, zoom: int = 4, fps: float = 8.0
) -> None:
  """Writes an animated GIF: each frame shows the raw frame beside its label overlay."""
  from PIL import Image

  num_frames = np.asarray(example["frames"]).shape[0]
  images = []
  for t in range(num_frames):
    raw = _upscale(np.asarray(example["frames"][t]), zoom)
    side = np.concatenate(
      [raw, np.full((raw.shape[0], 2, 3), 255, np.uint8), overlay_frame(example, t, zoom)], axis=1
    )
    images.append(Image.fromarray(side))
  images[0].save(
    os.fspath(path),
    format="GIF",
    save_all=True,
    append_images=images[1:],
    duration=int(round(1000.0 / fps)),
    loop=0,
  )
