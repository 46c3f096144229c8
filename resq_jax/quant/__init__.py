"""Pure array math of resq_jax: quantizers, calibration, ResQ step math, dynamic policies, cost.

Imports only jax and numpy (DESIGN.md section 1).
"""
from resq_jax.quant.calibration import (CALIBRATION_METHODS, calibrate, lsq_init_scale,
                                        lsq_range, minmax_range, mse_range, percentile_range,
                                        range_to_qparams)
from resq_jax.quant.cost import (LayerCost, clip_summary, conv_macs, conv_output_hw, conv_padding,
                                 conv_taps, conv_transpose_macs, conv_transpose_output_hw,
                                 conv_transpose_padding, dense_macs, dynamic_bops,
                                 pct_of_w8a8, policy_comparisons, state_memory_bytes, step_bops,
                                 w8a8_bops)
from resq_jax.quant.dynamic import (BitAllocation, FixedStepPolicy, LadderPolicy,
                                    dynamic_fake_quant, dynamic_residual_quantizer,
                                    level_capacity, location_magnitude)
from resq_jax.quant.recipe import (MODES, REF_MODES, LayerRecipe, QuantPair, RecipeRules,
                                   dynamic_recipe,
                                   float_recipe, fq_recipe, key_pair, residual_pair, resq_recipe)
from resq_jax.quant.resq import (ResQState, add_bias, check_ref_mode, fq_forward, key_forward,
                                 residual_forward, static_residual_quantizer)
from resq_jax.quant.spec import QuantSpec, activation_spec, residual_spec, weight_spec
from resq_jax.quant.uniform import (dequantize, fake_quant, lsq_grad_scale, param_shape, quantize,
                                    scale_floor)

__all__ = [
    "CALIBRATION_METHODS", "calibrate", "lsq_init_scale", "lsq_range", "minmax_range",
    "mse_range", "percentile_range", "range_to_qparams",
    "LayerCost", "clip_summary", "conv_macs", "conv_output_hw", "conv_padding", "conv_taps",
    "conv_transpose_macs", "conv_transpose_output_hw", "conv_transpose_padding", "dense_macs",
    "dynamic_bops",
    "pct_of_w8a8", "policy_comparisons", "state_memory_bytes", "step_bops", "w8a8_bops",
    "BitAllocation", "FixedStepPolicy", "LadderPolicy", "dynamic_fake_quant",
    "dynamic_residual_quantizer", "level_capacity", "location_magnitude",
    "MODES", "REF_MODES", "LayerRecipe", "QuantPair", "RecipeRules", "dynamic_recipe", "float_recipe",
    "fq_recipe", "key_pair", "residual_pair", "resq_recipe",
    "ResQState", "add_bias", "check_ref_mode", "fq_forward", "key_forward", "residual_forward",
    "static_residual_quantizer",
    "QuantSpec", "activation_spec", "residual_spec", "weight_spec",
    "dequantize", "fake_quant", "lsq_grad_scale", "param_shape", "quantize",
    "scale_floor",
]
