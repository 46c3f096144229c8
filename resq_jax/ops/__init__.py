"""Array operations tuned for the backends resq_jax runs on."""

from resq_jax.ops.conv import DEFAULT_CHUNK_BYTES, conv2d, conv_output_shape

__all__ = ["DEFAULT_CHUNK_BYTES", "conv2d", "conv_output_shape"]
