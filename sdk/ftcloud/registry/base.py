"""The registry interface, the record it returns, version references and lineage.

A *model version* is one registered training result: the artifact, the image that serves it
(the same image that trained it), its evaluation metrics, its lineage and its approval status.
Both registries (local JSON records, SageMaker model packages) produce the same
:class:`ModelVersion`, so ``ftcloud versions`` reads the same everywhere.

References (:func:`parse_ref`): a model package ARN, ``GROUP:VERSION``, or ``GROUP`` (its
latest version). Group names follow SageMaker's rule (letters, digits, hyphens; no colon), so
``GROUP:VERSION`` is never ambiguous. Import-light.
"""

from __future__ import annotations

import abc
import hashlib
import json
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftcloud.errors import FtcloudError, UsageError

PENDING = "PendingManualApproval"
APPROVED = "Approved"
REJECTED = "Rejected"
#: SageMaker's ModelApprovalStatus values; the local registry uses the same.
APPROVAL_STATUSES = (PENDING, APPROVED, REJECTED)

#: The group ``register`` uses locally when none is given. On SageMaker the default is the platform
#: stack's ``ModelPackageGroupName`` output (``<resourcePrefix>-models``, ``ftcloud-models`` by default).
DEFAULT_LOCAL_GROUP = "ftcloud-models"

#: SageMaker's ModelPackageGroupName rule, applied locally too so records can move between both.
GROUP_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
#: SageMaker's ApprovalDescription limit.
MAX_REASON_CHARS = 1024

#: Lineage keys, in display order. Values are strings; a key is absent when it is unknown.
LINEAGE_KEYS = (
    "training_job",  # the job that produced the artifact
    "base_model",  # Hugging Face id, local path or s3:// prefix of the base weights
    "data",  # where the training data came from (local path or s3:// URI)
    "data_content_hash",  # content hash of the training data (same value locally and in S3 keys)
    "spec_hash",  # sha256 of the training hyperparameters (see spec_hash())
    "technique",  # lora | qlora | dora | full
    "code_version",  # ftcloud version (+git sha of its checkout when there is one)
)

_ARN_RE = re.compile(r"^arn:aws[a-z-]*:sagemaker:[^:]*:\d{12}:model-package/(?P<group>[^/]+)/(?P<version>\d+)$")


class ModelVersionNotFoundError(FtcloudError):
    """No such group or version in the registry."""


@dataclass
class ApprovalEvent:
    """One status change: what it became, why, when (epoch seconds) and by whom (when known)."""

    status: str
    reason: str | None = None
    at: float | None = None
    by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelVersion:
    """One registered model version (local record or SageMaker model package)."""

    group: str
    version: int
    status: str  # PendingManualApproval | Approved | Rejected
    artifact: str  # s3://.../model.tar.gz or the local job's model directory
    backend: str  # local | sagemaker
    arn: str | None = None  # the model package ARN (SageMaker only)
    image: str | None = None  # the serving image (the one that trained it)
    environment: dict[str, str] = field(default_factory=dict)  # serving container environment
    metrics: dict[str, float] = field(default_factory=dict)  # eval_loss, eval_perplexity, train_loss, ...
    metrics_uri: str | None = None  # the ModelMetrics JSON in S3 (SageMaker only)
    lineage: dict[str, str] = field(default_factory=dict)  # see LINEAGE_KEYS
    created: float | None = None  # epoch seconds
    description: str | None = None
    approval_reason: str | None = None  # the reason given with the latest approve/reject
    history: list[ApprovalEvent] = field(default_factory=list)  # oldest first

    @property
    def ref(self) -> str:
        """``GROUP:VERSION``: what every verb accepts."""
        return f"{self.group}:{self.version}"

    @property
    def id(self) -> str:
        """The ARN on SageMaker, ``GROUP:VERSION`` locally."""
        return self.arn or self.ref

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ref"] = self.ref
        out["id"] = self.id
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelVersion:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["history"] = [ApprovalEvent(**h) for h in known.get("history") or []]
        return cls(**known)


@dataclass(frozen=True)
class VersionRef:
    """A parsed reference: ``version`` None means the group's latest."""

    group: str
    version: int | None = None
    arn: str | None = None


