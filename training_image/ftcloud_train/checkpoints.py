"""Checkpoints that are safe to resume from, on a local disk and after SageMaker's S3 sync.

The Trainer writes ``checkpoint-<step>/`` file by file, and a kill (spot interruption, OOM,
``kill -9``) can stop it half-way. Worse, SageMaker copies ``/opt/ml/checkpoints`` to S3 file by
file in no order and restores it from S3 at the next start, so a marker that was fsync'ed last on
the local disk can reach S3 (and the next attempt's disk) before the weights, or next to the
weights of an earlier save of the same step. So the marker carries a manifest: every file's
relative path, size and fingerprint; a checkpoint counts only when the files on disk match it.

Before training (see ``recipe.run`` step 6), the first process of each host sorts its copy out:

- no marker: a save that never finished; deleted (it was never resumable);
- a marker whose manifest is absent (written before manifests existed: ``step=N`` only), unreadable
  or does not match the files, or files that do not open with the Trainer's own readers: set aside
  as ``checkpoint-N.bad-<reason>`` (kept for inspection, ignored by listing and rotation), never
  deleted, so no decision here can lose the last good checkpoint;
- the rest are complete; every host then agrees on the newest step complete on all of them.

A checkpoint that passes all that and still fails while the Trainer loads it (optimizer state that
does not fit the model) is set aside too, and the run starts over from the previous one.

Fingerprint choice (measured on this machine, 500 MB file in page cache): full crc32 0.34 s, full
blake2b 0.96 s, plain read 0.08 s, the sampled blake2b below 0.003 s. A full fine-tune of an 8B
model checkpoints ~100 GB (weights + Adam state): a full hash would add minutes to every save (and
to every resume, read cold from EBS), more than SageMaker's 120 s stop window. The sampled
fingerprint (size, the first and last MiB, 16 evenly spaced 64 KiB blocks; small files whole) is
what the failure needs: S3 objects arrive whole or not at all, so the sync tears checkpoints by
missing files or files from another save of the same step; the latter differ in their tails (a
``torch.save`` zip ends with a CRC of every record) and in sampled tensor bytes. Damage the
samples miss and that breaks loading is caught by the load checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import traceback
from pathlib import Path
from typing import NamedTuple

from ftcloud.contract import CHECKPOINT_COMPLETE_MARKER

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
MANIFEST_FORMAT = 1
_EDGE = 1 << 20  # first and last MiB
_SAMPLES, _SAMPLE = 16, 64 << 10  # evenly spaced blocks in between

#: Trainer methods (transformers 5.x) that read a checkpoint; an exception raised inside one of
#: them is a load failure, anything else (the first forward, a collective, data) is not.
LOAD_FUNCTIONS = frozenset({
    "_load_from_checkpoint",
    "_load_optimizer_and_scheduler",
    "_load_scaler",
    "_load_rng_state",
    "_load_callback_state",
    "load_from_json",  # TrainerState.load_from_json(trainer_state.json)
})


#: Written with each checkpoint, never read on resume (a full pickle: weights_only cannot open it).
_NOT_LOADED = frozenset({"training_args.bin"})


class Problem(NamedTuple):
    """Why a checkpoint cannot be resumed from: ``reason`` names the set-aside directory."""

    reason: str  # marker | manifest | missing | size | checksum | unreadable | load
    detail: str


def _step(path: Path) -> int:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else -1


def list_checkpoints(directory: Path) -> list[Path]:
    """All ``checkpoint-N`` directories, oldest first (set-aside ``checkpoint-N.bad-*`` excluded)."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if p.is_dir() and _step(p) >= 0), key=_step)


# ---------------------------------------------------------------------------- manifest
def fingerprint(path: Path) -> str:
    """Size plus blake2b of the first and last MiB and 16 sampled blocks (whole file when small)."""
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as fh:
        if size <= 2 * _EDGE + _SAMPLES * _SAMPLE:
            digest.update(fh.read())
        else:
            digest.update(fh.read(_EDGE))
            stride = (size - 2 * _EDGE - _SAMPLE) // _SAMPLES
            for i in range(_SAMPLES):
                fh.seek(_EDGE + i * stride)
                digest.update(fh.read(_SAMPLE))
            fh.seek(size - _EDGE)
            digest.update(fh.read(_EDGE))
    return digest.hexdigest()


def _files(checkpoint: Path) -> list[Path]:
    skip = {CHECKPOINT_COMPLETE_MARKER, f".{CHECKPOINT_COMPLETE_MARKER}.tmp"}
    return sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name not in skip)


def build_manifest(checkpoint: Path) -> dict:
    files = {
        path.relative_to(checkpoint).as_posix(): {"size": path.stat().st_size, "blake2b": fingerprint(path)}
        for path in _files(checkpoint)
    }
    return {"format": MANIFEST_FORMAT, "step": _step(checkpoint), "files": files}


def mark_complete(checkpoint: Path) -> None:
    """Flush every file of the checkpoint, then write the marker (with its manifest) atomically."""
    for path in _files(checkpoint):
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    manifest = build_manifest(checkpoint)
    tmp = checkpoint / f".{CHECKPOINT_COMPLETE_MARKER}.tmp"
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
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


