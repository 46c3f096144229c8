"""The claims table's verdicts on hand-built rows (errors and intervals chosen so that every
verdict is known), the paired bootstrap over clips against NumPy, and the comparison driver end
to end on the tiny plan."""

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from resq_jax.evaluation.claims import (
  CLAIMS,
  claims_markdown,
  evaluate_claims,
  interval_trend,
  ref_mode_order,
  residuals_quantize_better,
)
from resq_jax.evaluation.equal_cost import beats_at_equal_cost, paired_diff_ci

ROOT = pathlib.Path(__file__).resolve().parents[1]


def row(name, family, gbops, err, ci=None, source="ptq", **extra):
  # W8A8 costs 4 GBOPs here, so % of W8A8 = 25 * gbops.
  return {
    "name": name,
    "family": family,
    "source": source,
    "gbops_avg": gbops,
    "pct_w8a8": 25.0 * gbops,
    "rel_l2": err,
    "rel_l2_ci": list(ci or (err, err)),
    "fidelity_error": "rel_l2",
    "metric": 1 - err,
    **extra,
  }


FQ = [row("FQ W4A4", "fq", 1.0, 0.4), row("FQ W8A8", "fq", 4.0, 0.1)]


@pytest.mark.parametrize(
  "a_rows, verdict, ratio",
  [
    ([row("A", "resq", 2.0, 0.125, (0.10, 0.15))], "holds", 0.5),  # FQ at 2 GBOPs: 0.25
    ([row("A", "resq", 2.0, 0.30, (0.28, 0.32))], "does not hold", 1.2),
    ([row("A", "resq", 2.0, 0.24, (0.20, 0.30))], "tie", 0.96),
  ],
)
def test_equal_cost_verdicts_follow_the_interval_against_the_interpolated_front(
  a_rows, verdict, ratio
):
  v = beats_at_equal_cost(a_rows, FQ, "rel_l2", band=(0.0, 60.0))  # the 50% budget only
  assert v.verdict == verdict
  assert f"{ratio:.2f}x" in v.summary


def test_a_budget_above_a_front_uses_its_best_setting_that_fits():
  """At FQ W8A8's budget (100%), A's best setting that fits is its 50% point: 0.125 against
  0.1 there, worse; at 50% it is better: the full range depends."""
  v = beats_at_equal_cost([row("A", "resq", 2.0, 0.125, (0.10, 0.15))], FQ, "rel_l2")
  assert v.verdict == "depends"
  assert [d.split("%")[0] for d in v.details] == ["50.0", "100.0"]


def test_mixed_budgets_depend_and_only_front_points_are_budgets():
  a = [
    row("cheap", "resq", 1.5, 0.18, (0.17, 0.19)),  # FQ at 1.5: 0.4 - 0.3 * log(1.5)/log(4)
    row("dear", "resq", 3.0, 0.17, (0.168, 0.172)),  # worse than FQ's 0.162 at 3 GBOPs
    row("outside", "resq", 8.0, 0.01),  # beyond FQ's range: not compared
  ]
  v = beats_at_equal_cost(a, FQ, "rel_l2")
  fq_at_3 = 0.4 - 0.3 * math.log(3.0) / math.log(4.0)
  assert fq_at_3 < 0.168  # so 'dear' is significantly worse
  # Budgets: every front point above both fronts' cheapest (1.5 GBOPs): A's 1.5, 3 and 8 and
  # FQ's 4; at 8 FQ's best setting that fits is W8A8 (0.1), against A's 0.01.
  budgets = [d.split("%")[0] for d in v.details]
  assert v.verdict == "depends" and budgets == ["37.5", "75.0", "100.0", "200.0"]
  # Only A's own front is compared: a dominated A point adds no budget.
  dominated = a + [row("dominated", "resq", 2.0, 0.39)]
  assert len(beats_at_equal_cost(dominated, FQ, "rel_l2").details) == 4
  assert beats_at_equal_cost([], FQ, "rel_l2").verdict == "n/a"


