"""The contract between the SDK and the training/serving container.

One place for the facts both sides rely on: the SageMaker directory layout, the
environment variable that relocates it for local runs, and the metric line format
(with the regexes the SDK hands to SageMaker as MetricDefinitions).

This module must stay import-light: the CLI imports it at start-up.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: Environment variable that relocates SageMaker's ``/opt/ml`` (local runs, tests).
ROOT_ENV = "FTCLOUD_ML_ROOT"
DEFAULT_ROOT = "/opt/ml"

#: Channels the entrypoint understands. ``train`` is required.
CHANNELS = ("train", "validation", "model")

#: The entrypoint's exit status after a clean stop on SIGTERM (128 + 15): a checkpoint was written.
EXIT_STOPPED = 143

#: Written inside a checkpoint directory once every file of it is on disk.
CHECKPOINT_COMPLETE_MARKER = "FTCLOUD_COMPLETE"


@dataclass(frozen=True)
class ContainerPaths:
    """SageMaker's bring-your-own-container layout under one root."""

    root: Path

    @classmethod
    def from_env(cls, root: str | os.PathLike | None = None) -> ContainerPaths:
        return cls(Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT))

    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    @property
    def hyperparameters(self) -> Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def resource_config(self) -> Path:
        return self.config_dir / "resourceconfig.json"

    @property
    def input_data_config(self) -> Path:
        return self.config_dir / "inputdataconfig.json"

    def channel(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoint_dir(self) -> Path:
        # SageMaker syncs /opt/ml/checkpoints with CheckpointConfig.S3Uri (spot resume).
        return self.root / "checkpoints"

    @property
    def tensorboard_dir(self) -> Path:
        return self.output_dir / "tensorboard"

    def ensure(self) -> None:
        for d in (self.model_dir, self.output_dir, self.checkpoint_dir):
            d.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------------
# Metric lines: ``ftcloud-metric step=10 epoch=0.50 train_loss=1.2345 ...``
# ---------------------------------------------------------------------------
METRIC_PREFIX = "ftcloud-metric"

#: Metric name -> how it appears in a metric line. Keep names regex-safe ([a-z_]).
METRIC_NAMES = (
    "train_loss",
    "eval_loss",
    "eval_perplexity",
    "learning_rate",
    "grad_norm",
    "tokens_per_second",
    "epoch",
)

_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|nan|inf)"


def metric_regex(name: str) -> str:
    """The regex (one capture group) that extracts ``name`` from a metric line."""
    return rf"{METRIC_PREFIX} .*\b{name}={_NUMBER}"


def metric_definitions() -> list[dict[str, str]]:
    """SageMaker ``AlgorithmSpecification.MetricDefinitions`` for every metric we print."""
    return [{"Name": name, "Regex": metric_regex(name)} for name in METRIC_NAMES]


def format_metric_line(step: int, metrics: dict[str, float]) -> str:
    """One stable, regex-friendly line. Unknown keys are kept (sorted) after known ones."""
    parts = [METRIC_PREFIX, f"step={int(step)}"]
    for key in sorted(metrics, key=lambda k: (k not in METRIC_NAMES, k)):
        value = metrics[key]
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", key):
            raise ValueError(f"metric name {key!r} must match [a-z_][a-z0-9_]*")
        parts.append(f"{key}={float(value):.6g}")
    return " ".join(parts)


_LINE = re.compile(rf"^{METRIC_PREFIX} (.*)$")


def parse_metric_line(line: str) -> dict[str, float] | None:
    """Inverse of :func:`format_metric_line`; ``None`` if ``line`` is not a metric line."""
    match = _LINE.match(line.strip())
    if not match:
        return None
    out: dict[str, float] = {}
    for item in match.group(1).split():
        key, _, value = item.partition("=")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out
