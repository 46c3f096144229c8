"""Keys that reach the model, and the documented config names.

model.conv_impl: parsed into ModelSpec and passed by experiment.models.make_model to every QConv
of the built network (oracle: the QConvs called while tracing are exactly the layers that own a
conv kernel in the variables, an independent count). Every config named in the docs (README,
docs/*.md, BENCHMARKS.md, the scripts) loads and parses.
"""

import importlib.util
import json
import pathlib
import re

import flax.linen as nn
import pytest
from flax import traverse_util

from resq_jax.experiment import models, parse
from resq_jax.nn import QConv

ROOT = pathlib.Path(__file__).resolve().parents[1]
STAGES = ("fp", "ptq_fq", "ptq_resq", "ptq_dynamic", "qat_fq", "qat_resq", "qat_dynamic")


def load_config(name: str, arg: str | None = None):
  """``configs/<name>.py`` as ``--config=configs/<name>.py[:arg]`` loads it."""
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)


@pytest.mark.parametrize("impl", ["im2col", "xla"])
def test_conv_impl_reaches_every_qconv(impl):
  config = load_config("tiny")
  config.model.conv_impl = impl
  config.quant.mode = "resq"
  experiment = parse.parse(config, num_devices=8)
  assert experiment.model.conv_impl == impl
  model = models.make_model(experiment.model, experiment.task, experiment.quant.recipe)
  seen = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, QConv) and context.method_name == "__call__":
      seen[context.module.scope.path] = context.module.conv_impl
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    shapes = models.abstract_variables(model, experiment.data.frame_shape)
  kernels = {p[:-1] for p in traverse_util.flatten_dict(shapes["params"]) if p[-1] == "kernel"}
  assert len(kernels) > 5 and set(seen) == kernels
  assert set(seen.values()) == {impl}


def test_conv_impl_defaults_to_auto_and_is_checked():
  assert parse.parse(load_config("tiny"), num_devices=8).model.conv_impl == "auto"
  config = load_config("tiny")
  config.model.conv_impl = "cudnn"
  with pytest.raises(parse.ConfigError, match=r"^model.conv_impl: got 'cudnn' \(allowed: auto"):
    parse.validate(config, num_devices=8)


DOCUMENTED = [
  ROOT / "README.md",
  ROOT / "BENCHMARKS.md",
  *sorted((ROOT / "docs").glob("*.md")),
  *(ROOT / name for name in ("train.py", "eval.py", "demo.py")),
  *sorted((ROOT / "benchmarks").glob("*.py")),
  *sorted((ROOT / "configs").glob("*.py")),
]
NAME = re.compile(r"configs/([a-z_]+)\.py(?::([a-z_]+(?::[a-z_]+)?))?")


def documented_names() -> list[str]:
  found = {m.group(0) for path in DOCUMENTED for m in NAME.finditer(path.read_text())}
  return sorted(found)


EVERY_STAGE = [
  *(f"configs/synthres.py:{task}:{stage}" for task in ("segmentation", "pose") for stage in STAGES),
  *(f"configs/{name}.py:{stage}" for name in ("cityscapes", "jhmdb") for stage in STAGES),
  *(f"configs/results.py:{arg}" for arg in ("seg", "seg:fp", "pose", "pose:fp")),
]


@pytest.mark.parametrize("name", sorted(set(documented_names()) | set(EVERY_STAGE)))
def test_every_documented_config_name_parses(name):
  """Each ``configs/x.py[:arg]`` that the docs and scripts name (and every stage of every
  family) loads as --config loads it and parses (QAT / PTQ stages too, without init_from: only
  the entry that restores the FP run needs it)."""
  module, arg = NAME.fullmatch(name).groups()
  spec = importlib.util.spec_from_file_location(f"cfg_{module}", ROOT / "configs" / f"{module}.py")
  loaded = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(loaded)
  if not hasattr(loaded, "get_config"):
    assert not arg, name  # a data module (sweeps, comparison plans): nothing to parse
    return
  experiment = parse.parse(loaded.get_config(arg) if arg else loaded.get_config(), num_devices=8)
  if module in ("synthres", "cityscapes", "jhmdb") and arg:
    assert experiment.stage == arg.rpartition(":")[2].partition("_")[0]
  if module == "synthres" and arg:
    assert json.loads(experiment.config_json)["task"] == arg.partition(":")[0]


@pytest.mark.parametrize("name, arg", [("synthres", "depth:fp"), ("synthres", "pose:qat_int8")])
def test_a_bad_config_argument_names_what_is_allowed(name, arg):
  with pytest.raises(ValueError, match="expected one of"):
    load_config(name, arg)