def test_interval_trend_and_reference_modes_on_hand_rows():
  rows = [row(f"ResQ K={k} closed W8A8/W4A4", "resq", 4 / k, 0.01 * k) for k in (2, 4, 8, 16)]
  assert interval_trend(rows).verdict == "holds"
  rows[2]["rel_l2"] = 0.5  # K=8 worse than K=16: not monotone
  assert interval_trend(rows).verdict == "depends"
  modes = [
    row(f"ResQ K={k} {m} W8A8/W4A4", "resq", 1.0, e)
    for k in (4, 16)
    for m, e in (("closed", 0.1), ("key", 0.2), ("prev", 0.3))
  ]
  assert ref_mode_order(modes).verdict == "holds"
  modes[0]["rel_l2"] = 0.25  # K=4 closed worse than key
  assert ref_mode_order(modes).verdict == "depends"


def test_every_claim_answers_on_any_cell_and_the_table_lists_them():
  verdicts = evaluate_claims(FQ, {"variances": {"ratio_pct": [10.0, 50.0, 120.0]}})
  assert set(verdicts) == {cid for cid, _, _ in CLAIMS}
  assert verdicts["variance"].verdict == "depends"
  text = claims_markdown([("seg / slow_pan", FQ, {})])
  assert text.count("\n| ") == len(CLAIMS) + 1  # the header's separator row starts with '| -'


def test_comparison_driver_runs_the_tiny_plan_end_to_end(tmp_path):
  """benchmarks/comparison.py with configs/comparison_tiny.py: FP, one QAT run, two regimes'
  sweeps and the docs page; a rerun of the report stage alone reproduces the page."""
  cmd = [
    sys.executable,
    str(ROOT / "benchmarks" / "comparison.py"),
    "--plan=configs/comparison_tiny.py",
    f"--workdir={tmp_path / 'runs'}",
    f"--docs={tmp_path / 'docs'}",
  ]
  env_data = {"cwd": str(tmp_path)}
  subprocess.run(cmd, check=True, capture_output=True, text=True, **env_data)
  page = tmp_path / "docs" / "results.md"
  text = page.read_text()
  assert "segmentation / slow_pan" in text and "segmentation / fast_pan" in text
  rows = json.loads((tmp_path / "runs/segmentation/slow_pan/report/results.json").read_text())
  names = [r["name"] for r in rows["rows"]] if isinstance(rows, dict) else [r["name"] for r in rows]
  assert "QAT qat_resq" in names
  subprocess.run(cmd + ["--stages=report"], check=True, capture_output=True, **env_data)
  assert page.read_text() == text


def test_qat_is_compared_with_its_ptq_twin_only():
  from resq_jax.evaluation.claims import qat_at_least_ptq

  def r(name, source, metric, k=4):
    return {
      "name": name,
      "family": "resq",
      "source": source,
      "metric": metric,
      "key_bits": [8, 8],
      "residual_bits": [4, 4],
      "period": k,
      "ref_mode": "closed",
      "policy_step": None,
    }

  rows = [r("ResQ K=4", "ptq", 0.50), r("ResQ K=8", "ptq", 0.40, k=8), r("QAT K=4", "qat", 0.52)]
  v = qat_at_least_ptq(rows)
  assert v.verdict == "holds" and "+2.0" in v.summary
  rows.append(r("QAT K=8", "qat", 0.38, k=8))  # below its own twin (0.40), not K=4's
  assert qat_at_least_ptq(rows).verdict == "depends"


def test_a_group_of_families_forms_one_front():
  """QAT ResQ = static and dynamic rows together: both families' points are budgets."""
  a = [row("static", "resq", 2.0, 0.10), row("dynamic", "dynamic", 3.0, 0.05)]
  v = beats_at_equal_cost(a, FQ, "rel_l2")
  assert v.verdict == "holds" and [d.split("%")[0] for d in v.details] == ["50.0", "75.0", "100.0"]


