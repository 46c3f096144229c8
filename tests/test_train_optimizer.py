"""The QAT optimizer's parameter groups, against hand-computed Adam steps: a quantizer scale
moves by ``quant_lr`` times its own size (relative), a zero point by ``quant_lr`` grid steps
(absolute), and weights follow the warmup + cosine AdamW schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from resq_jax.experiment.spec import OptimSpec
from resq_jax.experiment.train import make_optimizer

SPEC = OptimSpec(lr=0.1, quant_lr=0.01, weight_decay=0.0, warmup_steps=1, grad_clip=1e9)


def _params():
  return {
    "conv": {
      "kernel": jnp.array([0.5, -0.5]),
      "key_w_scale": jnp.array([0.002, 1.0]),  # a residual's and a 2-bit weight's scale
      "res_a_scale": jnp.array([-0.004]),  # the magnitude counts, not the sign
      "res_a_zero_point": jnp.array([3.0]),
    }
  }


def _step(grads_sign: float, steps: int = 1):
  params = _params()
  tx = make_optimizer(SPEC, num_steps=10)
  # optax's internals mix Python floats and int32 counts, which the tests' strict dtype
  # promotion rejects; the training step runs optax under standard promotion the same way.
  with jax.numpy_dtype_promotion("standard"):
    state = tx.init(params)
    for _ in range(steps):
      grads = jax.tree.map(lambda p: jnp.full_like(p, grads_sign), params)
      updates, state = tx.update(grads, state, params)
      params = optax.apply_updates(params, updates)
  return params


def test_one_step_moves_scales_relative_zero_points_absolute_weights_by_schedule():
  # Adam's first step is lr * g / |g| = lr * sign(g) (bias-corrected, eps negligible).
  p = _step(+1.0)["conv"]
  np.testing.assert_allclose(p["key_w_scale"], [0.002 * 0.99, 1.0 * 0.99], rtol=1e-6)
  np.testing.assert_allclose(p["res_a_scale"], [-0.004 - 0.01 * 0.004], rtol=1e-6)
  np.testing.assert_allclose(p["res_a_zero_point"], [3.0 - 0.01], rtol=1e-7)
  # Warmup from 0: the schedule's first learning rate is 0, so the weights have not moved.
  np.testing.assert_allclose(p["kernel"], [0.5, -0.5], rtol=0, atol=0)


def test_repeated_steps_compound_relative_to_the_current_scale():
  # A constant gradient sign: every Adam step is exactly lr * sign(g), applied to the scale
  # as it is then, so k steps multiply it by (1 - quant_lr)^k, and the tiny scale and the
  # large one move by the same fraction.
  p = _step(+1.0, steps=5)["conv"]
  np.testing.assert_allclose(p["key_w_scale"], np.array([0.002, 1.0]) * 0.99**5, rtol=1e-5)
  np.testing.assert_allclose(p["res_a_zero_point"], [3.0 - 5 * 0.01], rtol=1e-6)
  p = _step(-1.0, steps=5)["conv"]
  np.testing.assert_allclose(p["key_w_scale"], np.array([0.002, 1.0]) * 1.01**5, rtol=1e-5)
