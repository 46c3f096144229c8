"""Texture sources (real images shipped with scikit-image, fractal noise) and texture sampling.

All textures are single-channel float32 images normalised to mean 0.5 and a common contrast,
so that a clip's look is set by its palette and smoothing rather than by which photo it drew;
they are coloured per clip with a two-colour palette.
"""

from __future__ import annotations

import functools

import numpy as np

# Texture-like images bundled inside the scikit-image wheel (no download needed). Photos with a
# dominant subject (camera, astronaut) are left out: they read as objects, not surfaces.
_SKIMAGE_TEXTURES = (
  "brick",
  "grass",
  "gravel",
  "moon",
  "coins",
  "cell",
  "hubble_deep_field",
  "coffee",
  "chelsea",
  "immunohistochemistry",
  "text",
)
NUM_ZOOM_LEVELS = 3  # pyramid levels 0 (native), 1 (/2), 2 (/4)
_CONTRAST = 0.18  # std of every normalised texture


def _normalise(gray: np.ndarray) -> np.ndarray:
  g = gray.astype(np.float64)
  g = (g - g.mean()) / max(float(g.std()), 1e-6) * _CONTRAST + 0.5
  return np.clip(g, 0.0, 1.0).astype(np.float32)


def _downsample2(img: np.ndarray) -> np.ndarray:
  """Halves an [h, w] image by 2x2 block means (a box pre-filter, so no aliasing)."""
  h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
  return img[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


@functools.lru_cache(maxsize=1)
def texture_bank() -> tuple[tuple[np.ndarray, ...], ...]:
  """Returns bank[texture][level] -> float32 [h, w] in [0, 1], levels 0..NUM_ZOOM_LEVELS-1.

  Loaded once per process (a few tens of milliseconds) from scikit-image's bundled files.
  Level k is the image downsampled by 2^k, i.e. finer, higher-frequency texture per pixel.
  """
  import skimage.data  # Local import: only generation needs scikit-image.

  bank = []
  for name in _SKIMAGE_TEXTURES:
    img = np.asarray(getattr(skimage.data, name)(), dtype=np.float64)
    if img.ndim == 3:
      img = img[..., :3].mean(axis=-1)
    levels = [img]
    for _ in range(NUM_ZOOM_LEVELS - 1):
      levels.append(_downsample2(levels[-1]))
    bank.append(tuple(_normalise(level) for level in levels))
  return tuple(bank)


def mirror_indices(idx: np.ndarray, n: int) -> np.ndarray:
  """Maps any integer indices onto [0, n) by mirror tiling (period 2n), avoiding seams."""
  m = np.mod(idx, 2 * n)
  return np.where(m < n, m, 2 * n - 1 - m)


def crop_mirrored(img: np.ndarray, y0: int, x0: int, h: int, w: int) -> np.ndarray:
  """Crops [h, w] at (y0, x0) from a mirror-tiled [H, W] image, so any size is possible."""
  iy = mirror_indices(np.arange(y0, y0 + h), img.shape[0])
  ix = mirror_indices(np.arange(x0, x0 + w), img.shape[1])
  return img[iy[:, None], ix[None, :]]


def fractal_noise(rng: np.random.Generator, h: int, w: int, beta: float) -> np.ndarray:
  """Returns [h, w] float32 noise with amplitude spectrum ~ 1/f^beta, normalised like textures.

  beta = 0.8 gives fine, rough noise; beta = 1.6 gives large smooth blobs (cloud-like).
  Shaped in the Fourier domain: one FFT instead of an octave loop.
  """
  fy = np.fft.fftfreq(h)[:, None]
  fx = np.fft.rfftfreq(w)[None, :]
  f = np.sqrt(fy * fy + fx * fx)
  f[0, 0] = 1.0  # the DC term is removed by the normalisation anyway
  spectrum = rng.standard_normal((h, w // 2 + 1)) + 1j * rng.standard_normal((h, w // 2 + 1))
  noise = np.fft.irfft2(spectrum * f ** (-beta), s=(h, w))
  return _normalise(noise)


def smooth(img: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian blur of an [h, w] image (reflect boundary); sigma < 0.05 returns it unchanged."""
  if sigma < 0.05:
    return img
  import skimage.filters  # Local import: keeps `import resq_jax.data` light.

  return skimage.filters.gaussian(img, sigma=sigma, mode="reflect", preserve_range=True).astype(
    np.float32
  )


def random_palette(rng: np.random.Generator) -> np.ndarray:
  """Returns [2, 3] float32 colours (dark end, bright end) with enough contrast to see."""
  lo = rng.uniform(0.05, 0.6, size=3)
  direction = rng.uniform(0.2, 1.0, size=3)
  direction /= np.linalg.norm(direction)
  hi = np.clip(lo + direction * rng.uniform(0.45, 0.9), 0.0, 1.0)
  return np.stack([lo, hi]).astype(np.float32)


def colorize(gray: np.ndarray, palette: np.ndarray) -> np.ndarray:
  """Maps [..., ] grey values in [0, 1] to [..., 3] colours along the palette's segment."""
  g = gray[..., None]
  return palette[0] + (palette[1] - palette[0]) * g


def random_texture(
  rng: np.random.Generator, h: int, w: int, levels: tuple[int, ...], noise_weight: float
) -> np.ndarray:
  """Returns [h, w] float32: a random crop of a bank texture blended with fractal noise.

  levels: allowed zoom levels (regime-dependent); noise_weight in [0, 1] is the share of
  procedural noise in the blend.
  """
  bank = texture_bank()
  tex_levels = bank[rng.integers(len(bank))]
  tex = tex_levels[int(rng.choice(levels))]
  y0 = int(rng.integers(tex.shape[0]))
  x0 = int(rng.integers(tex.shape[1]))
  crop = crop_mirrored(tex, y0, x0, h, w)
  if rng.uniform() < 0.5:  # Mirror-flip half the crops for more variety from few photos.
    crop = crop.T if h == w else crop[::-1]
  if noise_weight <= 0.0:
    return crop
  noise = fractal_noise(rng, h, w, beta=rng.uniform(0.8, 1.6))
  return ((1.0 - noise_weight) * crop + noise_weight * noise).astype(np.float32)


def sample_shifted(
  img: np.ndarray, oy: np.ndarray, ox: np.ndarray, out_h: int, out_w: int
) -> np.ndarray:
  """Bilinear samples of img at (y + oy[t], x + ox[t]) for y < out_h, x < out_w.

  img: [h, w, C]; oy, ox: [T] sub-pixel offsets, which should satisfy 0 <= oy and
  oy + out_h + 1 <= h (likewise for x). Returns float32 [T, out_h, out_w, C]. A pure
  translation needs only the four neighbouring integer taps of one crop per frame.
  """
  iy = np.floor(oy).astype(np.int64)
  ix = np.floor(ox).astype(np.int64)
  fy = (oy - iy).astype(np.float32)[:, None, None, None]
  fx = (ox - ix).astype(np.float32)[:, None, None, None]
  # Taps outside img repeat its edge (robustness for callers' rounding; they size their
  # images so that it does not happen on visible pixels).
  pad_y = (max(0, -int(iy.min())), max(0, int(iy.max()) + out_h + 1 - img.shape[0]))
  pad_x = (max(0, -int(ix.min())), max(0, int(ix.max()) + out_w + 1 - img.shape[1]))
  if any(pad_y + pad_x):
    img = np.pad(img, (pad_y, pad_x, (0, 0)), mode="edge")
    iy, ix = iy + pad_y[0], ix + pad_x[0]
  # Per-frame slices (a loop over frames, not pixels) copy contiguous blocks, measured ~5x
  # faster than one [T, h, w] fancy-indexed gather.
  patch = np.stack([img[y : y + out_h + 1, x : x + out_w + 1] for y, x in zip(iy, ix)])
  top = patch[:, :-1, :-1] * (1 - fx) + patch[:, :-1, 1:] * fx
  bottom = patch[:, 1:, :-1] * (1 - fx) + patch[:, 1:, 1:] * fx
  return top * (1 - fy) + bottom * fy
