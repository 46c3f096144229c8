"""SynthRes generation: determinism, label consistency, motion within regime ranges, bad input.

Oracles: identical bytes for identical seeds; labels recomputed independently from the
instance map; trajectories checked against the regime's speed ranges and an analytic bound;
rendered masks checked against the sampled trajectories.
"""

import numpy as np
import pytest

from resq_jax.data import (
  CLASS_NAMES,
  JOINT_NAMES,
  NUM_CLASSES,
  NUM_JOINTS,
  PERSON_CLASS,
  PERSON_ID,
  REGIMES,
  SKELETON,
  generate_clip,
  render,
  sample_scene,
  spec,
)
from resq_jax.data import scene as scene_lib

# A few clips per regime keep the file fast (~25 ms per clip) while covering all regimes,
# every action (walk, jumping jack, wave) and 1-3 objects.
CLIPS = [(regime, i) for regime in REGIMES for i in range(6)]


@pytest.fixture(scope="module")
def clips():
  return {key: generate_clip(key[0], "train", key[1]) for key in CLIPS}


def test_vocabulary_is_consistent():
  assert NUM_CLASSES == len(CLASS_NAMES) == 7
  assert NUM_JOINTS == len(JOINT_NAMES) == 15  # the JHMDB joint set
  assert set(REGIMES) == {"static_cam", "slow_pan", "fast_pan", "flicker", "cuts"}
  assert REGIMES[:4] == ("static_cam", "slow_pan", "fast_pan", "flicker")  # seeds their motion
  # The skeleton is a tree spanning all joints: J - 1 edges, every joint reached.
  assert len(SKELETON) == NUM_JOINTS - 1
  assert {j for edge in SKELETON for j in edge} == set(range(NUM_JOINTS))


def test_same_seed_gives_identical_bytes_and_dtypes(clips):
  again = generate_clip("fast_pan", "train", 3)
  first = clips[("fast_pan", 3)]
  assert set(again) == {"frames", "semantic", "instance", "joints", "joint_visible", "bbox"}
  for key in first:
    assert again[key].tobytes() == first[key].tobytes(), key
  assert first["frames"].dtype == np.uint8 and first["frames"].shape == (16, 64, 64, 3)
  assert first["joints"].dtype == np.float32 and first["joint_visible"].dtype == np.bool_


def test_different_seeds_differ(clips):
  base = clips[("slow_pan", 0)]["frames"].astype(np.int16)
  other_index = clips[("slow_pan", 1)]["frames"].astype(np.int16)
  other_split = generate_clip("slow_pan", "validation", 0)["frames"].astype(np.int16)
  for other in (other_index, other_split):
    assert np.abs(base - other).mean() > 10.0  # unrelated images, not a tiny perturbation


def test_regimes_share_content_but_not_motion():
  scenes = [sample_scene(r, "test", 5) for r in REGIMES]
  classes = {tuple(o.class_id for o in s.objects) for s in scenes}
  actions = {s.figure.action for s in scenes}
  assert len(classes) == 1 and len(actions) == 1  # paired content across regimes
  speeds = [float(np.linalg.norm(s.objects[0].velocity)) for s in scenes]
  assert len(set(speeds)) == len(speeds)  # motion drawn per regime


def test_sizes_are_configurable():
  ex = generate_clip("flicker", "test", 0, height=40, width=72, num_frames=5)
  assert ex["frames"].shape == (5, 40, 72, 3) and ex["semantic"].shape == (5, 40, 72)
  assert ex["joints"].shape == (5, NUM_JOINTS, 2) and ex["bbox"].shape == (5, 4)
  # Frames are photographs of a scene, not noise: neighbouring pixels correlate strongly.
  f = ex["frames"].astype(np.float64)
  corr = np.corrcoef(f[:, :, 1:].ravel(), f[:, :, :-1].ravel())[0, 1]
  assert corr > 0.7


@pytest.mark.parametrize("key", CLIPS[::3])
def test_class_map_agrees_with_instance_map(clips, key):
  ex = clips[key]
  segments = scene_lib.sample_segments(key[0], "train", key[1])
  stops = [start for start, _ in segments[1:]] + [ex["semantic"].shape[0]]
  for (start, scene), stop in zip(segments, stops):  # one segment unless the regime cuts
    expected_class = {PERSON_ID: PERSON_CLASS}
    expected_class.update({o.instance_id: o.class_id for o in scene.objects})
    sem, inst = ex["semantic"][start:stop], ex["instance"][start:stop]
    assert set(np.unique(sem)) <= set(range(NUM_CLASSES))
    stuff = inst == 0
    assert np.isin(sem[stuff], spec.STUFF_CLASSES).all()
    for instance_id, class_id in expected_class.items():
      assert (sem[inst == instance_id] == class_id).all(), (instance_id, class_id)
    assert set(np.unique(inst)) <= {0, *expected_class}
    assert (inst == PERSON_ID).any(axis=(1, 2)).all()  # the person appears in every frame


def _edge_box(mask):
  ys, xs = np.nonzero(mask)
  return np.array([xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5])


@pytest.mark.parametrize("key", CLIPS)
def test_joints_and_box_agree_with_masks(clips, key):
  ex = clips[key]
  joints, visible, bbox, inst = ex["joints"], ex["joint_visible"], ex["bbox"], ex["instance"]
  h, w = inst.shape[1:]
  x, y = joints[..., 0], joints[..., 1]
  in_frame = (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)
  assert not (visible & ~in_frame).any()  # visible joints lie inside the frame
  for t in range(inst.shape[0]):
    person = inst[t] == PERSON_ID
    np.testing.assert_array_equal(bbox[t], _edge_box(person))
    vis = visible[t]
    rows, cols = np.floor(y[t, vis] + 0.5).astype(int), np.floor(x[t, vis] + 0.5).astype(int)
    assert person[rows, cols].all()  # a visible joint shows the person
    assert (x[t, vis] >= bbox[t, 0]).all() and (x[t, vis] <= bbox[t, 2]).all()
    assert (y[t, vis] >= bbox[t, 1]).all() and (y[t, vis] <= bbox[t, 3]).all()


