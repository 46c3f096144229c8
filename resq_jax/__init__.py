"""resq_jax: Residual Quantization (ResQ, ICCV 2023) for video perception networks in JAX/Flax.

Packages (imports only point down): ``resq_jax.quant`` (pure math) <- ``resq_jax.nn`` (Flax
layers, clip runner) <- ``resq_jax.training`` (data-parallel steps, checkpoints, metrics);
``resq_jax.data`` (SynthRes dataset, grain pipeline) and ``resq_jax.evaluation`` (metrics,
report, plots) are independent; ``resq_jax.tasks`` defines what a task is (segmentation, pose).
On top: ``config_lib`` parses a config into a typed ``experiment.Experiment``;
``model_factory`` (model), ``inputs`` (data), ``runs`` (runs on disk), ``train_lib``,
``eval_lib`` and ``pipeline`` (the demo) take its parts; ``log`` is the project logger.
``resq_jax.ops.conv2d`` (a conv with an im2col kernel-gradient VJP for XLA:CPU) is a standalone
operation: no layer calls it yet.
"""

__version__ = "0.1.0"
