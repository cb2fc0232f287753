"""The local backend end to end, through the CLI in separate processes (like a user would)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY_RUN = ["--set", "per_device_train_batch_size=2", "--set", "gradient_accumulation_steps=1",
            "--set", "max_length=128", "--set", "logging_steps=1"]


def ftcloud(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "FTCLOUD_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "ftcloud.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def launch_until_training(name: str, max_steps: int, tiny_model_dir, data, home):
    """Launch a local LoRA job without waiting, return its backend once training has begun."""
    launched = ftcloud("launch", "--technique", "lora", "--model", str(tiny_model_dir), "--data", str(data),
                       "--name", name, "--set", f"max_steps={max_steps}", "--set", "save_steps=0", *TINY_RUN,
                       "--no-wait", home=home)
    assert launched.returncode == 0, launched.stderr
    from ftcloud.backends.local import LocalBackend

    backend = LocalBackend(root=home / "jobs")
    deadline = time.time() + 240
    while "step" not in backend.status(name).metrics:  # wait until it is really training
        assert time.time() < deadline, "training never started"
        assert not backend.status(name).terminal, backend.status(name).failure_reason
        time.sleep(0.2)
    return backend


@pytest.mark.slow
def test_qlora_job_runs_and_is_visible_from_later_invocations(tiny_model_dir, make_data, ftcloud_home):
    data = make_data(rows=24, fmt="chat")
    launched = ftcloud("launch", "--technique", "qlora", "--model", str(tiny_model_dir), "--data", str(data),
                       "--name", "e2e-qlora", "--set", "max_steps=4", *TINY_RUN, "--wait", home=ftcloud_home)
    assert launched.returncode == 0, launched.stderr + launched.stdout
    assert "backend: local" in launched.stderr
    assert "e2e-qlora: Completed" in launched.stdout
    assert "ftcloud-metric" in launched.stdout  # the run's output was streamed while waiting

    status = ftcloud("status", "e2e-qlora", "--json", home=ftcloud_home)
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["status"] == "Completed" and st["technique"] == "qlora" and st["backend"] == "local"
    assert [h["status"] for h in st["history"]] == ["Starting", "Training", "Completed"]
    assert "train_loss" in st["metrics"] and st["metrics"]["step"] == 4

    logs = ftcloud("logs", "e2e-qlora", home=ftcloud_home)
    assert logs.returncode == 0 and "backend: local" in logs.stderr
    assert "[algo-1] ftcloud-metric step=4" in logs.stdout

    jobs = ftcloud("jobs", "--json", home=ftcloud_home)
    assert [j["name"] for j in json.loads(jobs.stdout)] == ["e2e-qlora"]

    model_dir = Path(st["artifacts"])
    assert (model_dir / "adapter_model.safetensors").is_file()
    assert (model_dir / "adapter_config.json").is_file()
    job_dir = ftcloud_home / "jobs" / "e2e-qlora"
    hps = json.loads((job_dir / "ml" / "input" / "config" / "hyperparameters.json").read_text())
    assert hps["technique"] == "qlora" and hps["max_steps"] == "4"
    assert all(isinstance(v, str) for v in hps.values())
    assert json.loads((job_dir / "job.json").read_text())["spec"]["training"]["technique"] == "qlora"


@pytest.mark.slow
def test_stop_sends_sigterm_and_the_job_checkpoints(tiny_model_dir, make_data, ftcloud_home):
    backend = launch_until_training("e2e-stop", 100000, tiny_model_dir, make_data(rows=24, fmt="chat"), ftcloud_home)

    stopped = ftcloud("stop", "e2e-stop", home=ftcloud_home)
    assert stopped.returncode == 0 and "Stopping e2e-stop" in stopped.stdout
    final = backend.wait("e2e-stop", poll=0.5, timeout=120)
    assert final.status == "Stopped"
    checkpoints = list((ftcloud_home / "jobs" / "e2e-stop" / "ml" / "checkpoints").glob("checkpoint-*"))
    assert checkpoints, "SIGTERM should leave a checkpoint behind"
    again = ftcloud("stop", "e2e-stop", home=ftcloud_home)
    assert "already ended: Stopped" in again.stdout


@pytest.mark.slow
def test_resume_continues_a_stopped_job_from_its_checkpoint(tiny_model_dir, make_data, ftcloud_home):
    backend = launch_until_training("e2e-resume", 600, tiny_model_dir, make_data(rows=24, fmt="chat"), ftcloud_home)
    assert ftcloud("stop", "e2e-resume", home=ftcloud_home).returncode == 0
    assert backend.wait("e2e-resume", poll=0.5, timeout=120).status == "Stopped"
    saved = sorted((ftcloud_home / "jobs" / "e2e-resume" / "ml" / "checkpoints").glob("checkpoint-*"))
    assert saved, "the stop left no checkpoint"

    resumed = ftcloud("resume", "e2e-resume", "--json", home=ftcloud_home)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    final = json.loads(resumed.stdout)
    assert final["status"] == "Completed"
    assert [h["status"] for h in final["history"]][-4:] == ["Stopped", "Starting", "Training", "Completed"]
    metrics = json.loads((ftcloud_home / "jobs" / "e2e-resume" / "ml" / "model" / "metrics.json").read_text())
    assert metrics["resumed_from"] == saved[-1].name and metrics["global_step"] == 600

    again = ftcloud("resume", "e2e-resume", home=ftcloud_home)
    assert again.returncode == 2 and "only Stopped or Failed jobs can be resumed" in again.stderr


@pytest.mark.slow
def test_failed_job_reports_the_containers_reason(make_data, ftcloud_home, tmp_path):
    data = make_data(rows=8, fmt="chat")
    empty_model = tmp_path / "not-a-model"
    empty_model.mkdir()
    launched = ftcloud("launch", "--model", str(empty_model), "--data", str(data), "--name", "e2e-fail",
                       "--set", "max_steps=1", home=ftcloud_home)
    assert launched.returncode == 1
    status = json.loads(ftcloud("status", "e2e-fail", "--json", home=ftcloud_home).stdout)
    assert status["status"] == "Failed"
    failure = (ftcloud_home / "jobs" / "e2e-fail" / "ml" / "output" / "failure").read_text()
    assert status["failure_reason"] == failure.strip() and failure


def test_local_launch_errors_before_creating_anything(ftcloud_home, tmp_path):
    result = ftcloud("launch", "--model", "m/x", "--data", "s3://bucket/train.jsonl", home=ftcloud_home)
    assert result.returncode == 2
    assert "the local backend reads local files" in result.stderr
    assert not (ftcloud_home / "jobs").exists() or not any((ftcloud_home / "jobs").iterdir())


def test_unknown_local_job(ftcloud_home):
    result = ftcloud("status", "nope", "--backend", "local", home=ftcloud_home)
    assert result.returncode == 1 and "No local job named 'nope'" in result.stderr
