"""Rasterisation primitives: signed distances against hand-computed values, anti-aliased area
against the exact area, and painter's order of colours and labels."""

import numpy as np
import pytest

from resq_jax.data import raster, textures


def _canvas_and_window(num_frames=2, size=32, center=(16.0, 16.0), half=12):
  canvas = raster.Canvas.create(num_frames, size, size, margin=2 * half + 1)
  cy = np.full(num_frames, center[1])
  cx = np.full(num_frames, center[0])
  return canvas, raster.make_window(cy, cx, half, half, canvas)


def _value_at(win, sdf, x, y):
  return sdf[0, int(y - win.oy[0]), int(x - win.ox[0])]


def test_capsule_distances():
  _, win = _canvas_and_window()
  a = np.array([[11.0, 16.0]] * 2)
  b = np.array([[21.0, 16.0]] * 2)
  sdf = raster.capsule_sdf(win, a, b, radius=2.0)
  assert _value_at(win, sdf, 16, 19) == pytest.approx(1.0)  # 3 px above the axis
  assert _value_at(win, sdf, 8, 16) == pytest.approx(1.0)  # 3 px beyond the end cap
  assert _value_at(win, sdf, 16, 16) == pytest.approx(-2.0)  # on the axis
  assert _value_at(win, sdf, 24, 20) == pytest.approx(5.0 - 2.0)  # 3-4-5 from the end
  disc = raster.capsule_sdf(win, a, a, radius=2.0)  # degenerate segment: a disc
  assert _value_at(win, disc, 11, 19) == pytest.approx(1.0)


def test_convex_and_ellipse_distances():
  _, win = _canvas_and_window()
  center = np.array([[16.0, 16.0]] * 2)
  normals = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
  square = raster.convex_sdf(win, center, normals, np.full(4, 3.0))
  assert _value_at(win, square, 16, 16) == pytest.approx(-3.0)
  assert _value_at(win, square, 20, 17) == pytest.approx(1.0)
  ellipse = raster.ellipse_sdf(win, center, rx=6.0, ry=3.0, angle=0.0)
  # On the axes the first-order distance is exact.
  assert _value_at(win, ellipse, 23, 16) == pytest.approx(1.0, abs=1e-5)
  assert _value_at(win, ellipse, 16, 20) == pytest.approx(1.0, abs=1e-5)
  assert _value_at(win, ellipse, 16, 16) < -0.5  # centre: fully inside


@pytest.mark.parametrize("radius", [3.0, 5.5, 8.25])
def test_antialiased_area_matches_the_exact_area(radius):
  _, win = _canvas_and_window(center=(16.3, 15.8))
  c = np.array([[16.3, 15.8]] * 2)
  area = raster.coverage(raster.capsule_sdf(win, c, c, radius))[0].sum()
  assert area == pytest.approx(np.pi * radius**2, rel=0.01)


def test_paint_composites_in_order_and_labels_by_pixel_centre():
  canvas, win = _canvas_and_window(center=(16.0, 16.0), half=6)
  c = np.array([[16.0, 16.0]] * 2)
  big = raster.capsule_sdf(win, c, c, 5.0)
  small = raster.capsule_sdf(win, c, c, 2.0)
  raster.paint(canvas, win, big, np.array([1.0, 0.0, 0.0], np.float32), 3, 2)
  raster.paint(canvas, win, small, np.array([0.0, 0.0, 1.0], np.float32), 4, 3)
  rgb, semantic, instance = canvas.crop()
  assert (rgb[:, 16, 16] == [0.0, 0.0, 1.0]).all()  # the later shape is on top
  assert (rgb[:, 16, 20] == [1.0, 0.0, 0.0]).all()  # only the first one covers it
  assert semantic[0, 16, 16] == 4 and instance[0, 16, 16] == 3
  assert semantic[0, 16, 20] == 3 and instance[0, 16, 20] == 2
  assert semantic[0, 16, 22] == 0 and rgb[0, 16, 22, 0] == 0.0  # 6 px out: untouched
  # A pixel centred on the boundary (5 px) is half covered and, centre inside, labelled.
  assert rgb[0, 16, 21, 0] == pytest.approx(0.5) and semantic[0, 16, 21] == 3


def test_sample_shifted_translates_with_subpixel_accuracy():
  ramp = np.tile(np.arange(20, dtype=np.float32)[None, :, None], (20, 1, 1))  # value = x
  out = textures.sample_shifted(ramp, np.array([1.0, 2.5]), np.array([0.25, 3.75]), 8, 8)
  for t, shift in enumerate((0.25, 3.75)):
    expected = np.broadcast_to(np.arange(8, dtype=np.float32) + shift, (8, 8))
    np.testing.assert_allclose(out[t, :, :, 0], expected, atol=1e-5)
