"""examples/mobile_seg.py runs and its cost report is right: the FP run of the quantized network
(``quantize`` of the unmodified Flax network) equals the original network (a vmap over time
against run_clip's merged frames: to float round-off), FQ W8A8 costs exactly 64 BOPs per MAC on
every frame, and
static ResQ with the W8A8-FQ edge rule costs 64 * MACs(edges) + 16 * MACs(rest) on residual
frames."""

import importlib.util
import pathlib
import sys

import numpy as np

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "mobile_seg.py"


def test_mobile_seg_example(capsys):
  spec = importlib.util.spec_from_file_location("mobile_seg", EXAMPLE)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # Flax modules are dataclasses: their module must be known
  spec.loader.exec_module(module)
  results = module.main(size=32, frames=6, period=3)
  printed = capsys.readouterr().out
  assert "FQ W8A8" in printed and "total" in printed
  assert results["FP"]["max_abs_err"] < 1e-4
  fq = results["FQ W8A8"]["report"]
  np.testing.assert_array_equal(fq["bops_per_frame"], 64 * fq["macs_per_frame"])
  resq = results["ResQ W8A8/W4A4 (edges FQ8)"]
  costs = resq["costs"]
  edges = ("stem_conv", "classifier_conv")
  edge = sum(costs[p].macs for p in edges)
  rest = sum(c.macs for p, c in costs.items() if p not in edges)
  hand = [64 * (edge + rest) if t % 3 == 0 else 64 * edge + 16 * rest for t in range(6)]
  np.testing.assert_array_equal(resq["report"]["bops_per_frame"], hand)
  assert resq["mask_agreement"] > 0.9
  dyn = results["DynResQ (edges FQ8)"]["report"]
  assert dyn["bops_per_frame"][0] == fq["bops_per_frame"][0]
