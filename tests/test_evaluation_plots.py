"""Report figures: the Pareto-front helper by hand, and every plot writes a non-blank PNG."""

import matplotlib.image
import numpy as np
import pytest

from resq_jax.evaluation import pareto, plots

ROWS = [
  dict(family="fp", source="fp", miou=0.71, gbops_avg=921.6, gbops_peak=921.6),
  dict(family="fq", source="ptq", key_bits=(8, 8), miou=0.70, gbops_avg=57.6, gbops_peak=57.6),
  dict(family="fq", source="ptq", key_bits=(4, 4), miou=0.52, gbops_avg=14.4, gbops_peak=14.4),
  dict(
    family="resq",
    source="ptq",
    key_bits=8,
    residual_bits=4,
    period=4,
    miou=0.69,
    gbops_avg=25.2,
    gbops_peak=57.6,
  ),
  dict(
    family="dynamic",
    source="ptq",
    policy="ladder",
    threshold=0.1,
    period=8,
    miou=0.695,
    gbops_avg=12.1,
    gbops_peak=57.6,
  ),
  dict(family="dynamic", source="ptq", policy="fixed", miou=None, gbops_avg=9.0),  # skipped
]


def _read_png(path):
  img = matplotlib.image.imread(path)
  assert img.ndim == 3 and img.shape[2] in (3, 4)
  return img[..., :3]


def _assert_not_blank(path):
  img = _read_png(path)
  assert img.shape[0] > 100 and img.shape[1] > 100
  assert img.std() > 0.05  # a blank (single-colour) image has std 0
  # Many distinct colours: text, markers and lines were drawn, not one flat fill.
  rgb = (img * 255).round().astype(np.int64)
  packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
  assert len(np.unique(packed)) > 20
  return img


def _count_colour(img, rgb, tol=0.02):
  return int((np.abs(img - np.asarray(rgb)).max(axis=-1) < tol).sum())


def test_pareto_front_hand_example():
  points = [(1, 50), (2, 60), (2, 55), (4, 60), (8, 70), (3, np.nan), (8, 70), (0.5, 40)]
  # (2, 55) and (4, 60) are dominated by (2, 60); NaN never counts; the duplicate (8, 70)
  # points do not dominate each other. Result ordered by cost.
  np.testing.assert_array_equal(pareto.pareto_front(points), [7, 0, 1, 4, 6])
  np.testing.assert_array_equal(pareto.pareto_front(np.zeros((0, 2))), [])


def test_plot_pareto_writes_png_with_family_colours(tmp_path):
  path = plots.plot_pareto(ROWS, tmp_path / "sub" / "pareto.png")
  img = _assert_not_blank(path)
  # Each family's marker colour is present (Okabe-Ito colours, see FAMILY_STYLE).
  for fam in ("fq", "resq", "dynamic"):
    rgb = np.array([int(plots.FAMILY_STYLE[fam]["color"][i : i + 2], 16) for i in (1, 3, 5)]) / 255
    assert _count_colour(img, rgb) > 10, fam


def test_plot_variance_ratio_and_png(tmp_path):
  np.testing.assert_allclose(
    plots.variance_ratio_pct([2.0, 4.0, 0.0], [0.1, 2.0, 1.0]), [5.0, 50.0, np.nan]
  )
  with pytest.raises(ValueError):
    plots.variance_ratio_pct([1.0, 2.0], [1.0])
  path = plots.plot_variance(
    ["conv1", "conv2", "head"], [2.0, 4.0, 1.0], [0.1, 0.2, 0.08], tmp_path / "var.png"
  )
  img = _assert_not_blank(path)
  bar = np.array([0xE6, 0x9F, 0x00]) / 255
  assert _count_colour(img, bar) > 500


def test_plot_bit_map_png_and_keyframe_detection(tmp_path):
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  maps = rng.choice([0, 2, 4, 8], size=(4, 8, 8))
  maps[0] = 8  # keyframe: one precision everywhere
  maps[3] = 0  # a fully skipped frame is not a keyframe
  assert [plots.is_keyframe_map(m) for m in maps] == [True, False, False, False]
  path = plots.plot_bit_map(frames, maps, tmp_path / "bits.png")
  img = _assert_not_blank(path)
  # The skip colour (light grey) fills at least the fully skipped frame's panel.
  assert _count_colour(img, (0.88, 0.88, 0.88), tol=0.01) > 1000
  # A bit value outside the candidates (16-bit keyframe) joins the colour scale.
  maps[0] = 16
  assert plots._levels(maps, (0, 2, 4, 8)) == [0, 2, 4, 8, 16]
  _assert_not_blank(plots.plot_bit_map(frames[:3], maps[:3], tmp_path / "bits16.png", max_cols=2))
  with pytest.raises(ValueError):
    plots.plot_bit_map(frames, maps[:2], tmp_path / "bad.png")


def test_point_labels_and_outlier_floor():
  rows = [
    dict(family="dynamic", name="Dyn step=1", policy_step=None, period=4),
    dict(family="dynamic", name="Dyn step=2", period=4),
    dict(family="fq", key_bits=(8, 8)),
  ]
  # The two dynamic rows share the short name 'Dyn K4', so they fall back to their names.
  assert plots.point_labels(rows) == ["Dyn step=1", "Dyn step=2", "W8A8"]
  # best 80, 25th percentile 77 -> floor 80 - 4 * 3 = 68: only the collapsed 20 % is below.
  assert plots._auto_floor(np.array([80.0, 79.5, 78.0, 77.0, 20.0])) == pytest.approx(68.0)
  assert plots._auto_floor(np.array([80.0, 79.0, 70.0])) == 70.0  # too few points: no floor
