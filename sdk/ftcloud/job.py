"""The job specification: a :class:`~ftcloud.spec.TrainingSpec` plus where and how to run it.

One :class:`JobSpec` is produced identically by a YAML file, CLI flags and Python keyword
arguments (see :func:`build_job_spec`). Precedence, lowest first: defaults, the user config
(``ftcloud platform use``), the YAML file, flags / keyword arguments.

YAML layout (``ftcloud init`` writes a commented starter)::

    name: my-qlora-run          # optional; generated when empty
    backend: sagemaker          # local | sagemaker
    training:   {technique: qlora, model: ..., lora_r: 16, ...}   # any TrainingSpec field
    data:       {train: ./train.jsonl, validation: ..., model: s3://...}
    compute:    {instance_type: ml.g5.2xlarge, instance_count: 1, spot: true, max_runtime: 24h, ...}
    networking: {subnets: [...], security_group_ids: [...], network_isolation: false, ...}
    platform:   {stack: FtcloudPlatform, image: ..., role: ..., kms_key: ..., region: ...}
    tags:       {team: nlp}
    tune:       {strategy: bayesian, parameters: {learning_rate: {min: 1e-5, max: 1e-3, scaling: log}}}  # ftcloud tune

Every value a user can get wrong produces a :class:`~ftcloud.spec.SpecError` naming the
field (and, for YAML, ``file:line``). Import-light: PyYAML loads only when a file is read.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from ftcloud.platform_outputs import DEFAULT_STACK_NAME
from ftcloud.spec import SpecError, TrainingSpec, _coerce, bounds_problem, secret_arn_problem

BACKENDS = ("local", "sagemaker")
MAX_RUNTIME_LIMIT = 28 * 24 * 3600  # SageMaker's ceiling for MaxRuntimeInSeconds
JOB_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def _f(default: Any, help: str, choices: tuple[str, ...] | None = None, minimum: float | None = None):
    meta: dict[str, Any] = {"help": help}
    if choices:
        meta["choices"] = choices
    if minimum is not None:
        meta["minimum"] = minimum
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataSpec:
    """Input channels. Local paths are uploaded (sagemaker) or linked (local); s3:// URIs pass through."""

    train: str = _f("", "Training data: a JSONL file or a directory of them, local or s3://.")
    validation: str | None = _f(
        None, "Validation data (optional; otherwise training.validation_split rows are held out)."
    )
    model: str | None = _f(
        None,
        "Base model weights as the 'model' channel (local directory or s3:// prefix). Required with "
        "network isolation, because the container cannot reach the Hugging Face Hub.",
    )


@dataclass
class ComputeSpec:
    """Where the job runs (sagemaker backend)."""

    instance_type: str = _f(
        "auto",
        "SageMaker training instance type; auto: the cheapest that fits the job by 'ftcloud plan'.",
    )
    instance_count: int = _f(1, "Instances; more than 1 runs distributed data-parallel training.", minimum=1)
    volume_size_gb: int = _f(100, "Storage volume per instance in GB (ignored by NVMe instance types).", minimum=1)
    max_runtime: int = _f(
        86400, "Maximum training time: seconds or a duration such as 90m, 24h, 2d.", minimum=1
    )
    spot: bool = _f(True, "Use managed spot capacity (checkpoints are synced to S3 and resumed).")
    max_wait: int | None = _f(
        None, "Spot only: maximum time including waiting for capacity (>= max_runtime). Default 2x max_runtime."
    )
    max_retry_attempts: int = _f(
        2, "Retries on internal SageMaker errors (RetryStrategy); 0 disables.", minimum=0
    )

    @property
    def resolved_max_wait(self) -> int | None:
        if not self.spot:
            return None
        if self.max_wait is not None:
            return self.max_wait
        return min(2 * self.max_runtime, MAX_RUNTIME_LIMIT * 2)


