"""Bringing models from other formats: a TFLite vision model as a flax.linen module built from
standard layers (``nn.Conv``, ``nn.ConvTranspose``, ``nn.Dense``) with its trained weights.

  module, variables = import_tflite("selfie_segmentation.tflite")
  masks = module.apply(variables, frames)          # frames [B, H, W, 3], as the model expects

Imports nothing of the project: a floor of its own (tests/test_layout.py).
"""

from resq_jax.interop.tflite_model import TFLiteNet, import_tflite, layer_name
from resq_jax.interop.tflite_reader import Graph, Op, TFLiteImportError, read_tflite

__all__ = [
  "Graph",
  "Op",
  "TFLiteImportError",
  "TFLiteNet",
  "import_tflite",
  "layer_name",
  "read_tflite",
]
