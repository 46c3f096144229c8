"""Every bad input of docs/failure_behaviour.md through the entry points: one line on stderr
(``config error: ...`` or ``error: ...``), the documented exit code, no traceback.

In-process cases run what ``train.py`` / ``eval.py`` run (``parse.parse`` then
``train_and_evaluate`` / ``evaluate_sweep``) through ``errors.run_cli``; a few run the scripts
themselves in a subprocess (flag parsing, and one fault per script end to end)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import pytest

from resq_jax import errors
from resq_jax.experiment import evaluate, inputs, parse, train
from resq_jax.training import Checkpointer, checkpoint_dir

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(**overrides):
  spec = importlib.util.spec_from_file_location("cfg_tiny_cli", ROOT / "configs" / "tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in overrides.items():
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = value
  return config


def train_run(config, workdir):
  """train.py's ``run``."""
  return train.train_and_evaluate(parse.parse(config), workdir)


def eval_run(config, workdir):
  """eval.py's ``run``."""
  return evaluate.evaluate_sweep(parse.parse(config, needs_init_from=True), workdir)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("synthres")
  inputs.ensure_data(parse.parse(load_config(**{"data.data_dir": str(path)})).data)
  return str(path)


def _dummy_checkpoint(workdir: pathlib.Path, config, *, config_json=None, damage=False):
  """A run directory with one checkpoint of a state that is not this model's (nothing trains)
  and the run's config.json (``config_json``, default: ``config``'s own)."""
  with Checkpointer(checkpoint_dir(workdir), save_every_steps=1, async_save=False) as ckpt:
    ckpt.save(2, {"w": jnp.zeros(4)})
  (workdir / "config.json").write_text(config_json or parse.parse(config).config_json)
  if damage:
    (workdir / "checkpoints" / "2" / "state" / "_METADATA").write_text("{}")


def _case_invalid_value(tmp, data):
  return train_run, load_config(**{"data.data_dir": data, "optim.lr": -1.0}), tmp / "run"


def _case_init_from_missing(tmp, data):
  config = load_config(
    **{"data.data_dir": data, "stage": "ptq", "quant.mode": "fq", "init_from": str(tmp / "no")}
  )
  return train_run, config, tmp / "run"


def _case_init_from_without_checkpoint(tmp, data):
  (tmp / "empty").mkdir()
  config = load_config(
    **{"data.data_dir": data, "stage": "ptq", "quant.mode": "fq", "init_from": str(tmp / "empty")}
  )
  return train_run, config, tmp / "run"


def _case_init_from_another_model(tmp, data):
  other = tmp / "other"
  other.mkdir()
  saved = json.loads(parse.parse(load_config(**{"data.data_dir": data})).config_json)
  saved["model"]["preset"] = "demo"
  (other / "config.json").write_text(json.dumps(saved))
  config = load_config(
    **{"data.data_dir": data, "stage": "ptq", "quant.mode": "fq", "init_from": str(other)}
  )
  return train_run, config, tmp / "run"


def _case_data_dir_not_writable(tmp, data):
  (tmp / "a_file").write_text("")  # a file in the way: refused even when running as root
  return train_run, load_config(**{"data.data_dir": str(tmp / "a_file" / "data")}), tmp / "run"


def _case_workdir_not_writable(tmp, data):
  (tmp / "a_file").write_text("")
  return train_run, load_config(**{"data.data_dir": data}), tmp / "a_file" / "run"


def _case_truncated_split(tmp, data):
  copy = tmp / "data"
  subprocess.run(["cp", "-r", data, str(copy)], check=True)
  (path,) = copy.rglob("*validation.array_record*")
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  return train_run, load_config(**{"data.data_dir": str(copy)}), tmp / "run"


def _case_changed_config_on_resume(tmp, data):
  config = load_config(**{"data.data_dir": data})
  saved = json.loads(parse.parse(config).config_json)
  saved["optim"]["lr"] = 0.5
  (tmp / "run").mkdir()
  _dummy_checkpoint(tmp / "run", config, config_json=json.dumps(saved))
  return train_run, config, tmp / "run"


def _case_no_intact_checkpoint(tmp, data):
  config = load_config(**{"data.data_dir": data})
  (tmp / "run").mkdir()
  _dummy_checkpoint(tmp / "run", config, damage=True)
  return train_run, config, tmp / "run"


def _case_checkpoint_of_another_state(tmp, data):
  config = load_config(**{"data.data_dir": data})
  (tmp / "run").mkdir()
  _dummy_checkpoint(tmp / "run", config)
  return train_run, config, tmp / "run"


