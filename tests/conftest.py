"""Test-wide JAX settings.

Strict dtype promotion and rank promotion catch silent upcasts and accidental broadcasting.
Eight virtual CPU devices let data-parallel tests run on a machine without accelerators; they
must be requested before JAX initialises its backends, hence at import time of this file.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
