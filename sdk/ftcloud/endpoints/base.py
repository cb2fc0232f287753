"""The endpoints interface: deploy / undeploy / list / describe / invoke, and the records they return.

Both implementations (:mod:`.local`, :mod:`.sagemaker`) answer the same five verbs with the
same :class:`EndpointStatus`, so the CLI and pipelines behave alike on either backend. The
request/response helpers here (:func:`build_payload`, :func:`generated_text`,
:func:`iter_stream_text`) speak the serving contract: the TGI/LMI shape
``{"inputs", "parameters"}`` -> ``[{"generated_text"}]`` and OpenAI-style chat
``{"messages"}`` -> ``{"choices": [{"message": {...}}]}``. Import-light.
"""

from __future__ import annotations

import abc
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from ftcloud.contract import ADAPTER_ATTRIBUTE
from ftcloud.errors import UsageError

#: DescribeEndpoint states that end a wait with an error (a rollback means the update failed).
ENDPOINT_FAILED_STATES = ("Failed", "RollingBack", "UpdateRollbackFailed")
#: States in which an endpoint serves traffic and nothing is in flight.
ENDPOINT_READY_STATES = ("InService",)

#: ``callback(message)`` called while deploy waits (progress for people, logs for pipelines).
Progress = Callable[[str], None]


@dataclass
class EndpointStatus:
    """What ``ftcloud endpoints`` shows and ``deploy`` returns. Times are epoch seconds."""

    name: str
    backend: str  # local | sagemaker
    status: str  # InService | Creating | Updating | Failed | RollingBack | ... | DryRun
    target: str = ""  # what was deployed, as given: JOB, GROUP:VERSION or a package ARN
    model: str | None = None  # local model directory, or the S3 artifact / package it serves
    url: str | None = None  # local http://127.0.0.1:PORT, or the endpoint ARN
    created: float | None = None
    updated: float | None = None
    failure_reason: str | None = None
    instance_type: str | None = None  # "local" for the local backend
    instance_count: int | None = None
    serverless: dict[str, int] | None = None  # {"MemorySizeInMB": ..., "MaxConcurrency": ...}
    min_capacity: int | None = None
    max_capacity: int | None = None
    pid: int | None = None  # local server process
    port: int | None = None
    log: str | None = None  # local server log file
    model_name: str | None = None  # SageMaker Model
    config_name: str | None = None  # SageMaker EndpointConfig
    image: str | None = None
    notes: list[str] = field(default_factory=list)
    #: ``deploy(dry_run=True)``: the exact requests that would be sent, in order.
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.status in ENDPOINT_READY_STATES

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ready"] = self.ready
        return out


# ---------------------------------------------------------------------- what to deploy
@dataclass(frozen=True)
class DeployTarget:
    """A parsed deploy target. ``kind``: ``package`` (an ARN), ``version`` (GROUP:VERSION) or
    ``name`` (a bare NAME: a training job, else a registry group's newest approved version)."""

    kind: str
    ref: str
    group: str | None = None
    version: str | None = None

    @property
    def is_package_arn(self) -> bool:
        return self.kind == "package"


_PACKAGE_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/(?P<group>[^/]+)/(?P<version>\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9](-*[A-Za-z0-9])*$")


def parse_target(target: str) -> DeployTarget:
    """``arn:...:model-package/G/3`` | ``GROUP:VERSION`` (``GROUP:latest``) | ``NAME``."""
    target = (target or "").strip()
    match = _PACKAGE_ARN.match(target)
    if match:
        return DeployTarget("package", target, match.group("group"), match.group("version"))
    if target.startswith("arn:"):
        raise UsageError(
            f"deploy target {target!r} is an ARN but not a versioned model package ARN "
            "(arn:aws:sagemaker:REGION:ACCOUNT:model-package/GROUP/VERSION).",
            hint="Pass a model package ARN, GROUP:VERSION, GROUP or a training job name.",
        )
    group, sep, version = target.partition(":")
    if sep:
        if not _NAME.match(group) or not (version.isdigit() or version == "latest"):
            raise UsageError(
                f"deploy target {target!r}: expected GROUP:VERSION with a numeric VERSION or 'latest'.",
                hint="See the versions with 'ftcloud versions GROUP'.",
            )
        return DeployTarget("version", target, group, version)
    if not _NAME.match(target):
        raise UsageError(
            f"deploy target {target!r} is not a job name, GROUP, GROUP:VERSION or model package ARN.",
            hint="Names use letters, digits and '-'. List jobs with 'ftcloud jobs'.",
        )
    return DeployTarget("name", target, group=target)


def default_endpoint_name(target: DeployTarget) -> str:
    """An endpoint name (<= 63 chars, SageMaker's rule) derived from what is deployed."""
    base = target.group or target.ref
    if target.kind in ("package", "version") and target.version and target.version != "latest":
        base = f"{base}-v{target.version}"
    return base[:63].rstrip("-")


def check_endpoint_name(name: str) -> str:
    if not name or len(name) > 63 or not _NAME.match(name):
        raise UsageError(
            f"endpoint name {name!r} is not valid: 1-63 letters, digits or '-', starting and ending "
            "with a letter or digit.",
            hint="Pass --name with a valid name.",
        )
    return name


