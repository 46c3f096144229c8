"""Evaluation reports: task metrics, results files and figures (model-agnostic, pure functions).

`metrics` counts (confusion matrix in JAX, host int64 accumulation, mIoU, pixel accuracy, PCK,
DAVIS J&F);
`report` writes and reads `results.json` / `results.md`; `plots` draws the Pareto plot, the
residual-variance bars and dynamic bit maps as PNG files; `pareto` holds the front computation.
The evaluation loop that produces the rows lives above this package.
"""

from resq_jax.evaluation.metrics import (
  MAX_PIXELS_PER_CALL,
  ConfusionAccumulator,
  bbox_size,
  boundary_f_measure,
  boundary_tolerance,
  confusion_matrix,
  davis_j_and_f,
  davis_summary,
  miou,
  pck,
  pck_counts,
  pixel_accuracy,
  region_similarity,
  seg2bmap,
)
from resq_jax.evaluation.pareto import pareto_front
from resq_jax.evaluation.plots import (
  FAMILY_STYLE,
  is_keyframe_map,
  plot_bit_map,
  plot_pareto,
  plot_variance,
  point_labels,
  variance_ratio_pct,
)
from resq_jax.evaluation.report import (
  FAMILY_ORDER,
  RESULTS_JSON,
  RESULTS_MD,
  finite_float,
  load_results,
  results_markdown,
  setting_name,
  short_name,
  sort_rows,
  to_json_compatible,
  w8a8_reference_gbops,
  write_results,
)

__all__ = [
  "ConfusionAccumulator",
  "MAX_PIXELS_PER_CALL",
  "bbox_size",
  "boundary_f_measure",
  "boundary_tolerance",
  "confusion_matrix",
  "davis_j_and_f",
  "davis_summary",
  "miou",
  "pck",
  "pck_counts",
  "pixel_accuracy",
  "region_similarity",
  "seg2bmap",
  "pareto_front",
  "FAMILY_STYLE",
  "is_keyframe_map",
  "plot_bit_map",
  "plot_pareto",
  "plot_variance",
  "point_labels",
  "variance_ratio_pct",
  "FAMILY_ORDER",
  "RESULTS_JSON",
  "RESULTS_MD",
  "finite_float",
  "load_results",
  "results_markdown",
  "setting_name",
  "short_name",
  "sort_rows",
  "to_json_compatible",
  "w8a8_reference_gbops",
  "write_results",
]
