"""Glue between configs, the SynthRes data, the segmentation model and checkpoints.

Everything here takes a validated ConfigDict (``config_lib.validate``) and returns typed
objects: models, variables, batches.
"""
from __future__ import annotations

import itertools
import json
import pathlib

import flax
import jax
import jax.numpy as jnp

from resq_jax import config_lib, errors
from resq_jax.data import build_synthres, make_loader
from resq_jax.data import builder as data_builder
from resq_jax.data.loader import SynthResDataError, SynthResSource
from resq_jax.data.spec import NUM_CLASSES
from resq_jax.nn.models import SegNet, segnet_preset
from resq_jax.quant.recipe import LayerRecipe, float_recipe
from resq_jax.training import DATA_AXIS, restore_fields_from

NORMALISE = (0.5, 0.25)  # frames/255 -> (x - 0.5) / 0.25


def preprocess(batch) -> tuple[jax.Array, jax.Array]:
  """SynthRes batch -> (frames float32 [B, T, H, W, 3] normalised, labels int32 [B, T, H, W])."""
  mean, std = NORMALISE
  frames = (jnp.asarray(batch["frames"], jnp.float32) / 255.0 - mean) / std
  return frames, jnp.asarray(batch["semantic"], jnp.int32)


def make_model(config, recipe: LayerRecipe | None = None) -> SegNet:
  """The segmentation model; float training averages BatchNorm statistics over the data axis
  (synchronised BatchNorm), so 1 and N devices train alike."""
  recipe = config_lib.recipe_from(config.quant) if recipe is None else recipe
  return SegNet(num_classes=NUM_CLASSES, recipe=recipe, bn_axis_name=DATA_AXIS,
                **segnet_preset(config.model.preset))


def frame_shape(config) -> tuple[int, int, int, int]:
  """One frame batch per device-free init: ``[1, H, W, 3]``."""
  return (1, config.data.height, config.data.width, 3)


def init_variables(model, config, rng) -> dict:
  return model.init(rng, jnp.zeros(frame_shape(config), jnp.float32), phase="key")


def ensure_data(config, verbose: bool = True) -> None:
  """Build SynthRes for ``config.data`` (no-op when already built)."""
  build_synthres(config.data.data_dir, verbose=verbose, **config_lib.data_kwargs(config.data))


def loader(config, split: str, *, batch_size: int, shuffle: bool, num_epochs=None, seed=None):
  ensure_data(config, verbose=False)
  return make_loader(config.data.data_dir, split, batch_size=batch_size,
                     seed=config.seed if seed is None else seed, shuffle=shuffle,
                     num_epochs=num_epochs, worker_count=config.data.worker_count,
                     **config_lib.data_kwargs(config.data))


def calibration_batches(config) -> list[jax.Array]:
  """``calibration.num_batches`` normalised training clip batches ``[B, T, H, W, 3]``."""
  data = loader(config, "train", batch_size=config.data.batch_size, shuffle=True, num_epochs=1,
                seed=config.seed + 1)
  return [preprocess(b)[0] for b in itertools.islice(iter(data), config.calibration.num_batches)]


def eval_batches(config):
  """The validation split (or its first ``eval.num_batches`` batches), one pass."""
  data = iter(loader(config, "validation", batch_size=config.eval.batch_size, shuffle=False,
                     num_epochs=1))
  return itertools.islice(data, config.eval.num_batches) if config.eval.num_batches else data


def _restore(run_dir: str, variables: dict) -> dict:
  restored = restore_fields_from(run_dir, params=variables["params"],
                                 model_state=variables.get("batch_stats", {}))
  return {"params": restored["params"], "batch_stats": restored["model_state"]}


def load_fp(config, run_dir: str) -> tuple[SegNet, dict]:
  """The float model and its trained variables from an FP run's workdir."""
  model = make_model(config, float_recipe())
  return model, _restore(run_dir, init_variables(model, config, jax.random.key(0)))


def load_run(config, run_dir: str, recipe: LayerRecipe) -> tuple[SegNet, dict]:
  """A quantized (PTQ or QAT) run's model and variables."""
  model = make_model(config, recipe)
  return model, _restore(run_dir, init_variables(model, config, jax.random.key(0)))


def init_from_fp(model, fp_vars: dict, config) -> dict:
  """Variables of quantized ``model`` whose weights and BN statistics are the FP run's; the
  quantizer parameters keep their initial values (calibrate them next)."""
  fresh = init_variables(model, config, jax.random.key(0))
  params = flax.traverse_util.flatten_dict(fresh["params"])
  for path, value in flax.traverse_util.flatten_dict(fp_vars["params"]).items():
    if path not in params:
      raise ValueError(f"FP parameter {'/'.join(path)} has no counterpart in the quantized model")
    params[path] = value
  return {"params": flax.traverse_util.unflatten_dict(params),
          "batch_stats": fp_vars["batch_stats"]}


def read_run_config(run_dir: str) -> dict | None:
  """The ``config.json`` of a run, given its workdir, checkpoint directory or one step
  directory; None if there is none."""
  path = pathlib.Path(run_dir).resolve()
  for candidate in (path, path.parent, path.parent.parent):
    if (candidate / "config.json").is_file():
      return json.loads((candidate / "config.json").read_text())
  return None


def check_init_from(config, run_dir: str) -> None:
  """Raise ``ConfigMismatchError`` naming the difference if ``run_dir`` (``init_from``) is a
  run of another model than ``config``'s (the ``model`` section decides the parameter shapes),
  or ``CheckpointError`` if it does not exist."""
  if not pathlib.Path(run_dir).exists():
    raise errors.CheckpointError(f"init_from {run_dir!r} does not exist (the workdir of an FP "
                                 "run is expected)")
  saved = read_run_config(run_dir)
  if saved is None:
    return  # an older run without config.json: the restore itself reports a mismatch
  ours = config.model.to_dict()
  theirs = saved.get("model", {})
  diffs = [f"model.{k}: {theirs.get(k)!r} in init_from run {run_dir}, {ours[k]!r} in this config"
           for k in sorted(ours) if theirs.get(k) != ours[k]]
  if diffs:
    raise errors.ConfigMismatchError("init_from is a run of another model: " + "; ".join(diffs))


def verify_splits(config) -> None:
  """Open every built split of the dataset (train, validation, test), which checks that each
  record file exists and holds the promised number of records, so that a damaged split fails
  before training instead of at the evaluation afterwards. Raises ``DataError``."""
  cfg = data_builder.make_config(**config_lib.data_kwargs(config.data))
  for split in cfg.split_sizes():  # splits built with at least one clip
    try:
      SynthResSource(config.data.data_dir, cfg.name, split)
    except (SynthResDataError, FileNotFoundError, ValueError) as e:
      raise errors.DataError(f"{split} split: {e}") from e