def test_periods_longer_than_the_clip_are_reported_as_the_clip_length():
  from resq_jax.evaluation.claims import effective_rows

  rows = [
    {"name": "ResQ K=8 closed W8A8/W4A4", "period": 8, "source": "ptq"},
    {"name": "ResQ K=16 closed W8A8/W4A4", "period": 16, "source": "ptq"},  # = K=8 on T=8
    {"name": "Hold K=16", "period": 16, "source": "ptq"},
  ]
  out = effective_rows(rows, 8)
  assert [(r["name"], r["period"]) for r in out] == [
    ("ResQ K=8 closed W8A8/W4A4", 8),
    ("Hold K=8", 8),
  ]


# --- Paired bootstrap over clips -----------------------------------------------------------------


def _numpy_paired_ci(a, b, resamples=1000, seed=0):
  """Oracle: the same clip indices for both settings, percentile interval of the mean diff."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  picks = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
  diffs = a[picks].mean(axis=1) - b[picks].mean(axis=1)
  return tuple(np.percentile(diffs, [2.5, 97.5]))


def _numpy_mean_ci(x, resamples=1000, seed=0):
  picks = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
  return tuple(np.percentile(np.asarray(x)[picks].mean(axis=1), [2.5, 97.5]))


def clip_row(name, family, gbops, clips, per_clip=True, source="ptq"):
  """A row whose error, interval and per-clip list come from the clips' errors ``[N]``."""
  clips = np.asarray(clips, np.float64)
  extra = {"rel_l2_per_clip": clips.tolist()} if per_clip else {}
  return row(name, family, gbops, float(clips.mean()), _numpy_mean_ci(clips), source, **extra)


# Clip difficulty varies a lot (0.1 to 0.5) and A is lower than B on every clip by 0.005-0.015:
# the unpaired intervals overlap, the paired differences do not straddle 0.
_RNG = np.random.default_rng(42)
CLIPS_A = _RNG.permutation(np.linspace(0.1, 0.5, 40))
CLIPS_B = CLIPS_A + _RNG.uniform(0.005, 0.015, 40)


def test_paired_diff_ci_matches_numpy():
  lo, hi = paired_diff_ci(CLIPS_A, CLIPS_B)
  np.testing.assert_allclose((lo, hi), _numpy_paired_ci(CLIPS_A, CLIPS_B), rtol=1e-12)
  assert hi < 0  # every clip of A is lower
  assert paired_diff_ci(CLIPS_A, CLIPS_A) == (0.0, 0.0)
  with pytest.raises(ValueError, match="two \\[N\\] arrays"):
    paired_diff_ci(CLIPS_A, CLIPS_B[:-1])


def test_paired_bootstrap_separates_fronts_whose_intervals_overlap():
  a, b = clip_row("A", "resq", 2.0, CLIPS_A), clip_row("B", "fq", 2.0, CLIPS_B)
  (la, ha), (lb, hb) = a["rel_l2_ci"], b["rel_l2_ci"]
  assert la < lb < ha < hb  # the unpaired intervals overlap
  lo, hi = _numpy_paired_ci(CLIPS_A, CLIPS_B)
  v = beats_at_equal_cost([a], [b], "rel_l2")
  assert v.verdict == "holds" and "paired over 40 clips" in v.summary
  (detail,) = v.details
  assert f"better; paired bootstrap over 40 clips: diff [{lo:+.4f}, {hi:+.4f}]" in detail
  # The other way round: significantly worse, the interval mirrored.
  v = beats_at_equal_cost([b], [a], "rel_l2")
  assert v.verdict == "does not hold" and f"diff [{-hi:+.4f}, {-lo:+.4f}]" in v.details[0]
  # The same errors on every clip: a tie (the difference is 0 in every resample).
  same = clip_row("B", "fq", 2.0, CLIPS_A)
  v = beats_at_equal_cost([a], [same], "rel_l2")
  assert (
    v.verdict == "tie"
    and "tie; paired bootstrap over 40 clips: diff [+0.0000, +0.0000]" in (v.details[0])
  )


