"""Distillation losses against a NumPy reference and their identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.tasks.distill import class_kl, spatial_kl


def _np_kl(s, t, temp, axis):
  def log_softmax(x):
    x = x / temp
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))

  lt, ls = log_softmax(t.astype(np.float64)), log_softmax(s.astype(np.float64))
  return temp**2 * (np.exp(lt) * (lt - ls)).sum(axis=axis)


@pytest.mark.parametrize("temp", [1.0, 2.5])
def test_class_kl_matches_numpy(temp):
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(2, 3, 4, 5, 7)), rng.normal(size=(2, 3, 4, 5, 7))
  got = class_kl(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), temp)
  np.testing.assert_allclose(got, _np_kl(s, t, temp, -1).mean(), rtol=1e-5)


def test_spatial_kl_matches_numpy():
  rng = np.random.default_rng(1)
  s, t = rng.normal(size=(2, 6, 5, 3)), rng.normal(size=(2, 6, 5, 3))
  got = spatial_kl(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), 2.0)
  np.testing.assert_allclose(got, _np_kl(s, t, 2.0, (-3, -2)).mean(), rtol=1e-5)


def test_kl_is_zero_at_the_teacher_and_only_the_student_gets_gradients():
  t = jax.random.normal(jax.random.key(0), (4, 4, 7))
  assert float(class_kl(t, t)) == pytest.approx(0.0, abs=1e-6)
  # Shifting logits by a constant per pixel leaves the distribution unchanged.
  assert float(class_kl(t + 3.0, t)) == pytest.approx(0.0, abs=1e-5)
  g_teacher = jax.grad(lambda x: class_kl(t * 0.5, x))(t)
  np.testing.assert_array_equal(g_teacher, np.zeros_like(t))
  g_student = jax.grad(lambda x: class_kl(x, t))(t * 0.5)
  assert float(jnp.abs(g_student).max()) > 0


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match="shapes differ"):
    class_kl(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
  with pytest.raises(ValueError, match="temperature"):
    class_kl(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.0)
