"""results.json / results.md: round trip, strict JSON, atomic replace, table formatting."""

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.evaluation import pareto, report

ROWS = [
  dict(
    family="dynamic",
    source="ptq",
    key_bits=8,
    policy="ladder",
    threshold=[0.1, 0.3],
    period=8,
    ref_mode="closed",
    miou=np.float32(0.6875),
    gbops_avg=12.126,
    gbops_peak=57.6,
    state_bytes=3 * 1024 * 1024,
    pct_w8a8=100 * 12.126 / 57.6,
  ),
  dict(
    family="fq",
    source="ptq",
    key_bits=[8, 8],
    miou=0.705,
    gbops_avg=57.6,
    gbops_peak=57.6,
    pct_w8a8=100.0,
  ),
  dict(
    family="resq",
    source="qat",
    key_bits=8,
    residual_bits=4,
    period=4,
    ref_mode="prev",
    miou=float("nan"),
    gbops_avg=np.float64(25.2),
    gbops_peak=float("inf"),
    state_bytes=np.int64(1536),
    pct_w8a8=43.75,
  ),
  dict(
    family="fp",
    source="fp",
    miou=jnp.float32(0.75),
    gbops_avg=921.6,
    gbops_peak=921.6,
    pct_w8a8=1600.0,
  ),
  dict(name="bare row"),  # every optional key missing
]
META = dict(dataset="synthres", split="validation", clips=np.int64(64), macs=None)


def test_json_round_trip_writes_strict_json_with_null_for_non_finite(tmp_path):
  json_path, md_path = report.write_results(tmp_path, ROWS, META)
  assert os.path.basename(json_path) == "results.json" and os.path.exists(md_path)
  text = open(json_path, encoding="utf-8").read()
  assert "NaN" not in text and "Infinity" not in text
  json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))
  rows, meta = report.load_results(tmp_path)
  assert meta == {"dataset": "synthres", "split": "validation", "clips": 64, "macs": None}
  assert rows[2]["miou"] is None and rows[2]["gbops_peak"] is None
  assert rows[2]["state_bytes"] == 1536 and type(rows[2]["state_bytes"]) is int
  assert rows[0]["miou"] == 0.6875 and rows[0]["threshold"] == [0.1, 0.3]
  assert rows[3]["miou"] == pytest.approx(0.75)
  # Every row gains the comparison columns; plain Python values come back unchanged.
  derived = {"err_fq_ratio", "delta_fq_pts", "pareto"}
  assert rows[4] == {
    "name": "bare row",
    "err_fq_ratio": None,
    "delta_fq_pts": None,
    "pareto": False,
  }
  assert {k: v for k, v in rows[1].items() if k not in derived} == ROWS[1]
  # The FQ W8A8 row is the whole FQ front: 0 points from itself at its own cost.
  assert rows[1]["delta_fq_pts"] == 0.0 and rows[1]["pareto"] is True
  # Only the two result files remain: no temporary files left behind.
  assert sorted(os.listdir(tmp_path)) == ["results.json", "results.md"]


def test_failed_write_keeps_previous_files_and_leaves_no_temp(tmp_path, monkeypatch):
  report.write_results(tmp_path, ROWS[:1], META)
  before = open(tmp_path / "results.json", encoding="utf-8").read()

  def failing_replace(src, dst):
    raise OSError("disk full")

  monkeypatch.setattr(report.os, "replace", failing_replace)
  with pytest.raises(OSError, match="disk full"):
    report.write_results(tmp_path, ROWS, META)
  assert open(tmp_path / "results.json", encoding="utf-8").read() == before
  assert sorted(os.listdir(tmp_path)) == ["results.json", "results.md"]


def test_markdown_rows_sorted_and_formatted(tmp_path):
  report.write_results(tmp_path, ROWS, META)
  md = open(tmp_path / "results.md", encoding="utf-8").read()
  lines = md.splitlines()
  assert "dataset: synthres · split: validation · clips: 64 · macs: None" in lines
  table = [ln for ln in lines if ln.startswith("| ") and "---" not in ln]
  assert table[0] == (
    "| Setting | Family | Source | mIoU (%) [95% CI] | Agreement (%) | rel L2 | err/FQ | "
    "ΔmIoU vs FQ (pts) | GBOPs/frame avg | GBOPs/frame peak | % of W8A8 FQ | State (KiB) | "
    "Pareto |"
  )
  # Sorted FP, FQ, ResQ, dynamic, then unknown family; % of W8A8 as the rows give it (the
  # evaluation computes it with quant.cost.pct_of_w8a8); the reference in the note is the FQ
  # W8A8 row's 57.6 GBOPs. State in KiB. Rows of an older report (no interval, no fidelity)
  # show 'n/a' in the new columns; the one FQ point is the FQ front, so only its own cost is
  # in range (Δ 0).
  assert table[1:] == [
    "| FP32 | fp | fp | 75.00 | n/a | n/a | n/a | n/a | 921.6 | 921.6 | 1600.0 | – | ✓ |",
    "| FQ W8A8 | fq | ptq | 70.50 | n/a | n/a | n/a | +0.00 | 57.60 | 57.60 | 100.0 | – | ✓ |",
    "| ResQ 8b/4b K=4 prev QAT | resq | qat | – | n/a | n/a | n/a | n/a | 25.20 | – | 43.8 "
    "| 1.5 |  |",
    "| Dyn key 8b ladder τ=0.1,0.3 K=8 closed | dynamic | ptq | 68.75 | n/a | n/a | n/a | n/a "
    "| 12.13 | 57.60 | 21.1 | 3072.0 | ✓ |",
    "| bare row | – | – | – | n/a | n/a | n/a | n/a | – | – | – | – |  |",
  ]
  assert "(57.60 GBOPs/frame)" in md