def test_unoccluded_in_frame_joints_are_visible():
  # With the figure painted last nothing covers it, and every joint lies inside its own
  # limb, so exactly the in-frame joints are visible.
  checked = 0
  for i in range(40):
    scene = sample_scene("static_cam", "validation", i)
    if scene.depth_order[-1] != 0:
      continue
    ex = render.render_scene(scene)
    x, y = ex["joints"][..., 0], ex["joints"][..., 1]
    in_frame = (x >= -0.5) & (x < 63.5) & (y >= -0.5) & (y < 63.5)
    np.testing.assert_array_equal(ex["joint_visible"], in_frame)
    checked += 1
  assert checked >= 5


@pytest.mark.parametrize("regime", REGIMES)
def test_motion_stays_in_the_regime_speed_range(regime):
  reg = spec.REGIME_SPECS[regime]
  for i in range(8):
    scene = sample_scene(regime, "train", i)
    pan_step = np.linalg.norm(np.diff(scene.camera_pan, axis=0), axis=-1)
    lo, hi = reg.camera_speed
    assert (pan_step >= lo - 1e-9).all() and (pan_step <= hi + 1e-9).all()
    assert (np.abs(scene.camera_shake) <= reg.shake + 1e-12).all()
    for obj in scene.objects:
      speed = np.linalg.norm(obj.velocity)
      assert reg.object_speed[0] - 1e-9 <= speed <= reg.object_speed[1] + 1e-9
      step = np.linalg.norm(np.diff(obj.centers, axis=0), axis=-1)
      # Reflection keeps the speed between bounces and only shortens a bouncing step.
      assert (step <= speed + 1e-9).all()
      assert np.median(step) == pytest.approx(speed, rel=1e-9)
    root_step = np.abs(np.diff(scene.figure.joints[:, spec.JOINT_INDEX["belly"], 0]))
    assert (root_step <= reg.figure_speed[1] + 1e-9).all()


@pytest.mark.parametrize("regime", REGIMES)
def test_joint_motion_is_bounded_and_smooth(regime):
  # Bound on a joint's speed: root speed + bob + sum over the joint angles of
  # (angular speed <= 2 pi f_max * amplitude) x (lever arm to the tip). The arm chain
  # dominates: 1.2 jitter x (lean 0.06 x 0.66 h + shoulder 1.0 x 0.29 h + elbow 0.6 x 0.14 h)
  # = 0.50 h, with h <= 0.72 x 64 px; the bob adds 0.015 h x 4 pi f_max.
  reg = spec.REGIME_SPECS[regime]
  h_max, f_max = 0.72 * 64, reg.gait_frequency[1]
  bound = reg.figure_speed[1] + 2 * np.pi * f_max * (0.50 + 0.03) * h_max
  for i in range(8):
    joints = sample_scene(regime, "train", i).figure.joints
    step = np.linalg.norm(np.diff(joints, axis=0), axis=-1)
    assert step.max() <= bound
    # Smooth: the change of velocity between frames stays well below the bound too.
    accel = np.linalg.norm(np.diff(joints, n=2, axis=0), axis=-1)
    assert accel.max() <= 0.5 * bound


def test_rendered_masks_follow_the_trajectories():
  # An object painted last is never occluded and lies inside the frame, and all shapes are
  # centred on their centroid, so its mask centroid is its centre up to rasterisation
  # (< 0.6 px per frame for these sizes), with no systematic offset (a half-pixel
  # convention error would show as a 0.5 px bias).
  errors = []
  for regime in ("static_cam", "fast_pan"):
    for i in range(12):
      scene = sample_scene(regime, "train", i)
      top = scene.depth_order[-1]
      if top == 0:
        continue
      obj = scene.objects[top - 1]
      inst = render.render_scene(scene)["instance"]
      for t in range(scene.num_frames):
        ys, xs = np.nonzero(inst[t] == obj.instance_id)
        errors.append((xs.mean() - obj.centers[t, 0], ys.mean() - obj.centers[t, 1]))
  errors = np.array(errors)
  assert len(errors) >= 6 * 16
  assert np.abs(errors).max() < 0.6
  assert np.abs(errors.mean(axis=0)).max() < 0.1


def test_fast_pan_has_the_largest_frame_differences(clips):
  def mad(regime):
    return np.mean(
      [
        np.abs(np.diff(clips[(regime, i)]["frames"].astype(np.int16), axis=0)).mean()
        for i in range(6)
      ]
    )

  assert mad("fast_pan") > 2.0 * mad("slow_pan") > 0
  assert mad("static_cam") < mad("slow_pan")


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(regime="zoom"), "valid regimes: .*static_cam.*slow_pan.*fast_pan.*flicker.*cuts"),
    (dict(split="dev"), "valid splits: .*train.*validation.*test"),
    (dict(index=-1), "non-negative"),
    (dict(index=1.5), "must be an int"),
    (dict(height=0), "height must be positive"),
    (dict(num_frames=-2), "num_frames must be positive"),
    (dict(width=31), "too small for the articulated figure.*\\[32, 1024\\]"),
  ],
)
def test_bad_input_raises_value_error_listing_options(kwargs, match):
  args = dict(regime="slow_pan", split="train", index=0)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    generate_clip(args.pop("regime"), args.pop("split"), args.pop("index"), **args)