@dataclass
class NetworkSpec:
    """VPC and isolation settings (sagemaker backend). Empty lists take the platform's subnets/groups."""

    subnets: list[str] = _f([], "Private subnet ids for the training instances.")
    security_group_ids: list[str] = _f([], "Security group ids for the training instances.")
    network_isolation: bool = _f(
        False, "No network access from the container: the base model must come through data.model."
    )
    inter_container_encryption: bool = _f(True, "Encrypt traffic between instances of a distributed job.")
    use_platform_vpc: bool = _f(True, "Use the platform stack's subnets and security groups when none are given.")


@dataclass
class PlatformSpec:
    """Which platform stack and AWS account to use. Explicit values override what the stack exports."""

    stack: str | None = _f(None, f"Platform CloudFormation stack (default {DEFAULT_STACK_NAME}).")
    region: str | None = _f(None, "AWS region (default: profile / environment).")
    profile: str | None = _f(None, "AWS named profile (default: environment).")
    image: str | None = _f(None, "Training image URI (default: the stack's TrainingImageUri).")
    role: str | None = _f(None, "SageMaker execution role ARN (default: the stack's ExecutionRoleArn).")
    kms_key: str | None = _f(None, "KMS key for outputs, checkpoints and volumes (default: the stack's key).")
    data_bucket: str | None = _f(None, "Bucket for uploaded data (default: the stack's dataset bucket).")
    artifact_bucket: str | None = _f(None, "Bucket for artifacts and checkpoints (default: the stack's).")


SECTIONS: dict[str, type] = {
    "data": DataSpec,
    "compute": ComputeSpec,
    "networking": NetworkSpec,
    "platform": PlatformSpec,
}
TOP_LEVEL = ("name", "backend", "training", "tags", *SECTIONS, "tune")

# Flat names used by CLI flags and Python keyword arguments -> (section, field).
# Every TrainingSpec field keeps its own name; the data channels get unambiguous ones.
FLAT_KEYS: dict[str, tuple[str, str]] = {
    "name": ("", "name"),
    "backend": ("", "backend"),
    "tags": ("", "tags"),
    "data": ("data", "train"),
    "train_data": ("data", "train"),
    "validation_data": ("data", "validation"),
    "model_data": ("data", "model"),
}
for _section, _cls in SECTIONS.items():
    if _section == "data":
        continue
    for _fld in fields(_cls):
        FLAT_KEYS[_fld.name] = (_section, _fld.name)
for _name in TrainingSpec.field_names():
    assert _name not in FLAT_KEYS, f"flat key collision: {_name}"
    FLAT_KEYS[_name] = ("training", _name)


@dataclass
class JobSpec:
    """A training job: what to train (:class:`TrainingSpec`) and where/how to run it."""

    training: TrainingSpec = field(default_factory=TrainingSpec)
    name: str | None = None
    backend: str | None = None
    data: DataSpec = field(default_factory=DataSpec)
    compute: ComputeSpec = field(default_factory=ComputeSpec)
    networking: NetworkSpec = field(default_factory=NetworkSpec)
    platform: PlatformSpec = field(default_factory=PlatformSpec)
    tags: dict[str, str] = field(default_factory=dict)
    #: The ``tune:`` section (a :class:`~ftcloud.tuning.base.TuningSpec`), read only by ``ftcloud tune``.
    tune: Any = None

    # ------------------------------------------------------------------ validation
    def validate(self, source: str = "job spec") -> JobSpec:
        """Check cross-field rules; raise :class:`SpecError` naming the field. Returns self."""
        # Before training.validate, which checks it too, so the error names the job-spec path.
        problem = secret_arn_problem(self.training.hf_token_secret_arn, "training.hf_token_secret_arn")
        if problem:
            raise SpecError(problem, "training.hf_token_secret_arn", source)
        self.training.validate(source)
        if self.backend is not None and self.backend not in BACKENDS:
            raise SpecError(f"'backend' must be one of {', '.join(BACKENDS)}; got {self.backend!r}.", "backend", source)
        if self.name and not JOB_NAME_RE.match(self.name):
            raise SpecError(
                f"'name' {self.name!r} is not a valid job name: 1-63 letters, digits and hyphens, "
                "starting with a letter or digit.",
                "name",
                source,
            )
        for section in SECTIONS:
            _validate_section(getattr(self, section), section, source)
        c = self.compute
        if c.instance_type != "auto" and not c.instance_type.startswith("ml."):
            raise SpecError(
                f"'compute.instance_type' must be a SageMaker type such as ml.g5.2xlarge, or auto; got {c.instance_type!r}.",
                "compute.instance_type",
                source,
            )
        if c.max_runtime > MAX_RUNTIME_LIMIT:
            raise SpecError(
                f"'compute.max_runtime' must be at most {MAX_RUNTIME_LIMIT} s (28 days); got {c.max_runtime}.",
                "compute.max_runtime",
                source,
            )
        if c.spot and c.max_wait is not None and c.max_wait < c.max_runtime:
            raise SpecError(
                f"'compute.max_wait' ({c.max_wait} s) must be >= 'compute.max_runtime' ({c.max_runtime} s) "
                "for spot training.",
                "compute.max_wait",
                source,
            )
        if c.max_retry_attempts > 30:
            raise SpecError("'compute.max_retry_attempts' must be at most 30.", "compute.max_retry_attempts", source)
        for key, value in self.tags.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise SpecError(f"'tags' keys and values must be strings; got {key!r}: {value!r}.", "tags", source)
            problem = tag_problem(key, value)
            if problem:
                raise SpecError(problem, "tags", source)
        if len(self.tags) > MAX_USER_TAGS:
            raise SpecError(
                f"'tags' has {len(self.tags)} entries; SageMaker allows 50 per job and ftcloud adds "
                f"{50 - MAX_USER_TAGS}, so give at most {MAX_USER_TAGS}.",
                "tags",
                source,
            )
        return self

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "backend": self.backend, "training": self.training.to_dict()}
        for section in SECTIONS:
            obj = getattr(self, section)
            out[section] = {f.name: getattr(obj, f.name) for f in fields(obj)}
        out["tags"] = dict(self.tags)
        if self.tune is not None:  # absent otherwise, so job.json and spec hashes of plain jobs stay as they were
            out["tune"] = self.tune.to_dict()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "job spec", lines: Mapping[str, int] | None = None) -> JobSpec:
        spec = cls()
        apply_nested(spec, values, source, lines or {})
        return spec

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Every settable key (flat name, dotted path, type, default, help) for docs and ``--help``."""
        rows = []
        for section, cls_ in SECTIONS.items():
            hints = typing.get_type_hints(cls_)
            for f in fields(cls_):
                rows.append(
                    {
                        "path": f"{section}.{f.name}",
                        "type": _type_name(hints[f.name]),
                        "default": _default_of(f),
                        "choices": list(f.metadata.get("choices", ())),
                        "help": f.metadata["help"],
                    }
                )
        for row in TrainingSpec.describe():
            rows.append({"path": f"training.{row['name']}", **{k: v for k, v in row.items() if k != "name"}})
        return rows


#: SageMaker's tag rules (the API's pattern ``^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$``; key 1-128
#: characters, value 0-256): checked at launch, not after the upload, by CreateTrainingJob.
TAG_PUNCTUATION = "_.:/=+-@"
MAX_USER_TAGS = 48  # 50 per resource, minus ftcloud:technique and ftcloud:managed-by


def tag_problem(key: str, value: str) -> str | None:
    """Why SageMaker would reject this tag (``None`` when it would not)."""
    import unicodedata

    def bad_char(text: str) -> str | None:
        for ch in text:
            if ch not in TAG_PUNCTUATION and unicodedata.category(ch)[0] not in "LZN":
                return ch
        return None

    allowed = f"letters, digits, spaces and {' '.join(TAG_PUNCTUATION)}"
    if not 1 <= len(key) <= 128:
        return f"tag key {key!r} must be 1-128 characters long; it has {len(key)}."
    if key.lower().startswith("aws:"):
        return f"tag key {key!r}: the 'aws:' prefix is reserved by AWS; choose another key."
    if len(value) > 256:
        return f"tag {key!r}: the value must be at most 256 characters; it has {len(value)}."
    for what, text in (("key", key), ("value", value)):
        ch = bad_char(text)
        if ch is not None:
            shown = text if what == "key" else f"{key}={text}"
            return f"tag {what} in {shown!r} has the character {ch!r}, which SageMaker rejects; allowed: {allowed}."
    return None


def new_job_name(technique: str) -> str:
    """``ftcloud-qlora-20250101-120000-ab12``: sortable, unique, a valid SageMaker job name."""
    import secrets
    import time

    return f"ftcloud-{technique}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


# ---------------------------------------------------------------------- building
def build_job_spec(
    config: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    set_values: list[str] | tuple[str, ...] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> JobSpec:
    """Compose a validated :class:`JobSpec`.

    ``defaults`` (flat keys, e.g. from the user config) < ``config`` (YAML file) < ``overrides``
    (flat keys: flags or keyword arguments; ``None`` values are ignored) < ``set_values``
    (``["key=value", ...]``, flat or dotted keys).
    """
    spec = JobSpec()
    if defaults:
        apply_flat(spec, {k: v for k, v in defaults.items() if v is not None}, "user config")
    source = "job spec"
    if config is not None:
        values, lines = load_yaml(config)
        source = str(config)
        apply_nested(spec, _relative_to(values, Path(config).parent), source, lines)
    if overrides:
        apply_flat(spec, {k: v for k, v in overrides.items() if v is not None}, "arguments")
    if set_values:
        apply_flat(spec, parse_set_values(set_values), "--set")
    spec.validate(source if not (overrides or set_values) else "job spec")
    return spec


def _relative_to(values: dict[str, Any], base: Path) -> dict[str, Any]:
    """Local paths in a job file are relative to the file, not to the current directory."""

    def fix(value: Any, explicit_only: bool) -> Any:
        if not isinstance(value, str) or not value or value.startswith("s3://") or Path(value).is_absolute():
            return value
        if explicit_only and not value.startswith(("./", "../", "~")):
            return value  # 'org/model' is a Hugging Face id, not a path
        if value.startswith("~"):
            return str(Path(value).expanduser())
        return str((base / value).resolve())

    out = dict(values)
    if isinstance(out.get("data"), Mapping):
        out["data"] = {k: fix(v, False) for k, v in out["data"].items()}
    if isinstance(out.get("training"), Mapping) and "model" in out["training"]:
        out["training"] = {**out["training"], "model": fix(out["training"]["model"], True)}
    return out


def parse_set_values(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set expects KEY=VALUE (e.g. --set lora_r=8); got {item!r}.", None, "--set")
        out[key.strip()] = value.strip()
    return out


def apply_flat(spec: JobSpec, values: Mapping[str, Any], source: str) -> None:
    """Set fields from flat names (``lora_r``, ``instance_type``) or dotted paths (``compute.spot``)."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if "." in key:
            section, _, name = key.partition(".")
            if section not in TOP_LEVEL:
                raise SpecError(_unknown(key, [*FLAT_KEYS, *_dotted_keys()]), key, source)
        elif key in FLAT_KEYS:
            section, name = FLAT_KEYS[key]
        else:
            raise SpecError(_unknown(key, list(FLAT_KEYS)), key, source)
        if section == "":
            nested[name] = value
        else:
            nested.setdefault(section, {})[name] = value
    apply_nested(spec, nested, source, {})


