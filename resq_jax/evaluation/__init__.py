"""Evaluation reports: task metrics, results files and figures (model-agnostic, pure functions).

`metrics` counts (confusion matrix in JAX, host int64 accumulation, mIoU, pixel accuracy, PCK,
DAVIS J&F);
`report` writes and reads `results.json` / `results.md`; `plots` draws the Pareto plot, the
residual-variance bars and dynamic bit maps as PNG files; `pareto` holds the front computation.
The evaluation loop that produces the rows lives above this package.
"""
from resq_jax.evaluation.metrics import ConfusionAccumulator
from resq_jax.evaluation.metrics import MAX_PIXELS_PER_CALL
from resq_jax.evaluation.metrics import bbox_size
from resq_jax.evaluation.metrics import boundary_f_measure
from resq_jax.evaluation.metrics import boundary_tolerance
from resq_jax.evaluation.metrics import confusion_matrix
from resq_jax.evaluation.metrics import davis_j_and_f
from resq_jax.evaluation.metrics import davis_summary
from resq_jax.evaluation.metrics import miou
from resq_jax.evaluation.metrics import pck
from resq_jax.evaluation.metrics import pck_counts
from resq_jax.evaluation.metrics import pixel_accuracy
from resq_jax.evaluation.metrics import region_similarity
from resq_jax.evaluation.metrics import seg2bmap
from resq_jax.evaluation.pareto import pareto_front
from resq_jax.evaluation.plots import FAMILY_STYLE
from resq_jax.evaluation.plots import is_keyframe_map
from resq_jax.evaluation.plots import plot_bit_map
from resq_jax.evaluation.plots import plot_pareto
from resq_jax.evaluation.plots import plot_variance
from resq_jax.evaluation.plots import point_labels
from resq_jax.evaluation.plots import variance_ratio_pct
from resq_jax.evaluation.report import FAMILY_ORDER
from resq_jax.evaluation.report import RESULTS_JSON
from resq_jax.evaluation.report import RESULTS_MD
from resq_jax.evaluation.report import finite_float
from resq_jax.evaluation.report import load_results
from resq_jax.evaluation.report import results_markdown
from resq_jax.evaluation.report import setting_name
from resq_jax.evaluation.report import short_name
from resq_jax.evaluation.report import sort_rows
from resq_jax.evaluation.report import to_json_compatible
from resq_jax.evaluation.report import w8a8_reference_gbops
from resq_jax.evaluation.report import write_results

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
