"""Visualisation files and the temporal-redundancy statistics.

Oracles: the strip's first row is the nearest-neighbour upscaled frames, pixel for pixel; the
overlay marks visible joints in red; the GIF holds one frame per clip frame; statistics on
synthetic clips with hand-computed answers.
"""

import numpy as np
import pytest
from PIL import Image

from resq_jax.data import (
  generate_clip,
  redundancy,
  save_clip_gif,
  save_clip_strip,
  stats,
  temporal_redundancy,
  visualize,
)


@pytest.fixture(scope="module")
def example():
  return generate_clip("slow_pan", "validation", 2, num_frames=6)


def test_strip_shows_frames_overlay_and_instances(example, tmp_path):
  path = tmp_path / "strip.png"
  zoom, gap = 3, 2
  save_clip_strip(example, path, zoom=zoom, max_frames=4)
  img = np.asarray(Image.open(path).convert("RGB"))
  tile_h, tile_w = 64 * zoom, 64 * zoom
  assert img.shape == (3 * tile_h + 2 * gap, 4 * tile_w + 3 * gap, 3)
  # Columns are frames 0, 2, 3, 5 (evenly spaced, first and last included).
  for col, t in enumerate((0, 2, 3, 5)):
    x0 = col * (tile_w + gap)
    up = np.repeat(np.repeat(example["frames"][t], zoom, 0), zoom, 1)
    np.testing.assert_array_equal(img[:tile_h, x0 : x0 + tile_w], up)
    overlay = img[tile_h + gap : 2 * tile_h + gap, x0 : x0 + tile_w]
    for j in np.flatnonzero(example["joint_visible"][t]):
      x, y = (example["joints"][t, j] + 0.5) * zoom - 0.5
      np.testing.assert_array_equal(overlay[int(round(y)), int(round(x))], (255, 0, 0))
    inst = img[2 * (tile_h + gap) :, x0 : x0 + tile_w, 0][::zoom, ::zoom]
    np.testing.assert_array_equal(inst == 255, example["instance"][t] == 1)


def test_gif_has_one_frame_per_clip_frame(example, tmp_path):
  path = tmp_path / "clip.gif"
  save_clip_gif(example, path, zoom=2)
  with Image.open(path) as gif:
    assert gif.n_frames == 6
    assert gif.size == (2 * 64 * 2 + 2, 64 * 2)
    gif.seek(0)
    left = np.asarray(gif.convert("RGB"))[:, :128]
  # GIF palettes quantise colours: the raw half matches the frame to within a few levels.
  up = np.repeat(np.repeat(example["frames"][0], 2, 0), 2, 1).astype(int)
  assert np.abs(left.astype(int) - up).mean() < 4.0


def test_overlay_draws_bbox_around_the_person_in_white(example):
  img = visualize.overlay_frame(example, 0, zoom=2)
  ys, xs = np.nonzero(example["instance"][0] == 1)
  # The outline runs just outside the outermost (upscaled) person pixels.
  top, bottom = 2 * ys.min() - 1, 2 * ys.max() + 2
  left, right = 2 * xs.min() - 1, 2 * xs.max() + 2
  for line in (
    img[top, left : right + 1],
    img[bottom, left : right + 1],
    img[top : bottom + 1, left],
    img[top : bottom + 1, right],
  ):
    assert (line == 255).all()


def test_clip_redundancy_on_hand_computed_clips():
  rng = np.random.default_rng(0)
  base = rng.integers(50, 200, size=(1, 8, 8, 3))
  static = np.repeat(base, 4, axis=0).astype(np.uint8)
  r = redundancy.clip_redundancy(static)
  assert r["mean_abs_diff"] == 0.0 and r["ratio"] == 0.0 and r["residual_energy"] == 0.0
  # A brightness ramp of +4 levels per frame: every difference is exactly 4.
  ramp = (base + 4 * np.arange(4)[:, None, None, None]).astype(np.uint8)
  r = redundancy.clip_redundancy(ramp)
  assert r["mean_abs_diff"] == pytest.approx(4.0)
  assert r["residual_energy"] == pytest.approx(16.0 / ramp.astype(np.float64).var(), rel=1e-5)
  assert r["frame_std"] == pytest.approx(base.astype(np.float64).std(), rel=1e-5)
  with pytest.raises(ValueError, match="at least 2 frames"):
    redundancy.clip_redundancy(static[:1])


def test_redundancy_orders_the_regimes():
  slow = temporal_redundancy("static_cam", n_clips=3)
  fast = temporal_redundancy("fast_pan", n_clips=3)
  assert set(slow) >= {"regime", "n_clips", "ratio", "ratio_sem", "residual_energy"}
  # Paired clips (same scenes): the fast pan of sharp texture changes far more per frame.
  assert fast["ratio"] > 2.0 * slow["ratio"] > 0.0
  assert 0.0 < slow["residual_energy"] < fast["residual_energy"] < 1.0
  with pytest.raises(ValueError, match="valid regimes"):
    temporal_redundancy("zoom")


def test_cli_prints_a_markdown_table(capsys):
  stats.main(["--n_clips", "2", "--regimes", "flicker", "--num_frames", "4"])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0].startswith("| regime |") and lines[1].startswith("| ---")
  row = [c.strip() for c in lines[2].strip("|").split("|")]
  expected = temporal_redundancy("flicker", n_clips=2, num_frames=4)
  assert row[0] == "flicker" and row[1] == "2"
  assert float(row[2]) == pytest.approx(expected["mean_abs_diff"], abs=0.006)
