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