def check_group_name(group: str) -> str:
    if not isinstance(group, str) or not GROUP_NAME_RE.match(group):
        raise UsageError(
            f"'{group}' is not a model group name: use 1-63 letters, digits and hyphens, starting with a "
            "letter or digit (SageMaker's ModelPackageGroupName rule).",
            hint=f"For example --group {DEFAULT_LOCAL_GROUP}.",
        )
    return group


def parse_ref(ref: str) -> VersionRef:
    """``arn:...:model-package/GROUP/N``, ``GROUP:N`` or ``GROUP`` -> :class:`VersionRef`."""
    text = (ref or "").strip()
    match = _ARN_RE.match(text)
    if match:
        return VersionRef(match["group"], int(match["version"]), arn=text)
    if text.startswith("arn:"):
        raise UsageError(
            f"'{ref}' is not a versioned model package ARN (arn:aws:sagemaker:REGION:ACCOUNT:model-package/GROUP/N).",
            hint="List versions with 'ftcloud versions GROUP'.",
        )
    group, sep, version = text.partition(":")
    check_group_name(group)
    if not sep:
        return VersionRef(group)
    if not version.isdigit() or int(version) < 1:
        raise UsageError(
            f"'{ref}': the version after ':' must be a number >= 1 (GROUP:VERSION, e.g. {group}:3).",
            hint=f"List versions with 'ftcloud versions {group}'.",
        )
    return VersionRef(group, int(version))


def check_reason(reason: str | None, *, required: bool) -> str | None:
    reason = (reason or "").strip() or None
    if required and not reason:
        raise UsageError("a rejection needs a reason: pass --reason TEXT (it is kept with the version).")
    if reason and len(reason) > MAX_REASON_CHARS:
        raise UsageError(
            f"the reason is {len(reason)} characters; the registry keeps at most {MAX_REASON_CHARS} "
            "(SageMaker's ApprovalDescription limit). Shorten it."
        )
    return reason


def pick(versions: list[ModelVersion], ref: VersionRef, *, status: str | None = None) -> ModelVersion:
    """The version ``ref`` names among ``versions`` of its group (latest when it names none)."""
    candidates = [v for v in versions if status is None or v.status == status]
    if ref.version is not None:
        for v in versions:
            if v.version == ref.version:
                if status is not None and v.status != status:
                    raise UsageError(
                        f"{v.ref} is {v.status}, not {status}.",
                        hint=f"Approve it first: ftcloud approve {v.ref} --reason TEXT" if status == APPROVED else None,
                    )
                return v
        raise ModelVersionNotFoundError(
            f"Model group '{ref.group}' has no version {ref.version}"
            + (f" (it has {', '.join(str(v.version) for v in versions)})." if versions else " (it has none)."),
            hint=f"List them with 'ftcloud versions {ref.group}'.",
        )
    if not candidates:
        which = f" {status}" if status else ""
        raise ModelVersionNotFoundError(
            f"Model group '{ref.group}' has no{which} versions.",
            hint=(f"Approve one: ftcloud approve {ref.group}:N --reason TEXT" if status == APPROVED and versions
                  else "Register one with 'ftcloud register JOB --group " + ref.group + "'."),
        )
    return max(candidates, key=lambda v: v.version)


class Registry(abc.ABC):
    """Register finished jobs as model versions; approve, reject, list and look them up."""

    #: "local" or "sagemaker"
    name: str = ""

    @property
    @abc.abstractmethod
    def default_group(self) -> str:
        """The group ``register`` uses when none is given."""

    @abc.abstractmethod
    def describe_target(self) -> str:
        """Where the records live (for the header line)."""

    @abc.abstractmethod
    def register(
        self,
        job: Any,
        group: str | None = None,
        *,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        image: str | None = None,
    ) -> ModelVersion:
        """Register a Completed job (a :class:`~ftcloud.backends.base.JobStatus`) as a new version,
        status PendingManualApproval."""

    @abc.abstractmethod
    def versions(self, group: str | None = None) -> list[ModelVersion]:
        """Every version of ``group``, oldest first."""

    @abc.abstractmethod
    def _set_status(self, ref: VersionRef, status: str, reason: str | None) -> ModelVersion:
        """Record a status change of the version ``ref`` names."""

    def get(self, ref: str, *, status: str | None = None) -> ModelVersion:
        """The version ``ref`` names; for ``GROUP`` the latest (with ``status``, the latest in it)."""
        parsed = parse_ref(ref)
        return pick(self.versions(parsed.group), parsed, status=status)

    def approve(self, ref: str, reason: str | None = None) -> ModelVersion:
        """Mark a version Approved (deployable on SageMaker)."""
        return self._set_status(parse_ref(ref), APPROVED, check_reason(reason, required=False))

    def reject(self, ref: str, reason: str) -> ModelVersion:
        """Mark a version Rejected; the reason is required and kept."""
        return self._set_status(parse_ref(ref), REJECTED, check_reason(reason, required=True))


