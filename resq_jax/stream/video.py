"""Video files in and out: decode (PyAV), resize and crop to a model's input, encode, overlays.

Reading (:func:`read_video`) decodes any container and codec FFmpeg knows, through PyAV, into
uint8 RGB frames ``[H, W, 3]`` one at a time (a long video is never held in memory):

* Resolution: each frame is scaled, keeping its aspect ratio, by the smallest factor that makes
  it cover the target ``H x W`` (for a square target: its short side becomes the target size),
  with Pillow's antialiased bilinear filter, and then centre-cropped to ``H x W``
  (:func:`cover_crop_box` gives the numbers). Nothing is padded or stretched.
* Frame rate: ``fps=None`` keeps every frame. A target ``fps`` lower than the video's keeps the
  first frame and then each frame whose timestamp reaches the next slot of ``1 / fps`` seconds
  (temporal subsampling; frames are dropped, never duplicated or blended). A target at or above
  the video's rate keeps every frame.

Writing (:class:`VideoWriter`, :func:`write_video`) chooses by extension: ``.gif`` through
Pillow (frames are collected until ``close``), anything else (``.mp4``, ``.mkv``...) through
PyAV with H.264 (``libx264``, yuv420p; odd frame sizes are padded by one black row / column),
or MPEG-4 Part 2 when FFmpeg has no H.264 encoder.
"""

from __future__ import annotations

import fractions
import math
import os
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Self

import numpy as np
from PIL import Image, ImageDraw

from resq_jax.data import spec

CLASS_PALETTE = np.array(spec.CLASS_COLORS, np.uint8)  # SynthRes class colours (visualize.py)


class VideoInfo(NamedTuple):
  """What the container says: frames per second, frame count (0 if unknown), size, duration
  in seconds (0 if unknown)."""

  fps: float
  num_frames: int
  height: int
  width: int
  duration: float


def _open(path):
  import av  # Local import: only video I/O needs FFmpeg.

  if not os.path.isfile(path):
    raise FileNotFoundError(f"no video file {path!r}")
  try:
    return av.open(os.fspath(path))
  except av.error.FFmpegError as e:
    raise ValueError(f"cannot decode {path!r} as a video: {e}") from e


def video_info(path: str | os.PathLike) -> VideoInfo:
  """:class:`VideoInfo` of the first video stream of ``path``."""
  with _open(os.fspath(path)) as container:
    if not container.streams.video:
      raise ValueError(f"{path!r} has no video stream")
    stream = container.streams.video[0]
    rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
    duration = (
      float(stream.duration * stream.time_base)
      if stream.duration
      else (container.duration / 1e6 if container.duration else 0.0)
    )
    frames = stream.frames or (round(duration * rate) if duration else 0)
    return VideoInfo(
      rate, int(frames), stream.codec_context.height, stream.codec_context.width, duration
    )


def cover_crop_box(in_h: int, in_w: int, out_h: int, out_w: int) -> tuple[int, int, int, int]:
  """``(scaled_h, scaled_w, top, left)``: scale ``in_h x in_w`` by
  ``max(out_h / in_h, out_w / in_w)`` (rounded, at least the target), then crop
  ``[top:top + out_h, left:left + out_w]`` (centred; an odd margin leaves the extra pixel at the
  bottom / right)."""
  if min(in_h, in_w, out_h, out_w) < 1:
    raise ValueError(f"sizes must be >= 1, got {in_h}x{in_w} -> {out_h}x{out_w}")
  scale = max(out_h / in_h, out_w / in_w)
  scaled_h = max(out_h, round(in_h * scale))
  scaled_w = max(out_w, round(in_w * scale))
  return scaled_h, scaled_w, (scaled_h - out_h) // 2, (scaled_w - out_w) // 2


