"""BOPs accounting (docs/design.md section 4).

Oracles: a NumPy direct convolution that counts its own multiply-accumulates (and whose values
are checked against lax.conv_general_dilated, so that its padding / stride / groups are the real
ones), output shapes from lax itself, and hand-computed MACs, BOPs, clip summaries and bytes.
"""

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resq_jax.quant import cost

DIMS = ("NHWC", "HWIO", "NHWC")


def _same_pads(size, kernel, stride):
  """TF/XLA 'SAME': output ceil(size / stride), total padding split with the extra at the end."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _explicit_pads(in_hw, kernel_hw, strides, padding):
  if padding == "SAME":
    return [_same_pads(s, k, st) for s, k, st in zip(in_hw, kernel_hw, strides)]
  if padding == "VALID":
    return [(0, 0), (0, 0)]
  return [tuple(p) for p in padding]


def _np_direct_conv(x, w, strides, padding, groups):
  """Direct convolution of one example ``x [H, W, C_in]`` with ``w [kh, kw, C_in / g, C_out]``.

  Returns ``(y, macs)`` where ``macs`` counts every multiply-accumulate the loop performs
  (padded zeros included, as in the MACs convention).
  """
  kh, kw, cin_g, c_out = w.shape
  cout_g = c_out // groups
  (pt, pb), (pl, pr) = _explicit_pads(x.shape[:2], (kh, kw), strides, padding)
  xp = np.pad(x, ((pt, pb), (pl, pr), (0, 0)))
  out_h = max(0, (xp.shape[0] - kh) // strides[0] + 1)
  out_w = max(0, (xp.shape[1] - kw) // strides[1] + 1)
  y = np.zeros((out_h, out_w, c_out), np.float64)
  macs = 0
  for oh, ow, co in itertools.product(range(out_h), range(out_w), range(c_out)):
    g = co // cout_g
    for i, j in itertools.product(range(kh), range(kw)):
      xs = xp[oh * strides[0] + i, ow * strides[1] + j, g * cin_g : (g + 1) * cin_g]
      y[oh, ow, co] += np.dot(xs, w[i, j, :, co])
      macs += xs.size  # one multiply-accumulate per input channel of the group
  return y, macs


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _lax_conv(x, w, strides, padding, groups):
  return jax.lax.conv_general_dilated(
    x, w, strides, padding, dimension_numbers=DIMS, feature_group_count=groups
  )


def _lax_padding(padding):
  return padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)


CONV_CASES = [
  # in_hw, kernel_hw, c_in, c_out, strides, padding, groups
  ((5, 6), (3, 3), 4, 6, (1, 1), "SAME", 1),
  ((5, 6), (3, 3), 4, 6, (2, 2), "SAME", 2),
  ((6, 5), (2, 4), 2, 3, (2, 1), "SAME", 1),  # even kernel: asymmetric SAME padding
  ((7, 5), (3, 2), 4, 4, (2, 1), "VALID", 4),  # depthwise
  ((6, 6), (1, 1), 2, 3, (2, 2), "VALID", 1),
  ((5, 5), (3, 3), 2, 4, (2, 2), ((1, 0), (2, 1)), 2),
  ((3, 4), (5, 5), 2, 2, (1, 1), "SAME", 1),  # kernel larger than the input
  ((6, 7), (3, 3), 3, 6, (3, 2), ((0, 2), (1, 1)), 3),  # depthwise with multiplier 2
]


@pytest.mark.parametrize("in_hw,kernel_hw,c_in,c_out,strides,padding,groups", CONV_CASES)
def test_conv_macs_equals_brute_force_count(
  in_hw, kernel_hw, c_in, c_out, strides, padding, groups
):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(*in_hw, c_in)).astype(np.float32)
  w = rng.normal(size=(*kernel_hw, c_in // groups, c_out)).astype(np.float32)
  y_ref, macs_ref = _np_direct_conv(x, w, strides, padding, groups)
  # The brute-force convolution is the real one (same padding / stride / groups as lax) ...
  y = _lax_conv(jnp.asarray(x[None]), jnp.asarray(w), strides, _lax_padding(padding), groups)
  np.testing.assert_allclose(np.asarray(y)[0], y_ref, rtol=1e-4, atol=1e-4)
  # ... and conv_macs / conv_output_hw count exactly what it does.
  assert cost.conv_macs(in_hw, kernel_hw, c_in, c_out, strides, padding, groups) == macs_ref
  assert cost.conv_output_hw(in_hw, kernel_hw, strides, padding) == y_ref.shape[:2]


def test_conv_macs_hand_values():
  # 3x3, 16 -> 32, SAME, stride 1 on 8x8: 64 * 9 * 16 * 32.
  assert cost.conv_macs((8, 8), (3, 3), 16, 32) == 64 * 9 * 16 * 32 == 294912
  # Stride 2 SAME on 7x7 -> 4x4; depthwise 8 -> 8: 16 * 9 * 8 * 8 / 8.
  assert cost.conv_macs((7, 7), (3, 3), 8, 8, (2, 2), "SAME", groups=8) == 16 * 9 * 8 == 1152
  # VALID 5x5 kernel on 32x32 -> 28x28, groups 2, 6 -> 4: 784 * 25 * 6 * 4 / 2.
  assert cost.conv_macs((32, 32), (5, 5), 6, 4, padding="VALID", groups=2) == 235200


def _lax_out_hw(in_hw, kernel_hw, strides, padding):
  out = jax.eval_shape(
    lambda x, w: jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=DIMS),
    jax.ShapeDtypeStruct((1, *in_hw, 1), jnp.float32),
    jax.ShapeDtypeStruct((*kernel_hw, 1, 1), jnp.float32),
  )
  return tuple(out.shape[1:3])


def test_conv_output_hw_equals_lax_output_shape():
  paddings = ["SAME", "VALID", ((1, 2), (0, 1)), ((0, 0), (3, 0))]
  for (h, w), (kh, kw), (sh, sw), padding in itertools.product(
    [(1, 2), (5, 8), (7, 3)], [(1, 1), (3, 2), (4, 5)], [(1, 1), (2, 3)], paddings
  ):
    expected = _lax_out_hw((h, w), (kh, kw), (sh, sw), padding)
    assert cost.conv_output_hw((h, w), (kh, kw), (sh, sw), padding) == expected, (
      (h, w),
      (kh, kw),
      (sh, sw),
      padding,
    )


@pytest.mark.parametrize(
  "c_in,c_out,groups",
  [(4, 6, 3), (6, 4, 3), (6, 6, 4), (4, 4, 0), (4, 4, -2), (4, 4, 2.0), (4, 4, True)],
)
def test_conv_macs_rejects_bad_groups(c_in, c_out, groups):
  with pytest.raises(ValueError, match="groups"):
    cost.conv_macs((8, 8), (3, 3), c_in, c_out, groups=groups)


def test_conv_macs_accepts_numpy_integer_groups():
  assert cost.conv_macs((4, 4), (1, 1), 4, 4, groups=np.int64(2)) == 16 * 4 * 4 // 2


def test_dense_macs_and_step_bops_hand_values():
  assert cost.dense_macs(3, 5) == 15
  assert cost.dense_macs(3, 5, n_locations=7) == 105
  assert cost.dense_macs(768, 3072, n_locations=197) == 197 * 768 * 3072 == 464781312
  assert cost.step_bops(1000, 8, 8) == 64000
  assert cost.step_bops(1000, 4, 2) == 8000
  assert cost.step_bops(1000, cost.FP32_BITS, cost.FP32_BITS) == 1024 * 1000
  # Python ints: no overflow for large layers.
  assert cost.step_bops(10**12, 32, 32) == 1024 * 10**12


def test_dynamic_bops_hand_values():
  # 4 input locations with bits (0, 2, 4, 8): b_w * MACs / N * sum_p b_p = 4 * 1000 / 4 * 14.
  assert cost.dynamic_bops(1000, 4, 4, 0 + 2 + 4 + 8) == 14000.0
  # Per-example arrays; weight bits may differ per example too.
  np.testing.assert_array_equal(
    cost.dynamic_bops(300, 3, np.asarray([4, 8]), np.asarray([6, 0])), [2400.0, 0.0]
  )
  # MACs / N not an integer: 10 MACs over 4 locations, 3 bits total at W2 -> 2 * 10 * 3 / 4.
  assert cost.dynamic_bops(10, 4, 2, 3) == 15.0


def test_policy_comparisons_hand_value():
  # 10 locations, 3 channels -> 2 comparisons each for the max; 4 candidates -> 3 for the ladder.
  assert cost.policy_comparisons(10, 3, 4) == 10 * 2 + 10 * 3
  assert cost.policy_comparisons(10, 1, 1) == 0


def test_clip_summary_static_resq_clip():
  macs = 1_000_000
  key = cost.step_bops(macs, 8, 8)  # 64 M
  res = cost.step_bops(macs, 4, 4)  # 16 M
  per_frame = [key, res, res, res, key, res, res, res]  # K = 4, two keyframes
  summary = cost.clip_summary(per_frame, macs)
  avg = (64 + 3 * 16) / 4 * 1e6  # 28 M
  assert summary["bops_avg"] == avg
  assert summary["bops_peak"] == 64e6
  assert summary["ratio_fp32_avg"] == avg / (1024 * macs) == 28 / 1024
  assert summary["ratio_w8a8_avg"] == avg / (64 * macs) == 0.4375
  assert summary["ratio_w8a8_peak"] == 1.0


def test_clip_summary_dynamic_frames():
  # Keyframe W8A8, then dynamic residual frames at W4 with mean activation bits 1, 0.5, 3.
  macs, n = 4096, 64
  per_frame = np.asarray(
    [cost.step_bops(macs, 8, 8)] + [cost.dynamic_bops(macs, n, 4, n * b) for b in (1.0, 0.5, 3.0)]
  )
  np.testing.assert_array_equal(per_frame, [64 * macs, 4 * macs, 2 * macs, 12 * macs])
  summary = cost.clip_summary(per_frame, macs)
  assert summary["bops_avg"] == (64 + 4 + 2 + 12) / 4 * macs
  assert summary["bops_peak"] == 64 * macs
  assert summary["ratio_w8a8_avg"] == (64 + 4 + 2 + 12) / 4 / 64
  assert summary["ratio_fp32_avg"] == (64 + 4 + 2 + 12) / 4 / 1024


def test_state_memory_bytes_of_mixed_pytree():
  state = {
    "conv1": {
      "ref": jnp.zeros((2, 4, 4, 3), jnp.float32),  # 96 * 4 = 384
      "yref": jnp.zeros((2, 4, 4, 8), jnp.bfloat16),
    },  # 256 * 2 = 512
    "codes": np.zeros((5,), np.int8),  # 5
    "list": [jnp.zeros((3,), jnp.int32), None],  # 12 (None is not a leaf)
    "scalar": jnp.float32(1.0),  # 4
    "shapes_only": jax.ShapeDtypeStruct((10, 10), jnp.float16),  # 200
  }
  assert cost.state_memory_bytes(state) == 384 + 512 + 5 + 12 + 4 + 200
  assert cost.state_memory_bytes({}) == 0


def test_layer_cost_is_a_frozen_record():
  c = cost.LayerCost(macs=10, n_locations=4)
  assert (c.macs, c.n_locations, c.state_elements) == (10, 4, 0)
  with pytest.raises(dataclasses.FrozenInstanceError):
    c.macs = 3  # frozen
