"""Distillation losses from a float teacher's outputs (QAT with ``train.distill_weight > 0``).

Both are ``T^2 * KL(p_teacher || p_student)`` with ``p = softmax(outputs / T)`` over the axes
that the task's own loss normalises over, averaged over every other position, so that the
gradient's magnitude does not depend on the temperature ``T`` (Hinton et al., 2015):

* :func:`class_kl`: segmentation logits ``[..., C]``, a distribution over the classes of each
  pixel;
* :func:`spatial_kl`: pose heatmap logits ``[..., H, W, J]``, a distribution over the pixels of
  each joint (the pose task's spatial softmax).

The teacher's outputs are constants (``stop_gradient``): only the student learns.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _kl(student: jax.Array, teacher: jax.Array, temperature: float, axis) -> jax.Array:
  """``T^2 * KL(softmax(t / T) || softmax(s / T))`` summed over ``axis`` (kept elsewhere)."""
  if student.shape != teacher.shape:
    raise ValueError(f"student {student.shape} and teacher {teacher.shape} shapes differ")
  if not temperature > 0:
    raise ValueError(f"temperature must be positive, got {temperature}")
  t = jax.lax.stop_gradient(teacher).astype(jnp.float32) / temperature
  s = student.astype(jnp.float32) / temperature
  log_pt = jax.nn.log_softmax(t, axis=axis)
  log_ps = jax.nn.log_softmax(s, axis=axis)
  return temperature**2 * jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=axis)


def class_kl(student: jax.Array, teacher: jax.Array, temperature: float = 1.0) -> jax.Array:
  """Mean over pixels of the per-pixel class KL; ``student``, ``teacher`` ``[..., C]``."""
  return jnp.mean(_kl(student, teacher, temperature, axis=-1))


def spatial_kl(student: jax.Array, teacher: jax.Array, temperature: float = 1.0) -> jax.Array:
  """Mean over joints (and leading axes) of the spatial KL; ``[..., H, W, J]`` heatmaps."""
  return jnp.mean(_kl(student, teacher, temperature, axis=(-3, -2)))


__all__ = ["class_kl", "spatial_kl"]