# ---------------------------------------------------------------------- requests and responses
def parse_params(items: Iterable[str]) -> dict[str, Any]:
    """``["max_new_tokens=32", "temperature=0.7", "stop=[\"\\n\"]", "do_sample=true"]`` -> typed values.

    Each value is read as JSON when it parses (numbers, booleans, lists), else kept as a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--param {item!r}: expected KEY=VALUE, e.g. --param max_new_tokens=64.")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def build_payload(
    prompt: str | list[str] | None = None,
    *,
    messages: list[dict[str, Any]] | None = None,
    parameters: dict[str, Any] | None = None,
    stream: bool = False,
) -> dict[str, Any]:
    """The request body: TGI/LMI ``{"inputs", "parameters"}`` for a prompt, OpenAI-style
    ``{"messages", ...}`` (parameters at the top level, as OpenAI clients send them) for a chat."""
    if (prompt is None) == (messages is None):
        raise UsageError("give either a prompt or messages (a chat), not both and not neither.")
    params = dict(parameters or {})
    if messages is not None:
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise UsageError('messages must be a list of {"role": ..., "content": ...} objects.')
        body: dict[str, Any] = {"messages": messages, **params}
    else:
        body = {"inputs": prompt}
        if params:
            body["parameters"] = params
    if stream:
        body["stream"] = True
    return body


def adapter_attribute(adapter: str | None) -> str | None:
    """The CustomAttributes value that selects an adapter (``adapter=NAME``), or None."""
    if not adapter:
        return None
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", adapter):
        raise UsageError(f"adapter name {adapter!r}: use letters, digits, '_', '.' or '-'.")
    return f"{ADAPTER_ATTRIBUTE}={adapter}"


def generated_text(response: Any) -> str:
    """The generated text of a response in either contract shape (or a bare string)."""
    if isinstance(response, str):
        return response
    if isinstance(response, list) and response:
        texts = [generated_text(item) for item in response]
        return "\n".join(texts)
    if isinstance(response, dict):
        if "generated_text" in response:
            return str(response["generated_text"])
        choices = response.get("choices")
        if isinstance(choices, list) and choices:
            first = choices[0]
            message = first.get("message") or first.get("delta") or {}
            if isinstance(message, dict) and "content" in message:
                return str(message.get("content") or "")
            if "text" in first:
                return str(first["text"])
    raise ValueError(f"the response has no generated text: {json.dumps(response)[:300]}")


def iter_stream_text(chunks: Iterable[bytes]) -> Iterator[str]:
    """Text pieces of a server-sent-events stream, whatever the chunk boundaries.

    Understands TGI events (``data: {"token": {"text": ...}}``) and OpenAI chat chunks
    (``data: {"choices": [{"delta": {"content": ...}}]}``); ``data: [DONE]`` ends it. SageMaker's
    InvokeEndpointWithResponseStream cuts the stream at arbitrary byte offsets, hence the buffer."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            piece = _sse_piece(line)
            if piece is _DONE:
                return
            if piece:
                yield piece
    if buffer.strip():
        piece = _sse_piece(buffer)
        if piece and piece is not _DONE:
            yield piece


_DONE = object()


def _sse_piece(line: bytes) -> Any:
    text = line.decode("utf-8", "replace").strip()
    if not text.startswith("data:"):
        return None
    data = text[5:].strip()
    if data == "[DONE]":
        return _DONE
    try:
        event = json.loads(data)
    except ValueError:
        return data
    if isinstance(event, dict):
        token = event.get("token")
        if isinstance(token, dict):
            return "" if token.get("special") else str(token.get("text") or "")
        choices = event.get("choices")
        if isinstance(choices, list) and choices:
            delta = choices[0].get("delta") or {}
            return str(delta.get("content") or choices[0].get("text") or "")
    return None


# ---------------------------------------------------------------------- the interface
class Endpoints(abc.ABC):
    """Where models are served. Each implementation answers these verbs for endpoint names."""

    #: "local" or "sagemaker"
    name: str = ""

    @abc.abstractmethod
    def describe_target(self) -> str:
        """Where this backend points (for the header line every command prints)."""

    @abc.abstractmethod
    def deploy(
        self,
        target: str,
        name: str | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
        progress: Progress | None = None,
        dry_run: bool = False,
        **options: Any,
    ) -> EndpointStatus:
        """Serve ``target`` (a job, GROUP:VERSION, GROUP or package ARN) as endpoint ``name``."""

    @abc.abstractmethod
    def undeploy(self, name: str) -> EndpointStatus:
        """Stop serving and delete what deploy created; never the job or the registry entry."""

    @abc.abstractmethod
    def list(self) -> list[EndpointStatus]:
        """Every endpoint of this backend, newest first, with its live state."""

    @abc.abstractmethod
    def describe(self, name: str) -> EndpointStatus:
        """One endpoint's live state; raises :class:`EndpointNotFoundError`."""

    @abc.abstractmethod
    def invoke(self, name: str, payload: dict[str, Any], *, adapter: str | None = None, stream: bool = False) -> Any:
        """Send ``payload`` (see :func:`build_payload`); the parsed JSON response, or with
        ``stream`` an iterator of text pieces."""

    def has_endpoint(self, name: str) -> bool:
        try:
            self.describe(name)
        except EndpointNotFoundError:
            return False
        return True


class EndpointNotFoundError(UsageError):
    """No endpoint with that name in the selected backend."""

    exit_code = 1


class DeployError(UsageError):
    """Deploying failed (the server died, the endpoint failed or rolled back)."""

    exit_code = 1
