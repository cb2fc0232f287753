"""Checkpoints that are safe to resume from.

The Trainer writes ``checkpoint-<step>/`` file by file. A kill (spot interruption, OOM,
``kill -9``) can stop it half-way, so a checkpoint only counts once a marker file has been
written and fsync'ed after everything else. On start the entrypoint resumes from the newest
marked checkpoint and deletes unmarked ones; rotation keeps the newest N marked ones.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ftcloud.contract import CHECKPOINT_COMPLETE_MARKER

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _step(path: Path) -> int:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else -1


def list_checkpoints(directory: Path) -> list[Path]:
    """All ``checkpoint-N`` directories, oldest first."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if p.is_dir() and _step(p) >= 0), key=_step)


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / CHECKPOINT_COMPLETE_MARKER).is_file()


def mark_complete(checkpoint: Path) -> None:
    """Flush every file of the checkpoint, then write the marker atomically."""
    for path in checkpoint.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    tmp = checkpoint / f".{CHECKPOINT_COMPLETE_MARKER}.tmp"
    with open(tmp, "w") as fh:
        fh.write(f"step={_step(checkpoint)}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, checkpoint / CHECKPOINT_COMPLETE_MARKER)
    _fsync_dir(checkpoint)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def latest_complete(directory: Path) -> Path | None:
    complete = [p for p in list_checkpoints(directory) if is_complete(p)]
    return complete[-1] if complete else None


def discard_incomplete(directory: Path) -> list[Path]:
    """Delete checkpoints that were never marked complete (a save that was interrupted)."""
    removed = []
    for path in list_checkpoints(directory):
        if not is_complete(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def rotate(directory: Path, keep: int) -> list[Path]:
    """Keep the newest ``keep`` complete checkpoints; never touch an unmarked (in-flight) one."""
    complete = [p for p in list_checkpoints(directory) if is_complete(p)]
    doomed = complete[:-keep] if keep > 0 else []
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed
