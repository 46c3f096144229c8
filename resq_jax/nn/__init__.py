"""Flax building blocks of resq_jax: quantized layers, the clip runner, costs, calibration."""
from resq_jax.nn.calibrate import (CalibrationMethods, Observations, calibrate_model, observe,
                                   residual_samples)
from resq_jax.nn.clip import (ClipResult, StreamState, model_variables, run_clip, stream_init,
                              stream_step)
from resq_jax.nn.costs import (bops_report, clip_bops, flatten_stats, layer_costs, network_macs,
                               visit_layers)
from resq_jax.nn.layers import QConv, QDense, QuantLayer
from resq_jax.nn.models import SEGNET_PRESETS, BasicBlock, Fusion, SegNet, segnet_preset
from resq_jax.nn.quantized import PHASES, quantized_linear

__all__ = [
    "CalibrationMethods", "Observations", "calibrate_model", "observe", "residual_samples",
    "ClipResult", "StreamState", "model_variables", "run_clip", "stream_init", "stream_step",
    "bops_report", "clip_bops", "flatten_stats", "layer_costs", "network_macs", "visit_layers",
    "QConv", "QDense", "QuantLayer",
    "PHASES", "quantized_linear",
    "SEGNET_PRESETS", "BasicBlock", "Fusion", "SegNet", "segnet_preset",
]
