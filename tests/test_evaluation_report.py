"""results.json / results.md: round trip, strict JSON, atomic replace, table formatting."""

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.evaluation import report

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
  assert rows[4] == {"name": "bare row"}
  assert rows[1] == ROWS[1]  # plain Python rows come back unchanged
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
    "| Setting | Family | Source | mIoU (%) | GBOPs/frame avg | "
    "GBOPs/frame peak | % of W8A8 FQ | State (KiB) | Pareto |"
  )
  # Sorted FP, FQ, ResQ, dynamic, then unknown family; % of W8A8 as the rows give it (the
  # evaluation computes it with quant.cost.pct_of_w8a8); the reference in the note is the FQ
  # W8A8 row's 57.6 GBOPs. State in KiB.
  assert table[1:] == [
    "| FP32 | fp | fp | 75.00 | 921.6 | 921.6 | 1600.0 | – | ✓ |",
    "| FQ W8A8 | fq | ptq | 70.50 | 57.60 | 57.60 | 100.0 | – | ✓ |",
    "| ResQ 8b/4b K=4 prev QAT | resq | qat | – | 25.20 | – | 43.8 | 1.5 |  |",
    "| Dyn key 8b ladder τ=0.1,0.3 K=8 closed | dynamic | ptq | 68.75 | 12.13 | 57.60 "
    "| 21.1 | 3072.0 | ✓ |",
    "| bare row | – | – | – | – | – | – | – |  |",
  ]
  assert "(57.60 GBOPs/frame)" in md


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
  assert math.isnan(float("nan")) and report.finite_float(float("nan")) is None
  assert report.finite_float(True) is None and report.finite_float("3.5") == 3.5
