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


def _hex_rgb(color):
  return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)]) / 255


def test_family_styles_known_and_cycled():
  families = ["dynamic", "fq", "hold", "skipconv", "deltacnn", "videoiq", None, "fp"]
  styles = plots.family_styles(families)
  for fam in ("fp", "fq", "dynamic"):
    assert styles[fam] == plots.FAMILY_STYLE[fam]
  others = ["deltacnn", "hold", "skipconv", "videoiq", None]
  pairs = {(styles[f]["color"], styles[f]["marker"]) for f in others}
  assert len(pairs) == len(others)  # one colour/marker pair each
  known = {s["color"] for s in plots.FAMILY_STYLE.values()}
  assert not known & {styles[f]["color"] for f in others}
  # Sorted assignment: the same family gets the same style whatever the order of the rows.
  assert plots.family_styles(families[::-1]) == styles
  # 72 distinct (colour, marker) pairs before the cycles repeat together.
  many = plots.family_styles([f"control{i:02d}" for i in range(72)])
  assert len({(s["color"], s["marker"]) for s in many.values()}) == 72


def test_plot_pareto_two_panels_hundred_points_labels_only_pareto(tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  rows = [
    dict(name=f"FQ W{b}A{b}", family="fq", source="ptq", key_bits=(b, b), gbops_avg=b * b / 64,
         pct_w8a8=100 * b * b / 64, miou=0.7 - 0.3 / b, rel_l2=0.8 / b**2)
    for b in (3, 4, 6, 8)
  ]  # fmt: skip
  families = ["resq", "dynamic", "hold", "skipconv", "deltacnn"]
  for i in range(100):
    cost = float(rng.uniform(0.1, 1.2))
    miou = float(0.7 - 0.05 * rng.random() - 0.02 / cost)
    rows.append(
      dict(name=f"s{i}", family=families[i % 5], source="ptq", gbops_avg=cost,
           pct_w8a8=100 * cost, miou=miou, miou_ci=[miou - 0.01, miou + 0.008],
           rel_l2=float(rng.uniform(0.01, 0.1)), rel_l2_ci=[0.005, 0.2], fidelity_error="rel_l2")
    )  # fmt: skip
  rows.append(dict(name="FP32", family="fp", source="fp", gbops_avg=16.0, pct_w8a8=1600.0,
                   miou=0.72, rel_l2=0.0))  # fmt: skip
  labelled = []
  place = plots._place_labels

  def spy(ax, fig, xy, labels, **kwargs):
    labelled.append(list(labels))
    return place(ax, fig, xy, labels, **kwargs)

  monkeypatch.setattr(plots, "_place_labels", spy)
  img = _assert_not_blank(plots.plot_pareto(rows, tmp_path / "pareto.png"))
  assert img.shape[1] > 1.8 * img.shape[0]  # two panels side by side
  # Panel (a) labels exactly its Pareto points (metric vs cost); panel (b) those of (cost, error),
  # where FP (error 0: no log) is absent.
  front_a = pareto.pareto_front([(r["pct_w8a8"], 100 * r["miou"]) for r in rows])
  names = plots.point_labels(rows)  # FQ rows as 'W4A4', the others by name
  assert sorted(labelled[0]) == sorted(names[i] for i in front_a)
  kept = [r for r in rows if r["rel_l2"] > 0]
  front_b = pareto.pareto_front([(r["pct_w8a8"], -r["rel_l2"]) for r in kept])
  names = plots.point_labels(kept)
  assert sorted(labelled[1]) == sorted(names[i] for i in front_b)
  assert len(labelled[0]) < 30 and len(labelled[1]) < 30
  styles = plots.family_styles([r["family"] for r in rows])
  for fam in ("hold", "skipconv", "deltacnn", "fq"):
    assert _count_colour(img, _hex_rgb(styles[fam]["color"])) > 10, fam


def test_plot_pareto_older_rows_without_fidelity(tmp_path):
  """Rows of an older report (no CI, no fidelity, no pct_w8a8 on some): panel (b) says so."""
  rows = [dict(r) for r in ROWS]
  for r in rows:
    r.pop("pct_w8a8", None)
  _assert_not_blank(plots.plot_pareto(rows, tmp_path / "old.png", w8a8_gbops=57.6))
