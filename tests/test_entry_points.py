"""train.py and eval.py as a user runs them: subprocesses with --config.* overrides, checked by
exit codes, the files they write and a number against an oracle (FP costs 32 x 32 bits per
MAC, i.e. 1600 % of W8A8), and the quiet default output."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(script, *args, cwd):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)  # one device: the tiny batch of 8 needs no virtual devices
  return subprocess.run(
    [sys.executable, str(ROOT / script), *args],
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


def test_train_then_eval_through_the_scripts(tmp_path):
  common = [
    "--config",
    str(ROOT / "configs" / "tiny.py"),
    f"--config.data.data_dir={tmp_path / 'data'}",
  ]
  train = run(
    "train.py",
    *common,
    "--workdir",
    str(tmp_path / "fp"),
    "--config.train.num_steps=2",
    "--config.optim.warmup_steps=0",
    cwd=tmp_path,
  )
  assert train.returncode == 0, train.stderr[-2000:]
  row = json.loads((tmp_path / "fp" / "eval_metrics.json").read_text())
  assert row["source"] == "fp" and row["pct_w8a8"] == pytest.approx(1600.0)
  assert row["gbops_avg"] == pytest.approx(16 * row["gbops_w8a8"])
  assert f"{row['pct_w8a8']:.1f}% of W8A8 FQ" in train.stdout
  assert (tmp_path / "fp" / "config.json").is_file()
  # Quiet by default: the project's lines only (no Orbax INFO, no TFDS download banner).
  assert "Downloading and preparing dataset" not in train.stdout + train.stderr
  assert "orbax" not in (train.stdout + train.stderr).lower()
  assert len(train.stdout.splitlines()) < 15, train.stdout

  report = run(
    "eval.py",
    *common,
    "--workdir",
    str(tmp_path / "eval"),
    f"--config.init_from={tmp_path / 'fp'}",
    "--config.eval.sweep=fp",
    "--config.eval.plots=False",
    cwd=tmp_path,
  )
  assert report.returncode == 0, report.stderr[-2000:]
  results = json.loads((tmp_path / "eval" / "report" / "results.json").read_text())
  (fp,) = results["rows"]
  assert fp["name"] == "FP32" and fp["miou"] == pytest.approx(row["miou"], abs=1e-6)
  assert "report written to" in report.stdout

  bad = run(
    "eval.py",
    *common,
    "--workdir",
    str(tmp_path / "eval"),
    f"--config.init_from={tmp_path / 'fp'}",
    "--config.eval.sweep=full",
    cwd=tmp_path,
  )
  assert bad.returncode == 2
  assert bad.stderr.strip().startswith("config error: eval.sweep: got 'full'")


@pytest.mark.parametrize(
  "args, message",
  [
    (["--run", "nope", "--variant", "a="], "--run 'nope': not a QAT run of configs/comparison.py"),
    (["--run", "qat_resq_k4_w8a4", "--variant", "=x"], "expected name= or name=key=value"),
    (["--run", "qat_resq_k4_w8a4", "--variant", "a=lr=1"], "'lr=1' is not section.key=value"),
  ],
)
def test_qat_variants_refuses_bad_arguments_before_training(tmp_path, args, message):
  result = run("benchmarks/qat_variants.py", *args, "--workdir", str(tmp_path), cwd=tmp_path)
  assert result.returncode == 2 and message in result.stderr
  assert not any(tmp_path.iterdir())  # nothing trained or written