def problem(checkpoint: Path) -> Problem | None:
    """Why the files on disk do not match the marker's manifest; ``None`` when they do.

    Files that are not in the manifest are ignored: a stale extra file restored from S3 does not
    make a complete checkpoint incomplete, and the Trainer reads only files it wrote.
    """
    marker = checkpoint / CHECKPOINT_COMPLETE_MARKER
    if not marker.is_file():
        return Problem("marker", f"no {marker.name}: the save never finished")
    text = marker.read_text(errors="replace")
    try:
        manifest = json.loads(text)
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict) or not files:
            raise ValueError(manifest.get("format"))
        for entry in files.values():
            if not isinstance(entry["size"], int) or not isinstance(entry["blake2b"], str):
                raise ValueError(entry)
    except (ValueError, KeyError, TypeError, AttributeError):
        return Problem("manifest", f"{marker.name} has no manifest this version can check "
                                   f"(written by an older ftcloud, or damaged): {text[:60]!r}")
    for name, expected in sorted(files.items()):
        path = checkpoint / name
        if not path.is_file():
            return Problem("missing", f"{name} is listed in {marker.name} but absent")
        size = path.stat().st_size
        if size != expected["size"]:
            return Problem("size", f"{name} has {size:,} bytes, {marker.name} says {expected['size']:,}")
        if fingerprint(path) != expected["blake2b"]:
            return Problem("checksum", f"{name} differs from the file {marker.name} describes")
    return None


def is_complete(checkpoint: Path) -> bool:
    """A marker whose manifest matches the files on disk."""
    try:
        return problem(checkpoint) is None
    except OSError:
        return False


def latest_complete(directory: Path) -> Path | None:
    complete = [p for p in list_checkpoints(directory) if is_complete(p)]
    return complete[-1] if complete else None


def unloadable(checkpoint: Path) -> Problem | None:
    """Open every file with the reader the Trainer uses, cheaply (headers, memory-mapped tensors).

    Catches what makes loading raise (a damaged safetensors header, a torn ``torch.save`` zip, bad
    JSON) before any process starts training, so every rank falls back together.
    """
    import torch
    from safetensors import safe_open
    from transformers.trainer_pt_utils import safe_globals

    for path in _files(checkpoint):
        name = path.relative_to(checkpoint).as_posix()
        if path.name in _NOT_LOADED:
            continue
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as fh:
                    for key in fh.keys():
                        fh.get_slice(key)
            elif path.suffix in (".pt", ".pth", ".bin"):
                with safe_globals():  # the Trainer's own allow-list (numpy RNG state)
                    torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            elif path.suffix == ".json":
                json.loads(path.read_text())
        except Exception as exc:  # noqa: BLE001 - any failure to open means the Trainer would fail too
            return Problem("unreadable", f"{name} does not open: {type(exc).__name__}: {str(exc)[:200]}")
    return None


# ---------------------------------------------------------------------------- sorting out, resuming
def set_aside(checkpoint: Path, reason: str) -> Path:
    """Rename ``checkpoint-N`` to ``checkpoint-N.bad-<reason>``: out of listing, rotation and resume.

    Call it from one process per host. An older set-aside copy of the same step (restored again from
    S3) is replaced: it is not a good checkpoint either.
    """
    target = checkpoint.with_name(f"{checkpoint.name}.bad-{reason}")
    if target.exists():
        shutil.rmtree(target)
    os.replace(checkpoint, target)
    _fsync_dir(checkpoint.parent)
    return target


def sort_out(directory: Path, probe: bool = True) -> list[str]:
    """Delete unmarked checkpoints, set aside those that do not match or open; returns log lines.

    Run on the first process of each host before training (the others wait at a barrier).
    """
    notes = []
    for path in list_checkpoints(directory):
        if not (path / CHECKPOINT_COMPLETE_MARKER).is_file():  # never resumable, here or in S3
            shutil.rmtree(path, ignore_errors=True)
            notes.append(f"discarded incomplete checkpoint {path.name} (a save was interrupted)")
            continue
        found = problem(path)
        if found is None and probe:
            found = unloadable(path)
        if found is not None:
            target = set_aside(path, found.reason)
            notes.append(f"set aside checkpoint {path.name} as {target.name}: {found.detail}")
    return notes


def agreed_latest(directory: Path) -> Path | None:
    """The newest checkpoint complete on every host (each host checks its own copy).

    Hosts can disagree after an interruption (one host's copy reached S3 whole, another's did not);
    resuming from different steps would desynchronise the ranks, so all take the newest common one.
    """
    import torch.distributed as dist

    steps = {_step(p) for p in list_checkpoints(directory) if is_complete(p)}
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, sorted(steps))
        steps = set.intersection(*(set(s) for s in gathered))
    return directory / f"checkpoint-{max(steps)}" if steps else None


def failed_while_loading(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while the Trainer was reading a checkpoint (see LOAD_FUNCTIONS).

    Decided from the traceback, not from "before the first step": a failure to build the DDP
    wrapper, fetch the first batch or run the first forward must never condemn a checkpoint.
    Running out of memory while loading is the machine's limit, not the checkpoint's fault.
    """
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return False
    return any(frame.name in LOAD_FUNCTIONS for frame in traceback.extract_tb(exc.__traceback__))


def set_aside_if_unloadable(checkpoint: Path | None, exc: BaseException) -> Path | None:
    """Set ``checkpoint`` aside when ``exc`` came from loading it; the new path, else ``None``."""
    if checkpoint is None or not checkpoint.is_dir() or not failed_while_loading(exc):
        return None
    return set_aside(checkpoint, "load")


def rotate(directory: Path, keep: int) -> list[Path]:
    """Keep the newest ``keep`` complete checkpoints.

    Only checkpoints that match their manifest count and only those are deleted: one being written
    (no marker yet) or a torn one restored from S3 is neither counted as a kept one nor touched,
    so rotation can never delete the only good checkpoint.
    """
    complete = [p for p in list_checkpoints(directory) if is_complete(p)]
    doomed = complete[:-keep] if keep > 0 else []
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed
