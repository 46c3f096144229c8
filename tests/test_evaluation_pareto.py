"""The equal-cost comparison with frame quantization against hand-computed values."""

import math

import numpy as np
import pytest

from resq_jax.evaluation import pareto


def fq(gbops, err, source="ptq", **extra):
  return dict(family="fq", source=source, gbops_avg=gbops, rel_l2=err, **extra)


def test_interpolation_is_linear_in_log_cost_hand_example():
  front = pareto.fq_front([fq(1.0, 0.4), fq(4.0, 0.1)], "rel_l2")
  np.testing.assert_allclose(front.gbops, [1.0, 4.0])
  np.testing.assert_allclose(front.values, [0.4, 0.1])
  # 2 GBOPs is half-way between 1 and 4 in log cost: (0.4 + 0.1) / 2.
  assert front.at(2.0) == pytest.approx(0.25)
  row = dict(family="resq", gbops_avg=2.0, rel_l2=0.125)
  assert pareto.equal_cost_ratio(row, front) == pytest.approx(0.5)
  # A quarter of the way in log cost: 4 ** 0.25 = sqrt(2).
  assert front.at(math.sqrt(2.0)) == pytest.approx(0.4 - 0.25 * 0.3)
  # The front's ends are inside the range; beyond them there is no comparison.
  assert front.at(1.0) == pytest.approx(0.4) and front.at(4.0) == pytest.approx(0.1)
  for cost in (0.99, 4.01, 0.0, -1.0, None, float("nan"), "x"):
    assert front.at(cost) is None
    assert pareto.equal_cost_ratio(dict(gbops_avg=cost, rel_l2=0.1), front) is None
  assert pareto.equal_cost_ratio(dict(gbops_avg=2.0), front) is None  # no error


def test_front_is_the_lower_envelope_of_the_ptq_fq_points():
  rows = [
    fq(1.0, 0.4),
    fq(2.0, 0.5),  # dominated by (1, 0.4): cheaper and better
    fq(4.0, 0.1),
    fq(4.0, 0.3),  # same cost, worse: dominated
    fq(4.0, 0.1),  # exact duplicate: kept once
    fq(8.0, 0.2),  # dearer and worse than (4, 0.1)
    fq(2.0, 0.01, source="qat"),  # not PTQ: not in the default front
    dict(family="resq", source="ptq", gbops_avg=2.0, rel_l2=0.001),  # not FQ
    fq(3.0, None),  # no value
    fq(0.0, 0.05),  # no positive cost
  ]
  front = pareto.fq_front(rows, "rel_l2")
  np.testing.assert_allclose(front.gbops, [1.0, 4.0])
  np.testing.assert_allclose(front.values, [0.4, 0.1])
  assert front.at(2.0) == pytest.approx(0.25)
  assert front.at(8.0) is None  # the dominated dearer point does not extend the range
  # A front point that lies above the straight line keeps its own value (no convex hull).
  bent = pareto.fq_front([fq(1.0, 0.4), fq(2.0, 0.3), fq(4.0, 0.1)], "rel_l2")
  assert bent.at(2.0) == pytest.approx(0.3)
  assert bent.at(math.sqrt(2.0)) == pytest.approx(0.35)
  assert bent.at(2 * math.sqrt(2.0)) == pytest.approx(0.2)
  # source=None takes the QAT FQ row too.
  assert pareto.fq_front(rows, "rel_l2", source=None).at(2.0) == pytest.approx(0.01)
  assert len(pareto.fq_front([], "rel_l2")) == 0 and pareto.fq_front([], "x").at(1.0) is None


def test_metric_delta_uses_the_upper_front_in_points():
  rows = [
    fq(1.0, None, miou=0.5),
    fq(2.0, None, miou=0.45),  # worse and dearer than (1, 0.5): dominated
    fq(4.0, None, miou=0.7),
  ]
  front = pareto.fq_front(rows, "miou", higher_is_better=True)
  np.testing.assert_allclose(front.values, [0.5, 0.7])
  row = dict(gbops_avg=2.0, miou=0.65)
  assert pareto.equal_cost_metric_delta(row, front) == pytest.approx(100 * (0.65 - 0.6))
  assert pareto.equal_cost_metric_delta(dict(gbops_avg=16.0, miou=0.9), front) is None
  assert pareto.equal_cost_metric_delta(dict(gbops_avg=2.0), front) is None


def test_ratio_is_none_where_fq_matches_the_float_model():
  front = pareto.fq_front([fq(1.0, 0.0), fq(4.0, 0.0)], "rel_l2")
  assert pareto.equal_cost_ratio(dict(gbops_avg=2.0, rel_l2=0.1), front) is None