def apply_nested(spec: JobSpec, values: Mapping[str, Any], source: str, lines: Mapping[str, int]) -> None:
    """Apply a nested mapping (YAML layout) onto ``spec``; errors carry ``source:line``."""
    if not isinstance(values, Mapping):
        raise SpecError("the job spec must be a mapping of sections (name, training, data, ...).", None, source)
    for key, value in values.items():
        where = _at(source, lines, key)
        if key not in TOP_LEVEL:
            if key in FLAT_KEYS and FLAT_KEYS[key][0]:
                section = FLAT_KEYS[key][0]
                raise SpecError(f"'{key}' belongs under '{section}:' (as {section}.{FLAT_KEYS[key][1]}).", key, where)
            raise SpecError(_unknown(key, list(TOP_LEVEL)), key, where)
        if key == "name":
            spec.name = None if value in (None, "") else _coerce("name", value, str, where)
        elif key == "backend":
            spec.backend = None if value in (None, "") else _coerce("backend", value, str, where)
            if spec.backend is not None and spec.backend not in BACKENDS:
                raise SpecError(f"'backend' must be one of {', '.join(BACKENDS)}; got {value!r}.", "backend", where)
        elif key == "tags":
            spec.tags.update(_parse_tags(value, where))
        elif key == "tune":
            from ftcloud.tuning.space import parse_tuning  # the only parser of tune:

            spec.tune = parse_tuning(value, source, lines, base=spec.tune)
        elif key == "training":
            _apply_training(spec, value, source, lines)
        else:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise SpecError(f"'{key}' must be a mapping of {key} settings; got {value!r}.", key, where)
            _apply_section(getattr(spec, key), key, value, source, lines)


