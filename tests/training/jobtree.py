"""Build SageMaker-style directory trees for the entrypoint (no SDK involved)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ftcloud.contract import ROOT_ENV, ContainerPaths
from ftcloud_train.tiny import make_rows, write_jsonl

#: Small, fast, learnable settings; tests override what they exercise.
FAST = {
    "max_steps": 30,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "logging_steps": 5,
    "save_steps": 0,
    "max_length": 96,
    "learning_rate": 3e-3,
    "warmup_ratio": 0.0,
    "lr_scheduler_type": "constant",
}


def make_job(
    root: Path,
    model_dir: Path,
    rows: int = 64,
    fmt: str = "chat",
    hosts: list[str] | None = None,
    current_host: str | None = None,
    **hyperparameters,
) -> ContainerPaths:
    paths = ContainerPaths(Path(root))
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    hp = {**FAST, "model": str(model_dir), **hyperparameters}
    # SageMaker delivers every value as a string.
    paths.hyperparameters.write_text(json.dumps({k: str(v) for k, v in hp.items()}))
    hosts = hosts or ["algo-1"]
    paths.resource_config.write_text(json.dumps({"current_host": current_host or hosts[0], "hosts": hosts}))
    paths.input_data_config.write_text(json.dumps({"train": {"ContentType": "application/jsonlines"}}))
    write_jsonl(paths.channel("train") / "data.jsonl", make_rows(rows, fmt, seed=0, filler=(0, 1)))
    return paths


def run_module(paths: ContainerPaths, *args: str, env: dict | None = None, timeout: int = 600, **popen):
    """Run ``python -m ftcloud_train train`` on the tree; returns CompletedProcess (or Popen)."""
    full_env = {**os.environ, ROOT_ENV: str(paths.root), "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, "-m", "ftcloud_train", "train", *args]
    if popen.pop("background", False):
        return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, **popen)


def metrics(paths: ContainerPaths) -> dict:
    return json.loads((paths.model_dir / "metrics.json").read_text())


def losses(paths: ContainerPaths) -> list[float]:
    history = json.loads((paths.model_dir / "loss_history.json").read_text())
    return [h["train_loss"] for h in history if "train_loss" in h]
