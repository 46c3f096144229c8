"""resq_jax: Residual Quantization (ResQ, ICCV 2023) for video perception networks in JAX/Flax.

Packages (imports only point down): ``resq_jax.quant`` (pure math) <- ``resq_jax.nn`` (Flax
layers, clip runner) <- ``resq_jax.training`` (data-parallel steps, checkpoints, metrics);
``resq_jax.data`` (SynthRes dataset, grain pipeline) is independent; ``resq_jax.ops`` holds
backend-tuned array operations used by the layers.
"""
__version__ = "0.1.0"