def test_without_per_clip_values_the_unpaired_test_decides():
  """Rows of an older results.json (no per-clip lists), a per-clip list on one side only, or
  lists of different lengths: the non-overlap test, which calls A vs B a tie."""
  a, b = clip_row("A", "resq", 2.0, CLIPS_A), clip_row("B", "fq", 2.0, CLIPS_B)
  old_a, old_b = (
    clip_row(r["name"], r["family"], 2.0, c, False) for r, c in ((a, CLIPS_A), (b, CLIPS_B))
  )
  short_b = dict(b, rel_l2_per_clip=b["rel_l2_per_clip"][:-1])
  for pair in ((old_a, old_b), (a, old_b), (a, short_b)):
    v = beats_at_equal_cost([pair[0]], [pair[1]], "rel_l2")
    assert v.verdict == "tie" and "unpaired intervals" in v.summary
    assert v.details[0].endswith("(0.97x, tie; unpaired: intervals overlap)")
  # Non-overlapping intervals still decide without per-clip values (the first parametrized case).
  v = beats_at_equal_cost([row("A", "resq", 2.0, 0.125, (0.10, 0.15))], FQ, "rel_l2")
  assert "better; unpaired: intervals do not overlap" in v.details[0]
  # A null (a non-finite value written by to_json_compatible) also falls back.
  broken = dict(b, rel_l2_per_clip=[None] + b["rel_l2_per_clip"][1:])
  assert "unpaired" in beats_at_equal_cost([a], [broken], "rel_l2").details[0]


def test_per_clip_values_are_interpolated_like_the_front():
  """B's front has points at 1 and 4 GBOPs; at A's 2 GBOPs it is halfway in log BOPs, so B's
  per-clip errors there are the mean of its two points' (and their mean the front's error);
  at B's 4 GBOPs, A's best setting within the budget is its 2 GBOPs point."""
  rng = np.random.default_rng(3)
  b1, b4 = CLIPS_B + 0.2, CLIPS_B - 0.05
  a = clip_row("A", "resq", 2.0, CLIPS_A + rng.uniform(0.0, 0.2, 40))
  b = [clip_row("B W4A4", "fq", 1.0, b1), clip_row("B W8A8", "fq", 4.0, b4)]
  v = beats_at_equal_cost([a], b, "rel_l2")
  a_clips = np.asarray(a["rel_l2_per_clip"])
  expected = [_numpy_paired_ci(a_clips, 0.5 * (b1 + b4)), _numpy_paired_ci(a_clips, b4)]
  assert [d.split("%")[0] for d in v.details] == ["50.0", "100.0"]
  for detail, (lo, hi) in zip(v.details, expected):
    assert f"diff [{lo:+.4f}, {hi:+.4f}]" in detail
  assert f"rel_l2 {a['rel_l2']:.4f}" in v.details[0]
  assert f"vs {0.5 * (b1.mean() + b4.mean()):.4f}" in v.details[0]
  # Without per-clip values at B's dear point, the 50% budget (which needs it) falls back; the
  # summary says which budgets were paired.
  b[1] = clip_row("B W8A8", "fq", 4.0, b4, per_clip=False)
  v = beats_at_equal_cost([a], b, "rel_l2")
  assert all("unpaired" in d for d in v.details)
  # A dearer B point without them (an older row): only its own budget falls back.
  b = [b[0], clip_row("B W8A8", "fq", 4.0, b4), clip_row("B W16", "fq", 8.0, b4 - 0.01, False)]
  v = beats_at_equal_cost([a], b, "rel_l2")
  assert ["unpaired" in d for d in v.details] == [False, False, True]
  assert "paired over 40 clips at 2 of 3 budgets" in v.summary


def test_residuals_quantize_better_uses_the_paired_test_when_it_can():
  """W4A4 residuals vs W4A4 frames: with per-clip lists the paired interval decides (holds,
  although the unpaired intervals overlap); without them the unpaired test calls it a tie."""
  res = clip_row("ResQ K=8 closed W8A8/W4A4", "resq", 1.0, CLIPS_A)
  fq = clip_row("FQ W4A4", "fq", 1.0, CLIPS_B)
  lo, hi = _numpy_paired_ci(CLIPS_A, CLIPS_B)
  v = residuals_quantize_better([res, fq])
  assert v.verdict == "holds" and f"paired diff [{lo:+.4f}, {hi:+.4f}]" in v.summary
  old = [
    clip_row(r["name"], r["family"], 1.0, c, False) for r, c in ((res, CLIPS_A), (fq, CLIPS_B))
  ]
  v = residuals_quantize_better(old)
  assert v.verdict == "tie" and "unpaired intervals" in v.summary