def _apply_training(spec: JobSpec, value: Any, source: str, lines: Mapping[str, int]) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise SpecError(f"'training' must be a mapping of hyperparameters; got {value!r}.", "training", _at(source, lines, "training"))
    hints = typing.get_type_hints(TrainingSpec)
    merged = spec.training.to_dict()
    for key, raw in value.items():
        path = f"training.{key}"
        where = _at(source, lines, path)
        if key not in hints:
            raise SpecError(_unknown(path, [f"training.{k}" for k in hints]), path, where)
        try:
            merged[key] = _coerce(key, raw, hints[key], where)
        except SpecError as exc:
            raise SpecError(str(exc).removeprefix(f"{where}: "), path, where) from None
    spec.training = TrainingSpec(**merged)
    # Per-field rules here (so the error points at the line); cross-field rules run once at the end,
    # after flags had their say.
    by_name = {f.name: f for f in fields(TrainingSpec)}
    for key in value:
        _validate_field(spec.training, by_name[key], f"training.{key}", _at(source, lines, f"training.{key}"))


def _apply_section(obj: Any, section: str, values: Mapping[str, Any], source: str, lines: Mapping[str, int]) -> None:
    cls = type(obj)
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, raw in values.items():
        path = f"{section}.{key}"
        where = _at(source, lines, path)
        if key not in known:
            raise SpecError(_unknown(path, [f"{section}.{k}" for k in known]), path, where)
        hint = hints[key]
        if typing.get_origin(hint) is list:
            value = _parse_list(raw, path, where)
        elif key in ("max_runtime", "max_wait"):
            value = None if raw in (None, "", "none", "null") and key == "max_wait" else parse_duration(raw, path, where)
        else:
            value = _coerce(path, raw, hint, where)
        setattr(obj, key, value)
        _validate_field(obj, known[key], path, where)


def _validate_section(obj: Any, section: str, source: str) -> None:
    for f in fields(obj):
        _validate_field(obj, f, f"{section}.{f.name}", source)


def _validate_field(obj: Any, f: Any, path: str, where: str) -> None:
    value = getattr(obj, f.name)
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise SpecError(f"'{path}' must be one of {', '.join(choices)}; got {value!r}.", path, where)
    problem = bounds_problem(path, value, f.metadata)
    if problem:
        raise SpecError(problem, path, where)


# ---------------------------------------------------------------------- value parsers
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d)?\s*$", re.IGNORECASE)
_UNIT = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