# Hand example of the equal-cost comparison: FQ at 1 and 4 GBOPs (rel_l2 0.4 and 0.1, mIoU 50%
# and 70%); at 2 GBOPs (half-way in log cost) FQ's rel_l2 is 0.25 and its mIoU 60%.
EQUAL_COST_ROWS = [
  dict(name="FP", family="fp", source="fp", miou=0.75, rel_l2=0.0, agreement=1.0, gbops_avg=16.0),
  dict(name="FQ lo", family="fq", source="ptq", miou=0.5, rel_l2=0.4, gbops_avg=1.0),
  dict(name="FQ hi", family="fq", source="ptq", miou=0.7, rel_l2=0.1, gbops_avg=4.0),
  dict(name="FQ qat", family="fq", source="qat", miou=0.9, rel_l2=0.01, gbops_avg=2.0),
  dict(
    name="R",
    family="resq",
    source="ptq",
    miou=0.65,
    miou_ci=[0.64, 0.66],
    rel_l2=0.125,
    agreement=0.987654,
    gbops_avg=2.0,
    fidelity_error="rel_l2",
  ),
  dict(name="H", family="hold", source="ptq", miou=0.6, rel_l2=0.5, gbops_avg=8.0),
]


def test_equal_cost_columns_in_json_and_markdown(tmp_path):
  report.write_results(tmp_path, EQUAL_COST_ROWS)
  rows = {r["name"]: r for r in report.load_results(tmp_path)[0]}
  # The QAT FQ row is not part of the PTQ FQ front; err/FQ of R = 0.125 / 0.25.
  assert rows["R"]["err_fq_ratio"] == pytest.approx(0.5)
  assert rows["R"]["delta_fq_pts"] == pytest.approx(5.0)
  assert rows["FQ lo"]["err_fq_ratio"] == pytest.approx(1.0)
  assert rows["FQ qat"]["err_fq_ratio"] == pytest.approx(0.01 / 0.25)
  # Outside [1, 4] GBOPs there is no comparison.
  for name in ("FP", "H"):
    assert rows[name]["err_fq_ratio"] is None and rows[name]["delta_fq_pts"] is None
  md = open(tmp_path / "results.md", encoding="utf-8").read()
  table = [ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln]
  # Unknown family 'hold' after the known ones; the interval next to the value.
  names = [ln.split(" | ")[0][2:] for ln in table[1:]]
  assert names == ["FP", "FQ lo", "FQ qat", "FQ hi", "R", "H"]
  assert "| R | resq | ptq | 65.00 [64.00, 66.00] | 98.77 | 0.125 | 0.50 | +5.00 | 2.00 |" in md
  assert "| FP | fp | fp | 75.00 | 100.00 | 0.000 | n/a | n/a |" in md
  assert "err/FQ: the setting's rel_l2" in md


def test_w8a8_reference_from_meta_then_rows():
  rows = [
    dict(name="a", gbops_avg=10.0, gbops_w8a8=80.0),
    dict(name="b", family="fq", key_bits=[8, 8], gbops_avg=20.0),
  ]
  assert report.w8a8_reference_gbops(rows, {"gbops_w8a8": 40.0}) == 40.0
  assert report.w8a8_reference_gbops(rows) == 80.0
  assert report.w8a8_reference_gbops(rows[1:]) == 20.0
  assert report.w8a8_reference_gbops([dict(name="c", gbops_avg=1.0)]) is None


def test_report_files_are_readable_like_the_plots(tmp_path):
  umask = os.umask(0o022)
  try:
    for path in report.write_results(tmp_path, ROWS, META):
      assert os.stat(path).st_mode & 0o777 == 0o644
  finally:
    os.umask(umask)


@pytest.mark.parametrize(
  "x, text",
  [
    (None, "–"),
    (1234.56, "1234.6"),
    (12.345, "12.35"),
    (0.5, "0.500"),
    (0.0, "0.000"),
    (0.001234, "1.23e-03"),
  ],
)
def test_format_quantity(x, text):
  assert report.format_quantity(x) == text


def test_setting_and_short_names():
  fq = dict(family="fq", source="qat", key_bits=(4, 4))
  resq = dict(family="resq", key_bits=(8, 8), residual_bits=(4, 4), period=4, ref_mode="closed")
  dyn = dict(family="dynamic", policy="ladder", threshold=[0.1, 0.25], period=8, ref_mode="key")
  assert report.setting_name(fq) == "FQ W4A4 QAT"
  assert report.setting_name(resq) == "ResQ W8A8/W4A4 K=4 closed"
  assert report.setting_name(dyn) == "Dyn ladder τ=0.1,0.25 K=8 key"
  assert report.setting_name(dict(family="fp", name="float")) == "float"
  assert report.short_name(fq) == "W4A4 QAT"
  assert report.short_name(resq) == "ResQ 8/4 K4"
  assert report.short_name(dict(resq, key_bits=(8, 6))) == "ResQ W8A6/4 K4"
  assert report.short_name(dyn) == "Dyn ladder τ.1/.25 K8 key"
  assert report.short_name(dict(resq, label="mine")) == "mine"
  assert math.isnan(float("nan")) and pareto.finite_float(float("nan")) is None
  assert pareto.finite_float(True) is None and pareto.finite_float("3.5") == 3.5