# ---------------------------------------------------------------------- lineage and metrics
#: Hyperparameters that say where things are rather than how the model was trained: left out of
#: the spec hash so one recipe hashes the same locally and on SageMaker (the base model is its own
#: lineage entry; SageMaker adds ``_tuning_objective_metric`` and ``sagemaker_*`` keys itself).
_NOT_RECIPE = ("model", "hf_token_secret_arn")


def spec_hash(hyperparameters: dict[str, Any]) -> str:
    """sha256 of the training hyperparameters as the container received them (string values)."""
    recipe = {
        str(k): str(v)
        for k, v in hyperparameters.items()
        if k not in _NOT_RECIPE and not str(k).startswith(("sagemaker_", "_"))
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def data_content_hash(path: str | Path) -> str:
    """Content hash of a local file or directory: the digest the SageMaker backend puts in the S3
    key of an upload (``ftcloud/inputs/<digest>/``), so the same data shows the same hash on both."""
    from ftcloud.backends.sagemaker import plan_upload  # light: no boto3 at import

    return plan_upload("train", path, "local").prefix.rstrip("/").rsplit("/", 1)[-1]


def content_hash_from_uri(uri: str | None) -> str | None:
    """The digest inside a content-addressed upload URI (``s3://b/ftcloud/inputs/<digest>/``), else None."""
    from ftcloud.sagemaker_facts import INPUT_PREFIX

    match = re.search(rf"/{re.escape(INPUT_PREFIX)}/([0-9a-f]{{32}})/?$", uri or "")
    return match.group(1) if match else None


_CODE_VERSION: str | None = None


def code_version() -> str:
    """``ftcloud`` version, plus ``+g<sha>`` (and ``.dirty``) when it runs from a git checkout."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        _CODE_VERSION = code_version_of(Path(__file__).resolve().parent.parent)
    return _CODE_VERSION


def code_version_of(package_dir: Path) -> str:
    """The version string for the ftcloud package in ``package_dir`` (see :func:`code_version`)."""
    from ftcloud import __version__

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=package_dir, capture_output=True, text=True, timeout=5)

    try:
        # Only a checkout that tracks ftcloud itself: an install inside some other repository
        # (a virtualenv in a project) must not report that project's commit.
        if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
            return __version__
        sha = git("rev-parse", "--short=12", "HEAD")
        if sha.returncode != 0 or not sha.stdout.strip():
            return __version__
        dirty = git("status", "--porcelain", "--untracked-files=no", ".").stdout.strip()
        return f"{__version__}+g{sha.stdout.strip()}" + (".dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return __version__  # no git


def numeric_metrics(values: dict[str, Any]) -> dict[str, float]:
    """The plain numbers of a metrics mapping (drops nested reports, strings, booleans, None)."""
    return {
        str(k): float(v)
        for k, v in (values or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


#: The serving knob that names an adapter-only artifact's base model (a key of SERVE_ENV_DEFAULTS).
BASE_MODEL_ENV = "FTCLOUD_BASE_MODEL"


def serving_environment(technique: str | None, base_model: str | None, *, base_attached: bool) -> dict[str, str]:
    """The serving container's environment for a registered version: the contract's serving knobs
    with their defaults (visible, and editable per deployment), plus the base model when needed.

    An adapter-only artifact needs its base weights at serving time. When they travel with the
    version (``base_attached``: the S3 copy the job trained from, attached as the ``base`` model
    data source) the server finds them at its default path. Otherwise the base model id the job
    trained from is named explicitly, so the server does not depend on what adapter_config.json
    recorded (possibly a path that existed only inside the training container)."""
    from ftcloud.contract import SERVE_ENV_DEFAULTS

    env = {k: v for k, v in SERVE_ENV_DEFAULTS.items() if v != ""}
    if technique != "full" and not base_attached and base_model and not base_model.startswith("s3://"):
        env[BASE_MODEL_ENV] = base_model
    return env
