"""Datasets and input pipelines for resq_jax (independent of the quantization code).

SynthRes: procedural video clips standing in for video semantic segmentation and human pose
estimation (see docs/data.md).

Vocabulary (resq_jax.data.spec):
  NUM_CLASSES, CLASS_NAMES     semantic classes ("backdrop", "ground", "person", shapes...)
  NUM_JOINTS, JOINT_NAMES      the 15 JHMDB joints, in JHMDB order
  SKELETON                     (joint, joint) edges of the figure
  REGIMES, SPLITS              motion regimes (builder configs) and splits

Generation (pure NumPy, deterministic in (regime, split, index)):
  generate_clip(regime, split, index, *, height=64, width=64, num_frames=16) -> dict
      frames uint8 [T, H, W, 3], semantic uint8 [T, H, W], instance uint8 [T, H, W],
      joints float32 [T, J, 2] (x, y), joint_visible bool [T, J], bbox float32 [T, 4]
  sample_scene(...) -> Scene   the clip's parameters and trajectories before rendering

TFDS + grain:
  build_synthres(data_dir, regime, *, num_train, num_validation, num_test, ...) -> builder
  make_loader(data_dir, split, *, batch_size, regime, seed, shuffle, ...) -> grain.DataLoader
      iter(loader) is a grain.DataLoaderIterator (checkpoint it; get_state / set_state)
  SynthRes (the tfds builder, registered as "synth_res"), SynthResConfig, make_config,
  config_name, SynthResSource, SynthResDataError

Real datasets (TFDS builders over a manual download, array_record, no TensorFlow; docs/data.md):
  CityscapesVideo ("cityscapes_video"), Jhmdb ("jhmdb"), Davis2017 ("davis2017")
  build_cityscapes_video / build_jhmdb / build_davis2017(data_dir, manual_dir, ...) -> builder
  CLI: python -m resq_jax.data.build --dataset NAME --manual_dir PATH --data_dir DIR

Tools:
  save_clip_gif(example, path), save_clip_strip(example, path)   label overlays
  temporal_redundancy(regime, n_clips) -> dict; CLI: python -m resq_jax.data.stats
"""

from resq_jax.data.builder import (
  SynthRes,
  SynthResConfig,
  build_synthres,
  config_name,
  make_config,
)
from resq_jax.data.cityscapes_video import CityscapesVideo, build_cityscapes_video
from resq_jax.data.davis import Davis2017, build_davis2017
from resq_jax.data.jhmdb import Jhmdb, build_jhmdb
from resq_jax.data.loader import SynthResDataError, SynthResSource, make_loader
from resq_jax.data.redundancy import temporal_redundancy
from resq_jax.data.render import generate_clip, render_scene
from resq_jax.data.scene import Scene, sample_scene
from resq_jax.data.spec import (
  CLASS_COLORS,
  CLASS_NAMES,
  JOINT_NAMES,
  MIN_SIZE,
  NUM_CLASSES,
  NUM_JOINTS,
  PERSON_CLASS,
  PERSON_ID,
  REGIMES,
  SKELETON,
  SPLITS,
)
from resq_jax.data.visualize import save_clip_gif, save_clip_strip

__all__ = [
  "CLASS_COLORS",
  "CLASS_NAMES",
  "CityscapesVideo",
  "Davis2017",
  "JOINT_NAMES",
  "Jhmdb",
  "MIN_SIZE",
  "NUM_CLASSES",
  "NUM_JOINTS",
  "PERSON_CLASS",
  "PERSON_ID",
  "REGIMES",
  "SKELETON",
  "SPLITS",
  "Scene",
  "SynthRes",
  "SynthResConfig",
  "SynthResDataError",
  "SynthResSource",
  "build_cityscapes_video",
  "build_davis2017",
  "build_jhmdb",
  "build_synthres",
  "config_name",
  "generate_clip",
  "make_config",
  "make_loader",
  "render_scene",
  "sample_scene",
  "save_clip_gif",
  "save_clip_strip",
  "temporal_redundancy",
]