def resize_crop(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """uint8 ``[H, W, 3]`` -> ``[size[0], size[1], 3]`` by the cover-and-centre-crop rule."""
  out_h, out_w = size
  scaled_h, scaled_w, top, left = cover_crop_box(frame.shape[0], frame.shape[1], out_h, out_w)
  if (scaled_h, scaled_w) != frame.shape[:2]:
    frame = np.asarray(Image.fromarray(frame).resize((scaled_w, scaled_h), Image.BILINEAR))
  return np.ascontiguousarray(frame[top : top + out_h, left : left + out_w])


def read_video(
  path: str | os.PathLike,
  *,
  size: tuple[int, int] | None = None,
  max_frames: int | None = None,
  fps: float | None = None,
) -> Iterator[np.ndarray]:
  """uint8 RGB frames ``[H, W, 3]`` of the first video stream of ``path``, lazily.

  Args:
    size: ``(H, W)`` to scale-and-centre-crop every frame to (module docstring); None keeps
      the decoded size.
    max_frames: stop after this many (kept) frames.
    fps: target frame rate (temporal subsampling, module docstring); None keeps all frames.
  """
  if fps is not None and not fps > 0:
    raise ValueError(f"fps must be > 0, got {fps}")
  path = os.fspath(path)
  container = _open(path)
  try:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
    kept, next_time, tolerance = 0, 0.0, 0.25 / rate
    for index, frame in enumerate(container.decode(stream)):
      if max_frames is not None and kept >= max_frames:
        break
      if fps is not None and fps < rate:
        t = float(frame.time) if frame.time is not None else index / rate
        if kept and t < next_time - tolerance:
          continue
        next_time = (next_time if kept else t) + 1.0 / fps
      image = frame.to_ndarray(format="rgb24")
      kept += 1
      yield resize_crop(image, size) if size is not None else image
  finally:
    container.close()


def output_fps(source_fps: float, fps: float | None) -> float:
  """The frame rate of what :func:`read_video` yields (subsampling only lowers it)."""
  return source_fps if fps is None else min(source_fps, fps)


class VideoWriter:
  """Encodes uint8 RGB frames ``[H, W, 3]`` (all of one size) to ``path``; a context manager.

  ``.gif`` goes through Pillow, other extensions through PyAV (module docstring).
  """

  def __init__(self, path: str | os.PathLike, fps: float, *, crf: int = 18):
    self.path = os.fspath(path)
    self.fps = float(fps)
    self.crf = crf
    self.count = 0
    self._gif = self.path.lower().endswith(".gif")
    self._frames: list[Image.Image] = []
    self._container = self._stream = None
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)

  def _open_stream(self, height: int, width: int) -> None:
    import av

    self._container = av.open(self.path, mode="w")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    rate = fractions.Fraction(self.fps).limit_denominator(1001)
    self._stream = self._container.add_stream(codec, rate=rate)
    self._stream.width, self._stream.height = width + width % 2, height + height % 2
    self._stream.pix_fmt = "yuv420p"
    if codec == "libx264":
      self._stream.options = {"crf": str(self.crf)}

  def write(self, frame: np.ndarray) -> None:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
      raise ValueError(f"frames must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    self.count += 1
    if self._gif:
      self._frames.append(Image.fromarray(frame))
      return
    import av

    if self._stream is None:
      self._open_stream(*frame.shape[:2])
    pad = (
      (0, self._stream.height - frame.shape[0]),
      (0, self._stream.width - frame.shape[1]),
      (0, 0),
    )
    image = av.VideoFrame.from_ndarray(np.pad(frame, pad), format="rgb24")
    for packet in self._stream.encode(image):
      self._container.mux(packet)

  def close(self) -> str:
    if self._gif and self._frames:
      self._frames[0].save(
        self.path,
        format="GIF",
        save_all=True,
        append_images=self._frames[1:],
        loop=0,
        duration=max(20, round(1000.0 / self.fps)),
      )
      self._frames = []
    elif self._container is not None:
      for packet in self._stream.encode():
        self._container.mux(packet)
      self._container.close()
      self._container = None
    return self.path

  def __enter__(self) -> Self:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float) -> str:
  """Write all ``frames`` (uint8 ``[H, W, 3]``) to ``path`` (``.gif``: GIF, else H.264)."""
  with VideoWriter(path, fps) as writer:
    for frame in frames:
      writer.write(frame)
  return writer.path


# --- Overlays ------------------------------------------------------------------------------------


def upscale(image: np.ndarray, zoom: int) -> np.ndarray:
  return np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1) if zoom > 1 else image


def overlay_classes(
  frame: np.ndarray, classes: np.ndarray, alpha: float = 0.5, palette: np.ndarray = CLASS_PALETTE
) -> np.ndarray:
  """uint8 ``[H, W, 3]``: ``frame`` blended with the class colours of ``classes [H, W]``."""
  colors = palette[np.asarray(classes) % len(palette)].astype(np.float32)
  return ((1 - alpha) * frame.astype(np.float32) + alpha * colors).round().astype(np.uint8)


def color_bit_map(
  bit_map: np.ndarray, levels: tuple[int, ...], size: tuple[int, int]
) -> np.ndarray:
  """uint8 ``[H, W, 3]``: bit-widths ``[h, w]`` coloured as in ``plots.plot_bit_map`` (grey =
  skip), stretched to ``size`` by nearest neighbour."""
  from resq_jax.evaluation.plots import bit_map_colors

  levels = tuple(sorted(set(levels) | {int(v) for v in np.unique(bit_map)}))
  table = (np.asarray(bit_map_colors(levels).colors)[:, :3] * 255).round().astype(np.uint8)
  index = np.searchsorted(levels, np.asarray(bit_map))
  rows = (np.arange(size[0]) * bit_map.shape[0]) // size[0]
  cols = (np.arange(size[1]) * bit_map.shape[1]) // size[1]
  return table[index[rows][:, cols]]


def _caption(width: int, text: str, height: int = 14) -> np.ndarray:
  bar = Image.new("RGB", (width, height), (0, 0, 0))
  ImageDraw.Draw(bar).text((3, 1), text, fill=(255, 255, 255))
  return np.asarray(bar)


def compose_panels(
  panels: list[tuple[str, np.ndarray]], caption: str = "", zoom: int = 1, keyframe: bool = False
) -> np.ndarray:
  """Panels ``[H, W, 3]`` side by side, each titled, zoomed, with a caption line on top; a
  keyframe gets a white frame around the panels."""
  gap = 2
  tiles = []
  for title, image in panels:
    image = upscale(image, zoom)
    tiles.append(np.concatenate([_caption(image.shape[1], title), image], axis=0))
    tiles.append(np.full((tiles[-1].shape[0], gap, 3), 64, np.uint8))
  body = np.concatenate(tiles[:-1], axis=1)
  if keyframe:
    body = body.copy()
    body[:1], body[-1:], body[:, :1], body[:, -1:] = 255, 255, 255, 255
  return np.concatenate([_caption(body.shape[1], caption), body], axis=0)


def zoom_for(height: int, min_height: int = 192) -> int:
  """The integer zoom that makes a panel at least ``min_height`` pixels high."""
  return max(1, math.ceil(min_height / max(1, height)))
