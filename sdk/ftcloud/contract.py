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

#: Row formats of training data -> the keys that identify a row of that format (any one key set).
#: The loader (``ftcloud_train.datasource``) reads them; the spec's ``data_format`` choices list them.
ROW_FORMATS: dict[str, tuple[tuple[str, ...], ...]] = {
    "chat": (("messages",), ("conversations",)),
    "alpaca": (("instruction", "output"),),
    "prompt_completion": (("prompt", "completion"),),
    "text": (("text",),),
    "classification": (("text", "label"),),
}

#: Environment variable that relocates SageMaker's ``/opt/ml`` (local runs, tests).
ROOT_ENV = "FTCLOUD_ML_ROOT"
DEFAULT_ROOT = "/opt/ml"

#: Channels the entrypoint understands. ``train`` is required.
CHANNELS = ("train", "validation", "model")

#: The entrypoint's exit status after a clean stop on SIGTERM (128 + 15): a checkpoint was written.
EXIT_STOPPED = 143

#: Written last inside a checkpoint directory: a manifest (path, size, fingerprint of every file).
#: The checkpoint counts only when its files match it (SageMaker syncs checkpoints to S3 file by file).
CHECKPOINT_COMPLETE_MARKER = "FTCLOUD_COMPLETE"

#: SageMaker Processing layout (``data prepare --backend sagemaker``), relative to the ML root:
#: inputs are mounted under processing/input/<name>, processing/output is uploaded at the end, and
#: config/resourceconfig.json names this instance (current_host) among all of them.
PROCESSING_INPUT_DIR = "processing/input"
PROCESSING_OUTPUT_DIR = "processing/output"
PROCESSING_RESOURCE_CONFIG = "config/resourceconfig.json"
#: What a Processing container writes here (UTF-8, first 1 KB) becomes DescribeProcessingJob's ExitMessage.
PROCESSING_EXIT_MESSAGE = "output/message"

# ---------------------------------------------------------------------------
# Serving (``python -m ftcloud_train serve``): what the SDK's deploy/invoke and the server share.
# ---------------------------------------------------------------------------
#: Port variable SageMaker sets for multi-container endpoints; the server listens on it, else 8080.
SERVE_PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
DEFAULT_SERVE_PORT = 8080
#: Bind address (default 0.0.0.0; the local backend sets 127.0.0.1).
SERVE_HOST_ENV = "FTCLOUD_SERVE_HOST"
#: The one request header SageMaker passes through that carries a per-request choice: ``adapter=NAME``.
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
ADAPTER_ATTRIBUTE = "adapter"
#: InvokeEndpoint's real-time body limit (bytes).
MAX_REQUEST_BYTES = 6_291_456


@dataclass(frozen=True)
class ContainerPaths:
    """SageMaker's bring-your-own-container layout under one root."""

    root: Path
    #: A tuning trial's own folder under ``checkpoints/`` (see :func:`trial_checkpoint_subdir`).
    checkpoint_subdir: str = ""

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
        base = self.root / "checkpoints"
        return base / self.checkpoint_subdir if self.checkpoint_subdir else base

    @property
    def tensorboard_dir(self) -> Path:
        return self.output_dir / "tensorboard"

    def ensure(self) -> None:
        for d in (self.model_dir, self.output_dir, self.checkpoint_dir):
            d.mkdir(parents=True, exist_ok=True)


#: The key SageMaker Automatic Model Tuning adds to every trial's hyperparameters.json.
TUNING_OBJECTIVE_KEY = "_tuning_objective_metric"


def trial_checkpoint_subdir(hyperparameters: dict, environ: dict) -> str:
    """The checkpoint folder of a tuning trial, or "" for a plain job.

    Every trial of a SageMaker tuning gets the same ``CheckpointConfig.S3Uri``, and SageMaker syncs
    that prefix into each trial's ``/opt/ml/checkpoints``: without a folder of its own, a trial would
    resume from another trial's checkpoint (trained with other hyperparameters). The training job
    name is the folder: spot restarts and retries of the same trial keep it, so they still resume.
    """
    if TUNING_OBJECTIVE_KEY not in hyperparameters:
        return ""
    name = environ.get("TRAINING_JOB_NAME", "")
    return name if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", name) else ""