def parse_duration(raw: Any, path: str = "duration", where: str = "job spec") -> int:
    """Seconds from an int or a string like ``3600``, ``90m``, ``24h``, ``2d``."""
    if isinstance(raw, bool):
        raise SpecError(f"'{path}' must be a duration such as 3600, 90m or 24h; got {raw!r}.", path, where)
    if isinstance(raw, int | float):
        seconds = raw
    else:
        match = _DURATION_RE.match(str(raw))
        if not match:
            raise SpecError(f"'{path}' must be a duration such as 3600, 90m or 24h; got {raw!r}.", path, where)
        seconds = float(match.group(1)) * _UNIT[(match.group(2) or "s").lower()]
    if seconds < 1 or int(seconds) != seconds:
        raise SpecError(f"'{path}' must be a whole number of seconds >= 1; got {raw!r}.", path, where)
    return int(seconds)


def _parse_list(raw: Any, path: str, where: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [x.strip() for x in raw.split(",") if x.strip()]
    if isinstance(raw, list | tuple) and all(isinstance(x, str) for x in raw):
        return list(raw)
    raise SpecError(f"'{path}' must be a list of strings or a comma-separated string; got {raw!r}.", path, where)


def _parse_tags(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list | tuple):
        out = {}
        for item in raw:
            key, sep, value = str(item).partition("=")
            if not sep or not key:
                raise SpecError(f"tags must be KEY=VALUE; got {item!r}.", "tags", where)
            out[key] = value
        return out
    if isinstance(raw, Mapping):
        out = {}
        for key, value in raw.items():
            if isinstance(value, list | dict) or value is None:
                raise SpecError(f"tag {key!r} must have a plain value; got {value!r}.", "tags", where)
            out[str(key)] = _coerce("tags", value, str, where) if not isinstance(value, str) else value
        return out
    raise SpecError(f"'tags' must be a mapping of KEY: VALUE; got {raw!r}.", "tags", where)


def _unknown(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown setting '{key}'.{hint} See 'ftcloud hyperparameters' for every key."


def _dotted_keys() -> list[str]:
    return [f"{s}.{n}" if s else n for s, n in FLAT_KEYS.values()]


def _at(source: str, lines: Mapping[str, int], path: str) -> str:
    line = lines.get(path)
    if line is None and "." in path:
        line = lines.get(path.split(".", 1)[0])
    return f"{source}:{line}" if line else source


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is list:
        return "list"
    if len(args) == 1 and type(None) in typing.get_args(hint):
        return f"{getattr(args[0], '__name__', args[0])} (optional)"
    return getattr(hint, "__name__", str(hint))


def _default_of(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


# ---------------------------------------------------------------------- YAML
def load_yaml(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse a job YAML file; return (values, {dotted key path: line number}).

    Errors name the file and line: unreadable file, syntax errors, duplicate keys, non-mapping root.
    """
    from ftcloud.adaptors import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"job file not found: {path}", None, str(path)) from None
    except OSError as exc:
        raise SpecError(f"cannot read job file: {exc.strerror}", None, str(path)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"invalid YAML: {problem}", None, where) from None
    if node is None:
        return {}, {}
    lines: dict[str, int] = {}
    values = _node_to_python(node, "", lines, path)
    if not isinstance(values, dict):
        raise SpecError("the job file must be a mapping (name:, training:, data:, ...).", None, f"{path}:1")
    return values, lines


def _node_to_python(node: Any, prefix: str, lines: dict[str, int], path: Path) -> Any:
    from ftcloud.adaptors import yaml

    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError("keys must be plain names.", None, f"{path}:{key_node.start_mark.line + 1}")
            dotted = f"{prefix}.{key}" if prefix else key
            if key in out:
                raise SpecError(
                    f"'{dotted}' is set twice (first on line {lines[dotted]}).",
                    dotted,
                    f"{path}:{key_node.start_mark.line + 1}",
                )
            lines[dotted] = key_node.start_mark.line + 1
            out[key] = _node_to_python(value_node, dotted, lines, path)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_node_to_python(v, prefix, lines, path) for v in node.value]
    try:
        return yaml.SafeLoader("").construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid value: {exc}", prefix, f"{path}:{node.start_mark.line + 1}") from None