def test_qat_matches_ptq_when_a_lower_metric_is_not_significantly_further_from_float():
  """With per-clip errors a QAT run whose metric is below its twin's still matches it unless
  the paired interval says it is further from float; the details list both errors."""
  from resq_jax.evaluation.claims import qat_at_least_ptq

  twin = {"key_bits": [8, 8], "residual_bits": [4, 4], "period": 4, "ref_mode": "closed"}
  ptq = {**clip_row("ResQ K=4", "resq", 1.0, CLIPS_B), **twin}
  qat = {**clip_row("QAT K=4", "resq", 1.0, CLIPS_A, source="qat"), **twin}
  lo, hi = _numpy_paired_ci(CLIPS_A, CLIPS_B)
  v = qat_at_least_ptq([ptq, qat])  # metric 1 - err: higher, and closer to float
  (detail,) = v.details
  assert f"rel_l2 {CLIPS_A.mean():.4f} vs {CLIPS_B.mean():.4f}" in detail
  assert detail.endswith(f"paired diff [{lo:+.4f}, {hi:+.4f}]): beats") and v.verdict == "holds"
  # A lower metric, the same per-clip errors: the interval is [0, 0], a match.
  same = dict(qat, metric=ptq["metric"] - 0.01, rel_l2_per_clip=ptq["rel_l2_per_clip"])
  v = qat_at_least_ptq([ptq, same])
  assert v.verdict == "holds" and v.details[0].endswith(": matches") and "1 match" in v.summary
  # A lower metric and significantly further from float: falls short.
  worse_ptq = {**clip_row("ResQ K=4", "resq", 1.0, CLIPS_A), **twin}
  worse_qat = {**clip_row("QAT K=4", "resq", 1.0, CLIPS_B, source="qat"), **twin}
  v = qat_at_least_ptq([worse_ptq, worse_qat])
  assert v.verdict == "does not hold" and v.details[0].endswith(": falls short")
  # Without per-clip errors a lower metric cannot be excused.
  bare = {k: v for k, v in same.items() if k != "rel_l2_per_clip"}
  assert qat_at_least_ptq([ptq, bare]).verdict == "does not hold"


def test_decision_matrix_names_the_closest_family_and_resq_best_ratio_per_band():
  from resq_jax.evaluation.claims import decision_matrix

  # % of W8A8 = 25 * gbops: FQ W4A4 at 25%, FQ W8A8 at 100%; ResQ at 30% and 40% (err/FQ
  # 0.8 and 1.3 as the report would write them); hold at 40% closest to float in 25-50%;
  # a QAT row (ignored: PTQ only) closer still.
  rows = [
    dict(row("FQ W4A4", "fq", 1.0, 0.4), err_fq_ratio=1.0),
    dict(row("FQ W8A8", "fq", 4.0, 0.1), err_fq_ratio=1.0),
    dict(row("ResQ a", "resq", 1.2, 0.3), err_fq_ratio=0.8),
    dict(row("ResQ b", "dynamic", 1.6, 0.35), err_fq_ratio=1.3),
    dict(row("Hold", "hold", 1.6, 0.2), err_fq_ratio=0.7),
    dict(row("QAT", "resq", 1.6, 0.01, source="qat"), err_fq_ratio=0.05),
  ]
  lines = decision_matrix([("seg / slow_pan", rows), ("empty", [])])
  assert lines[0] == (
    "| Cell | 0-12.5% of W8A8 | 12.5-25% of W8A8 | 25-50% of W8A8 | 50-100% of W8A8 |"
  )
  assert lines[2] == "| seg / slow_pan | - | fq; no ResQ | hold; **ResQ 0.80x** | fq; no ResQ |"
  assert lines[3] == "| empty | - | - | - | - |"
