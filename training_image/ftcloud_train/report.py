"""Results a person or a pipeline reads: metrics.json, the loss-curve PNG, metric lines."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ftcloud.contract import format_metric_line, format_progress_line


def log(message: str) -> None:
    """A human-readable progress line (rank 0 only under torchrun)."""
    if int(os.environ.get("RANK", "0")) == 0:
        _print(f"[ftcloud] {message}")


def emit_metrics(step: int, metrics: dict[str, float]) -> None:
    _print(format_metric_line(step, metrics))


def emit_progress(phase: str, **values: float | int) -> None:
    """A progress line (``ftcloud-progress phase=training total_steps=...``) for watchers; rank 0 only."""
    if int(os.environ.get("RANK", "0")) == 0:
        _print(format_progress_line(phase, **values))


# ---------------------------------------------------------------------------- library noise
@dataclass(frozen=True)
class LibraryNotice:
    """A library warning we know will come and cannot avoid: silenced, and ``note`` logged once instead."""

    category: type[Warning]
    message: str  # regex matching the start of the library's text
    note: str | None  # what it means for this job; None: nothing a user can act on


#: peft 0.21's PeftModel reads ``model.is_gradient_checkpointing``, the alias transformers 5 deprecated:
#: peft's call, not ours (our own calls use the new names and a test holds them to it).
PEFT_READS_DEPRECATED_ALIAS = LibraryNotice(
    FutureWarning, r"`is_gradient_checkpointing` is deprecated", None
)


def library_notices(device_type: str, optimizer: str) -> list[LibraryNotice]:
    """The unavoidable library notices of a run on ``device_type`` with ``optimizer`` (pure: table-tested)."""
    notices = [PEFT_READS_DEPRECATED_ALIAS]
    if device_type != "cuda" and optimizer.startswith("paged_"):
        # bitsandbytes warns on every paged optimizer step set-up off-GPU.
        notices.append(LibraryNotice(
            UserWarning, r"Paged optimizers are not supported on CPU",
            f"optimizer {optimizer} runs non-paged on {device_type}: paging only moves optimizer state out of "
            "GPU memory during spikes, so training is otherwise the same",
        ))
    return notices


def quiet_libraries(device_type: str, optimizer: str, interactive: bool) -> None:
    """Keep the job log to what a person reads: known notices once, in words; no progress bars off a TTY."""
    import warnings

    for notice in library_notices(device_type, optimizer):
        warnings.filterwarnings("ignore", message=notice.message, category=notice.category)
        if notice.note:
            log(f"note: {notice.note}")
    if not interactive:
        # transformers' documented switch; it covers "Loading weights" / shard bars and the Hub's bars.
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


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
    """Training (and evaluation) loss against optimizer step (drawn like ``ftcloud status``/``compare`` do)."""
    from ftcloud.curves import Curve, write_png

    write_png([Curve.from_history("", history)], path)
