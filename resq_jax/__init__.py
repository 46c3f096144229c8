"""resq_jax: Residual Quantization (ResQ, ICCV 2023) for video perception networks in JAX/Flax.

The public face: quantize a Flax model by recipe rules, calibrate it, run it over clips or
online, and count its bit operations::

  import resq_jax as rq

  rules = rq.RecipeRules(((r".*", rq.resq_recipe((8, 8), (4, 4))),))
  model = rq.quantize(float_model, rules)      # any flax.linen model: nn.Conv / nn.Dense ...
  variables = rq.init_quantizers(model, float_variables, clip[:, 0])
  variables = rq.calibrate_model(model, variables=variables, clips=[clip], period=4)
  result = rq.run_clip(model, variables, clip, period=4)       # clip [B, T, H, W, C]
  report = rq.bops_report(result.stats, rq.layer_costs(model, variables, clip[:, 0]))

Models written with ``rq.QConv`` / ``rq.QDense`` take their rules with ``rq.with_recipe_rules``.

The packages, bottom floor first (each imports only from the floors below it; the import graph
is checked by tests/test_layout.py and drawn in docs/design.md section 1):

- ``errors``: the failure classes and their exit codes (a leaf);
- ``quant`` (pure array math: quantizers, recipes, ResQ step math, dynamic policies, costs),
  ``ops`` (array operations tuned per backend), ``data`` (SynthRes and the real datasets),
  ``evaluation`` (metrics, bootstrap, equal-cost comparison, reports, plots);
- ``nn`` (Flax layers, the clip/stream runner, calibration, per-layer costs; on quant and ops);
- ``tasks`` (segmentation, pose: losses, predictions, metrics) and ``training``
  (data-parallel steps, checkpoints, metric logs);
- ``experiment``: everything that reads a config or an ``Experiment`` (schema and rules, parse,
  data, models, runs, train, evaluate, the demo, logging);
- ``stream``: the video application (``stream.py``).
"""

from resq_jax.nn.calibrate import CalibrationMethods, calibrate_model
from resq_jax.nn.costs import bops_report, format_bops_report, layer_costs
from resq_jax.nn.intercept import init_quantizers, quantize
from resq_jax.nn.layers import QConv, QConvTranspose, QDense, with_recipe_rules
from resq_jax.nn.runner import ClipResult, StreamState, run_clip, stream_init, stream_step
from resq_jax.quant.keyframes import KeyframeTrigger
from resq_jax.quant.recipe import (
  LayerRecipe,
  RecipeRules,
  dynamic_recipe,
  float_recipe,
  fq_recipe,
  hold_recipe,
  resq_recipe,
)

__version__ = "0.1.0"

__all__ = [
  "CalibrationMethods",
  "ClipResult",
  "KeyframeTrigger",
  "LayerRecipe",
  "QConv",
  "QConvTranspose",
  "QDense",
  "RecipeRules",
  "StreamState",
  "bops_report",
  "calibrate_model",
  "dynamic_recipe",
  "float_recipe",
  "format_bops_report",
  "fq_recipe",
  "hold_recipe",
  "init_quantizers",
  "layer_costs",
  "quantize",
  "resq_recipe",
  "run_clip",
  "stream_init",
  "stream_step",
  "with_recipe_rules",
]
