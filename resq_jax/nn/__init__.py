"""Flax building blocks of resq_jax: quantized layers, the clip runner, costs, calibration."""
from resq_jax.nn.calibrate import (CalibrationMethods, Observations, Reservoir, calibrate_model,
                                   observe, residual_samples)
from resq_jax.nn.clip import (ClipResult, StreamState, check_hashable, model_has_state,
                              model_variables, run_clip, stream_init, stream_step)
from resq_jax.nn.costs import (PLAIN_LINEAR_OPS, bops_report, clip_bops, flatten_stats,
                               format_bops_report, layer_costs, network_macs, plain_op_macs,
                               stack_stream_stats, visit_layers)
from resq_jax.nn.layers import (CONV_IMPLS, QConv, QConvTranspose, QDense, QuantLayer,
                                WithRecipeRules, float_twin, fold_bn, layer_recipe,
                                resolve_conv_impl, rolled_loop, with_recipe_rules)
from resq_jax.nn.models import SEGNET_PRESETS, BasicBlock, Fusion, SegNet, segnet_preset
from resq_jax.nn.quantized import PHASES, quantized_linear
from resq_jax.nn.weights import (StaleQuantizerError, check_quantizers, invalidate_act_quantizers,
                                 load_float_weights, refresh_weight_scales)

__all__ = [
    "CalibrationMethods", "Observations", "Reservoir", "calibrate_model", "observe",
    "residual_samples",
    "ClipResult", "StreamState", "check_hashable", "model_has_state", "model_variables",
    "run_clip", "stream_init", "stream_step",
    "PLAIN_LINEAR_OPS", "bops_report", "clip_bops", "flatten_stats", "format_bops_report",
    "layer_costs", "network_macs", "plain_op_macs", "stack_stream_stats", "visit_layers",
    "QConv", "QConvTranspose", "QDense", "QuantLayer", "WithRecipeRules", "float_twin",
    "fold_bn", "layer_recipe", "with_recipe_rules", "CONV_IMPLS", "resolve_conv_impl",
    "rolled_loop",
    "PHASES", "quantized_linear",
    "SEGNET_PRESETS", "BasicBlock", "Fusion", "SegNet", "segnet_preset",
    "StaleQuantizerError", "check_quantizers", "invalidate_act_quantizers", "load_float_weights",
    "refresh_weight_scales",
]
