"""The local registry: JSON records in ``$FTCLOUD_HOME/registry``, the same records SageMaker keeps.

Layout::

    registry/<group>/group.json     {"group", "created"}: written when the group's first version is
    registry/<group>/<version>.json one ModelVersion.to_dict() (+ "schema", "tags") per version, 1..N
    registry/<group>/.lock          flock()ed while a version is added or its status changes

A version's artifact is the job's model directory (``jobs/<name>/ml/model``), its metrics come from
``metrics.json`` there, its lineage from ``job.json``, the hyperparameters the trainer received and
``ftcloud_spec.json``. Records are never overwritten by a registration: a new record is linked into
place only if its number is still free, and status changes replace a record atomically (tmp +
``os.replace``) under the group lock, keeping every earlier change in its ``history``.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftcloud.config import ftcloud_home
from ftcloud.errors import UsageError
from ftcloud.registry.base import (
    DEFAULT_LOCAL_GROUP,
    PENDING,
    ApprovalEvent,
    ModelVersion,
    ModelVersionNotFoundError,
    Registry,
    VersionRef,
    check_group_name,
    code_version,
    data_content_hash,
    numeric_metrics,
    serving_environment,
    spec_hash,
)

#: Bumped when a record's layout changes incompatibly.
RECORD_SCHEMA = 1


def registry_root() -> Path:
    return ftcloud_home() / "registry"


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (containers): leave it out
        return None


class LocalRegistry(Registry):
    name = "local"

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else registry_root()

    @property
    def default_group(self) -> str:
        return DEFAULT_LOCAL_GROUP

    def describe_target(self) -> str:
        return f"registry {self.root}"

    def group_dir(self, group: str) -> Path:
        return self.root / check_group_name(group)

    # ------------------------------------------------------------------ register
    def register(
        self,
        job: Any,
        group: str | None = None,
        *,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        image: str | None = None,
    ) -> ModelVersion:
        group = check_group_name(group or self.default_group)
        record = self._record_from_job(job, group, description, image)
        gdir = self.group_dir(group)
        gdir.mkdir(parents=True, exist_ok=True)
        with self._locked(gdir):
            if not (gdir / "group.json").exists():
                _write_atomic(gdir / "group.json", {"group": group, "created": time.time()})
            version = max(self._numbers(gdir), default=0) + 1
            while True:
                record.version = version
                record.created = time.time()
                data = {**record.to_dict(), "schema": RECORD_SCHEMA, "tags": dict(tags or {})}
                if _create_exclusive(gdir / f"{version}.json", data):
                    return record
                version += 1  # taken by a writer that did not hold the lock (an older ftcloud)

    def _record_from_job(self, job: Any, group: str, description: str | None, image: str | None) -> ModelVersion:
        if job.status != "Completed":
            raise UsageError(
                f"Job '{job.name}' is {job.status}; only a Completed job can be registered "
                "(its model directory is final only then).",
                hint=(f"Follow it with 'ftcloud logs {job.name} --follow', then register it."
                      if not job.terminal else f"Resume it with 'ftcloud resume {job.name}', or register another job."),
            )
        job_dir = Path(job.location)
        model_dir = Path(job.artifacts) if job.artifacts else job_dir / "ml" / "model"
        weights = ("adapter_config.json", "config.json")
        if not any((model_dir / name).is_file() for name in weights):
            raise UsageError(
                f"Job '{job.name}' is Completed but {model_dir} holds no model (neither adapter_config.json "
                "nor config.json): the artifact was moved or deleted.",
                hint="Register a job whose model directory is intact, or train again.",
            )
        metrics_file = model_dir / "metrics.json"
        metrics = numeric_metrics(_read_json(metrics_file, required=True))
        spec = _read_json(job_dir / "job.json", required=True).get("spec") or {}
        training, data = spec.get("training") or {}, spec.get("data") or {}
        resolved = _read_json(model_dir / "ftcloud_spec.json", required=False)
        hyperparameters = _read_json(job_dir / "ml" / "input" / "config" / "hyperparameters.json", required=False)
        technique = resolved.get("technique") or training.get("technique") or job.technique
        base_model = data.get("model") or training.get("model") or job.model
        lineage = {
            "training_job": job.name,
            "base_model": base_model,
            "data": data.get("train"),
            "technique": technique,
            "code_version": code_version(),
        }
        train_channel = job_dir / "ml" / "input" / "data" / "train"
        if train_channel.exists():  # what the trainer actually read (links to the launch-time files)
            lineage["data_content_hash"] = data_content_hash(train_channel)
        if hyperparameters:
            lineage["spec_hash"] = spec_hash(hyperparameters)
        return ModelVersion(
            group=group,
            version=0,
            status=PENDING,
            artifact=str(model_dir),
            backend=self.name,
            image=image,
            environment=serving_environment(technique, base_model, base_attached=False),
            metrics=metrics,
            lineage={k: str(v) for k, v in lineage.items() if v},
            description=description or f"Fine-tuned by local job {job.name}",
            history=[ApprovalEvent(PENDING, "registered", time.time(), _user())],
        )

    # ------------------------------------------------------------------ read
    def versions(self, group: str | None = None) -> list[ModelVersion]:
        gdir = self.group_dir(group or self.default_group)
        if not gdir.is_dir():
            known = sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
            raise ModelVersionNotFoundError(
                f"No local model group '{gdir.name}' in {self.root}"
                + (f" (groups: {', '.join(known)})." if known else "."),
                hint=f"Register a job into it: ftcloud register JOB --group {gdir.name}",
            )
        return [self._load(gdir / f"{n}.json") for n in sorted(self._numbers(gdir))]

    def groups(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "group.json").is_file())

    def _load(self, path: Path) -> ModelVersion:
        data = _read_json(path, required=True)
        try:
            return ModelVersion.from_dict(data)
        except TypeError as exc:
            raise UsageError(
                f"{path}: not a model version record ({exc}).",
                hint="Restore it from a backup; the registry never rewrites a record it cannot read.",
            ) from None

    @staticmethod
    def _numbers(gdir: Path) -> list[int]:
        # Numbers come from file names, so even an unreadable record keeps its number reserved.
        return [int(p.stem) for p in gdir.glob("*.json") if p.stem.isdigit()]

    # ------------------------------------------------------------------ approve / reject
    def _set_status(self, ref: VersionRef, status: str, reason: str | None) -> ModelVersion:
        gdir = self.group_dir(ref.group)
        with self._locked(gdir):
            # By file name: one unreadable record must not block changes to the others.
            numbers = sorted(self._numbers(gdir))
            number = ref.version if ref.version is not None else (numbers[-1] if numbers else None)
            if number not in numbers:
                has = f"it has {', '.join(map(str, numbers))}" if numbers else "it has none"
                raise ModelVersionNotFoundError(
                    f"Model group '{ref.group}' has no version {ref.version} ({has})." if ref.version is not None
                    else f"Model group '{ref.group}' has no versions.",
                    hint=f"List them with 'ftcloud versions {ref.group}'.",
                )
            path = gdir / f"{number}.json"
            self._load(path)  # refuse to rewrite a record that is not a readable version
            data = _read_json(path, required=True)
            now = time.time()
            data["status"] = status
            data["approval_reason"] = reason
            data["history"] = [*(data.get("history") or []), ApprovalEvent(status, reason, now, _user()).to_dict()]
            _write_atomic(path, data)
        return ModelVersion.from_dict(data)

    @contextlib.contextmanager
    def _locked(self, gdir: Path) -> Iterator[None]:
        if not gdir.is_dir():
            raise ModelVersionNotFoundError(
                f"No local model group '{gdir.name}' in {self.root}.",
                hint=f"Register a job into it: ftcloud register JOB --group {gdir.name}",
            )
        fd = os.open(gdir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # short critical sections: waiting is right
            yield
        finally:
            os.close(fd)


def _read_json(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise UsageError(f"{path} is missing.", hint="Register a job whose directory is intact.") from None
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read it as JSON ({exc}).",
                         hint="Restore the file; ftcloud does not rewrite files it cannot read.") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object.", hint="Restore the file.")
    return data


def _tmp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = _tmp_for(path)
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _create_exclusive(path: Path, data: dict[str, Any]) -> bool:
    """Put a complete record at ``path`` only if nothing is there; False if the name is taken."""
    tmp = _tmp_for(path)
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # atomic, and fails instead of replacing an existing record
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True