def _case_non_finite(tmp, data):
  config = load_config(**{"data.data_dir": data, "optim.lr": 1e30})
  return train_run, config, tmp / "run"


def _case_eval_without_init_from(tmp, data):
  return eval_run, load_config(**{"data.data_dir": data}), tmp / "eval"


def _case_eval_init_from_without_checkpoint(tmp, data):
  (tmp / "empty").mkdir()
  config = load_config(**{"data.data_dir": data, "init_from": str(tmp / "empty")})
  return eval_run, config, tmp / "eval"


def _case_eval_unknown_sweep(tmp, data):
  (tmp / "fp").mkdir()
  config = load_config(
    **{"data.data_dir": data, "init_from": str(tmp / "fp"), "eval.sweep": "nope"}
  )
  return eval_run, config, tmp / "eval"


# (case, exit code, the start of the one line on stderr; {tmp}: the test's directory)
CASES = [
  (_case_invalid_value, 2, "config error: optim.lr: got -1.0"),
  (_case_init_from_missing, 3, "error: init_from '{tmp}/no' does not exist"),
  (_case_init_from_without_checkpoint, 3, "error: no complete checkpoint found in {tmp}/empty"),
  (_case_init_from_another_model, 2, "error: init_from is a run of another model: model.preset"),
  (
    _case_data_dir_not_writable,
    2,
    "config error: data.data_dir: cannot build SynthRes in '{tmp}/a_file/data' (NotADirectoryError",
  ),
  (_case_workdir_not_writable, 2, "config error: --workdir: cannot create '{tmp}/a_file/run'"),
  (_case_truncated_split, 5, "error: validation split: "),
  (_case_changed_config_on_resume, 2, "error: the config differs from the one the run in"),
  (_case_no_intact_checkpoint, 3, "error: no intact checkpoint in {tmp}/run/checkpoints"),
  (_case_checkpoint_of_another_state, 3, "error: checkpoint step 2 in {tmp}/run/checkpoints"),
  (_case_non_finite, 4, "error: non-finite training at step "),
  (_case_eval_without_init_from, 2, "config error: init_from: "),
  (_case_eval_init_from_without_checkpoint, 3, "error: no complete checkpoint found in {tmp}"),
  (_case_eval_unknown_sweep, 2, "config error: eval.sweep: got 'nope'"),
]


@pytest.mark.parametrize(
  "case, code, line", CASES, ids=[c[0].__name__.removeprefix("_case_") for c in CASES]
)
def test_a_bad_input_ends_in_one_line_and_its_exit_code(
  case, code, line, data_dir, tmp_path, capsys
):
  fn, config, workdir = case(tmp_path, data_dir)
  capsys.readouterr()
  with pytest.raises(SystemExit) as info:
    errors.run_cli(fn, config, str(workdir))
  err = capsys.readouterr().err
  lines = err.strip().splitlines()
  expected = line.format(tmp=tmp_path)
  # The config-change error lists the differing keys below its line (documented).
  head = lines[:1] if case is _case_changed_config_on_resume else lines
  assert info.value.code == code, err
  assert len(head) == 1 and head[0].startswith(expected), err
  if case is _case_changed_config_on_resume:
    assert lines[1].strip() == "optim.lr: 0.5 -> 0.002"


def _script(script, *args, cwd):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)
  return subprocess.run(
    [sys.executable, str(ROOT / script), *args],
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


@pytest.mark.parametrize(
  "script, extra, code, line",
  [
    ("train.py", ["--config.optim.lrr=0.1"], 2, "config error: unknown config key 'optim.lrr'"),
    ("train.py", ["--config.data.data_dir={tmp}/a_file/data"], 2, "config error: data.data_dir"),
    ("train.py", ["--config.stage=ptq", "--config.init_from={tmp}/empty"], 3, "error: no complete"),
    ("eval.py", ["--config.init_from={tmp}/empty"], 3, "error: no complete checkpoint found"),
  ],
  ids=["unknown_key", "data_dir_not_writable", "train_init_from_empty", "eval_init_from_empty"],
)
def test_the_scripts_end_a_bad_input_in_one_line(script, extra, code, line, data_dir, tmp_path):
  (tmp_path / "a_file").write_text("")
  (tmp_path / "empty").mkdir()
  args = [
    "--config",
    str(ROOT / "configs" / "tiny.py"),
    "--workdir",
    str(tmp_path / "run"),
    f"--config.data.data_dir={data_dir}",
    *(a.format(tmp=tmp_path) for a in extra),
  ]
  result = _script(script, *args, cwd=tmp_path)
  assert result.returncode == code, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(line), result.stderr[-3000:]
  assert "Traceback" not in result.stdout + result.stderr