# ---------------------------------------------------------------------------
# Serving, the container's side (model layout and knobs); port, header and body limit are above.
# ---------------------------------------------------------------------------
DEFAULT_SERVE_HOST = "0.0.0.0"
SERVE_PING_PATH = "/ping"
SERVE_INVOCATIONS_PATH = "/invocations"
#: The adapter at the root of model/ is named "default"; extra ones live in model/adapters/<name>/.
DEFAULT_ADAPTER = "default"
ADAPTERS_DIR = "adapters"
#: Request for the base model without any adapter (PEFT's name for it in ``adapter_names``).
BASE_ADAPTER = "__base__"
#: Where an adapter-only artifact's base model is looked for: model/base/, then SageMaker's
#: additional model data source named "base" (mounted under <ml root>/additional-model-data-sources/).
BASE_MODEL_DIR = "base"
ADDITIONAL_MODEL_DATA_DIR = "additional-model-data-sources"

#: Serving knobs (environment variable -> default). The container reads them; the SDK sets them.
SERVE_ENV_DEFAULTS = {
    "FTCLOUD_MAX_BATCH_SIZE": "8",  # requests generated together
    "FTCLOUD_MAX_WAIT_MS": "10",  # how long the first request of a batch waits for company
    "FTCLOUD_MAX_QUEUE": "64",  # requests in flight (waiting + generating) before 429
    "FTCLOUD_REQUEST_TIMEOUT_S": "55",  # per request, inside SageMaker's 60 s
    "FTCLOUD_CACHE_SIZE": "1024",  # result cache entries; 0 disables it
    "FTCLOUD_CACHE_TTL_S": "600",
    "FTCLOUD_BASE_MODEL": "",  # base of an adapter-only artifact: path or model id
    "FTCLOUD_LOAD_IN": "auto",  # auto (as trained) | none | 8bit | 4bit (bitsandbytes)
}


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
    # task=classification (ftcloud_train.classification); per-class eval_recall_<id> lines are printed too
    "eval_accuracy",
    "eval_macro_f1",
    "eval_min_recall",
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


# ---------------------------------------------------------------------------
# Progress lines: ``ftcloud-progress phase=training step=0 total_steps=120 num_epochs=3``
# The container prints one when a phase starts (training: with the exact number of optimizer
# steps the Trainer will run), so a watcher shows step N of total and an exact ETA.
# ---------------------------------------------------------------------------
PROGRESS_PREFIX = "ftcloud-progress"

#: Phases the container announces, in order (SageMaker's secondary status covers the rest).
CONTAINER_PHASES = ("training", "evaluating", "saving")


def format_progress_line(phase: str, **values: float | int | str) -> str:
    """``format_progress_line("training", step=0, total_steps=120)`` -> one ``ftcloud-progress`` line."""
    if phase not in CONTAINER_PHASES:
        raise ValueError(f"phase {phase!r} must be one of {', '.join(CONTAINER_PHASES)}")
    parts = [PROGRESS_PREFIX, f"phase={phase}"]
    for key, value in values.items():
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", key) or any(c.isspace() for c in str(value)):
            raise ValueError(f"progress item {key}={value!r}: names are [a-z_][a-z0-9_]*, values have no spaces")
        parts.append(f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


_PROGRESS = re.compile(rf"^{PROGRESS_PREFIX} (.*)$")


def parse_progress_line(line: str) -> dict[str, float | str] | None:
    """Inverse of :func:`format_progress_line` (numbers as floats); ``None`` for any other line."""
    match = _PROGRESS.match(line.strip())
    if not match:
        return None
    out: dict[str, float | str] = {}
    for item in match.group(1).split():
        key, sep, value = item.partition("=")
        if not sep:
            continue
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = value
    return out if "phase" in out else None
