"""Results a person or a pipeline reads: metrics.json, the loss-curve PNG, metric lines."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ftcloud.contract import format_metric_line


def log(message: str) -> None:
    """A human-readable progress line (rank 0 only under torchrun)."""
    if int(os.environ.get("RANK", "0")) == 0:
        _print(f"[ftcloud] {message}")


def emit_metrics(step: int, metrics: dict[str, float]) -> None:
    _print(format_metric_line(step, metrics))


def _print(line: str) -> None:
    """Print, surviving a reader that went away. The local runner reads our output through a pipe;
    when it dies (its death also sends us SIGTERM), the next print would raise BrokenPipeError and
    end training before the stop checkpoint is written. Then the output goes to /dev/null instead."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def plot_loss(history: list[dict], path: Path) -> None:
    """Training (and evaluation) loss against optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["train_loss"]) for h in history if "train_loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("ftcloud fine-tuning")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
