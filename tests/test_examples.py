"""The examples the README points to keep working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_example_job_file_is_a_valid_qlora_spec():
    import ftcloud

    spec = ftcloud.load_job(ROOT / "examples" / "job.yaml")
    assert spec.training.technique == "qlora" and spec.compute.spot is True
    assert spec.training.to_hyperparameters()["bnb_4bit_use_double_quant"] == "true"


@pytest.mark.slow
def test_sdk_quickstart_runs_offline(tmp_path):
    env = {**os.environ, "FTCLOUD_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "sdk_quickstart.py"), "--tiny"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Completed" in proc.stdout


@pytest.mark.slow
def test_readme_demo_runs_end_to_end(tmp_path):
    """`make demo` minus the install: generate, fine-tune with QLoRA via the CLI, status, ask."""
    env = {**os.environ, "FTCLOUD_DEMO_DIR": str(tmp_path)}
    env.pop("FTCLOUD_HOME", None)
    proc = subprocess.run(["bash", str(ROOT / "examples" / "demo.sh")], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Completed" in proc.stdout
    answer = [line for line in proc.stdout.splitlines() if line.startswith("A: ")]
    assert len(answer) == 2 and all(a.startswith("A: The colour of") for a in answer), answer
