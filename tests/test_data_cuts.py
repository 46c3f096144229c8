"""SynthRes 'cuts' regime: cut statistics, labels following the cut, and the other regimes'
clips unchanged bit for bit.

Oracles: SHA-256 digests of clips rendered by the code before the regime existed; a binomial
bound on the cut rate; each segment equal to its scene rendered alone; labels recomputed from
the segment's own scene.
"""

import hashlib

import numpy as np
import pytest

from resq_jax.data import PERSON_ID, generate_clip, render, sample_scene, spec
from resq_jax.data import scene as scene_lib

# Computed with the code at commit e67cb14 (before the 'cuts' regime): sha256 over the sorted
# keys and bytes of generate_clip(regime, split, index, **sizes), first 32 hex digits.
DIGESTS = {
  ("static_cam", "train", 0, ()): "7e354370908d581116d0f35b7430ed52",
  ("static_cam", "test", 7, (40, 48, 56)): "79623cac03aabcaac9d01e4e62be689f",
  ("slow_pan", "train", 0, ()): "f2b588d551e9daaf8cd4a3a61748b015",
  ("slow_pan", "test", 7, (40, 48, 56)): "5589889ad6a777759671b822f2eab2d6",
  ("fast_pan", "train", 0, ()): "919fd1c8eb0640bcdfa50aa73585258b",
  ("fast_pan", "test", 7, (40, 48, 56)): "96b22f08aa0f68b0ee28e6776b7e17a2",
  ("flicker", "train", 0, ()): "6e01c6379b3ecf01abce1ba73a60523f",
  ("flicker", "test", 7, (40, 48, 56)): "0437f3853de06b08e27f924e5a77c3a1",
}


def digest(example) -> str:
  h = hashlib.sha256()
  for key in sorted(example):
    h.update(key.encode())
    h.update(np.ascontiguousarray(example[key]).tobytes())
  return h.hexdigest()[:32]


@pytest.mark.parametrize("key", list(DIGESTS), ids=str)
def test_existing_regimes_are_bit_identical(key):
  regime, split, index, sizes = key
  kw = dict(zip(("num_frames", "height", "width"), sizes))
  assert digest(generate_clip(regime, split, index, **kw)) == DIGESTS[key]
  assert scene_lib.cut_frames(regime, split, index, 64) == ()


def test_cut_frames_are_spaced_prefix_stable_and_at_the_regime_rate():
  reg = spec.REGIME_SPECS["cuts"]
  assert reg.cut_probability == pytest.approx(1 / 12) and reg.min_cut_gap == 4
  cuts, eligible = 0, 0
  for i in range(300):
    frames = scene_lib.cut_frames("cuts", "train", i, 64)
    assert frames == scene_lib.cut_frames("cuts", "train", i, 200)[: len(frames)]
    gaps = np.diff((0, *frames))
    assert (gaps >= reg.min_cut_gap).all()
    last = 0
    for t in range(1, 64):  # frames allowed to cut, and those that did
      if t - last >= reg.min_cut_gap:
        eligible += 1
        if t in frames:
          cuts += 1
          last = t
  p = reg.cut_probability
  assert abs(cuts / eligible - p) < 4 * np.sqrt(p * (1 - p) / eligible)  # binomial, 4 sigma
  assert scene_lib.cut_frames("cuts", "validation", 0, 64) != scene_lib.cut_frames(
    "cuts", "train", 0, 64
  )


def test_segments_are_independent_scenes_and_labels_follow_the_cut():
  example = generate_clip("cuts", "test", 2, num_frames=40)
  cuts = scene_lib.cut_frames("cuts", "test", 2, 40)
  segments = scene_lib.sample_segments("cuts", "test", 2, num_frames=40)
  assert len(cuts) >= 2 and [s for s, _ in segments] == [0, *cuts]
  stops = [*cuts, 40]
  for k, ((start, scene), stop) in enumerate(zip(segments, stops)):
    alone = render.render_scene(sample_scene("cuts", "test", 2, num_frames=stop - start, segment=k))
    for key in example:  # every label of the segment is its own scene's
      np.testing.assert_array_equal(example[key][start:stop], alone[key], err_msg=key)
    classes = {PERSON_ID: spec.PERSON_CLASS} | {o.instance_id: o.class_id for o in scene.objects}
    for instance_id, class_id in classes.items():
      assert (
        example["semantic"][start:stop][example["instance"][start:stop] == instance_id] == class_id
      ).all()
  frames = example["frames"].astype(np.int16)
  step = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))  # step[t-1]: t-1 -> t
  at_cut = step[np.asarray(cuts) - 1]
  elsewhere = np.delete(step, np.asarray(cuts) - 1)
  assert at_cut.min() > 4 * elsewhere.max()  # a new scene, not motion
  jump = np.abs(np.diff(example["joints"], axis=0)).max(axis=(1, 2))
  assert (
    jump[np.asarray(cuts) - 1].min() > jump[np.delete(np.arange(39), np.asarray(cuts) - 1)].max()
  )


def test_first_segment_shares_content_with_the_other_regimes():
  first = sample_scene("cuts", "test", 5)
  other = sample_scene("slow_pan", "test", 5)
  assert [o.class_id for o in first.objects] == [o.class_id for o in other.objects]
  assert first.figure.action == other.figure.action
  later = sample_scene("cuts", "test", 5, segment=1)
  assert not np.array_equal(later.backdrop[:8, :8], first.backdrop[:8, :8])
  with pytest.raises(ValueError, match="segment"):
    sample_scene("cuts", "test", 5, segment=-1)
