"""The wire format of ``POST /invocations``: typed requests and responses.

Two request shapes users already know:

* TGI / LMI: ``{"inputs": str | [str], "parameters": {...}}`` -> ``[{"generated_text": ...}, ...]``
* OpenAI-style chat: ``{"messages": [...], "max_tokens": ..., ...}`` -> a ``chat.completion`` object.

With ``"stream": true`` the answer is ``text/event-stream`` (server-sent events, one ``data: <json>``
line and a blank line per event), in the shape of the API the request came in:

* TGI: one ``{"token": {"id": N, "text": "...", "special": false}, "generated_text": null, "details": null}``
  per piece of text, then ``{"token": {"id": N, "text": "", "special": true}, "generated_text": "<full text>",
  "details": {"finish_reason": ..., "generated_tokens": ..., "prompt_tokens": ..., "seed": ...}}``; then the
  stream ends (TGI sends no ``[DONE]``).
* chat: ``chat.completion.chunk`` objects: the first ``delta`` is ``{"role": "assistant", "content": ""}``,
  then one ``{"content": "..."}`` per piece, a last chunk with an empty ``delta``, the ``finish_reason`` and
  ``usage``; then ``data: [DONE]``.

A failure after the stream started (timeout, model error) is one ``{"error": "...", "status": N}`` event
that ends the stream (the HTTP status is already 200 by then).

Validation lives in the models (pydantic), not in ad-hoc checks: every rejection becomes a
:class:`RequestError` whose message names the field (``parameters.temperature: ...``). The parsed
request becomes plain :class:`GenerationTask` objects; nothing here knows about HTTP or torch.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ftcloud.contract import ADAPTER_ATTRIBUTE

#: Most stop sequences per request, and most prompts in one ``inputs`` list.
MAX_STOP_SEQUENCES = 8
MAX_INPUTS = 64


class RequestError(Exception):
    """A request the server refuses: HTTP ``status``, a message for the user, the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message, "status": self.status}
        if self.field:
            out["field"] = self.field
        return out


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------
_Stop = Annotated[str, Field(min_length=1, max_length=256)]
_Prompt = Annotated[str, Field(min_length=1)]


def _stop_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class GenerateParameters(BaseModel):
    """TGI/LMI ``parameters``. Unknown keys are refused so a typo (``max_tokens``) is not ignored."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int | None = Field(default=None, ge=1, le=32768)
    do_sample: bool = False
    temperature: float | None = Field(default=None, ge=0.0, le=100.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=100.0)
    stop: list[_Stop] = Field(default_factory=list, max_length=MAX_STOP_SEQUENCES)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    adapter_id: str | None = Field(default=None, min_length=1, max_length=128)
    details: bool = False
    return_full_text: bool = False

    _stop = field_validator("stop", mode="before")(_stop_list)


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: _Prompt | Annotated[list[_Prompt], Field(min_length=1, max_length=MAX_INPUTS)]
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: bool = False  # server-sent events, one prompt only (see parse_request)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(BaseModel):
    """OpenAI-style chat. Greedy unless ``temperature`` > 0 (deterministic by default, and cacheable)."""

    model_config = ConfigDict(extra="forbid")

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    model: str | None = None  # accepted for client compatibility; the adapter is chosen by adapter_id
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=100.0)
    stop: list[_Stop] = Field(default_factory=list, max_length=MAX_STOP_SEQUENCES)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: Literal[1] = 1
    user: str | None = None
    adapter_id: str | None = Field(default=None, min_length=1, max_length=128)
    stream: bool = False

    _stop = field_validator("stop", mode="before")(_stop_list)


# ---------------------------------------------------------------------------
# What the rest of the server works with
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Sampling:
    """Generation settings of one prompt. ``max_new_tokens=None``: the model's default."""

    max_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def deterministic(self) -> bool:
        return not self.do_sample

    def batch_key(self) -> tuple | None:
        """Requests with equal keys may share one ``generate`` call; ``None``: run alone.

        Length and stop sequences are per row (a stopping criterion), so they do not split batches.
        A seeded sample is reproducible only when it runs alone.
        """
        if not self.do_sample:
            return ("greedy", self.repetition_penalty)
        if self.seed is not None:
            return None
        return ("sample", self.temperature, self.top_p, self.top_k, self.repetition_penalty)


def sampling(max_new_tokens, do_sample, temperature, top_p, top_k, repetition_penalty, stop, seed) -> Sampling:
    # temperature 0 means greedy everywhere users come from (OpenAI, LMI); do_sample would divide by it.
    if temperature == 0:
        do_sample = False
    if not do_sample:  # knobs that only shape sampling must not split batches or cache keys
        temperature, top_p, top_k, seed = None, None, None, None
    return Sampling(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=1.0 if temperature is None else float(temperature),
        top_p=1.0 if top_p is None else float(top_p),
        top_k=0 if top_k is None else int(top_k),
        repetition_penalty=1.0 if repetition_penalty is None else float(repetition_penalty),
        stop=tuple(stop),
        seed=seed,
    )


@dataclass(frozen=True)
class GenerationTask:
    """One prompt to complete: raw text, or chat messages the runner renders with the chat template."""

    text: str | None
    messages: tuple[tuple[str, str], ...] | None
    sampling: Sampling
    adapter: str | None = None  # None: the server's default adapter

    def canonical(self) -> str:
        """A stable string of everything that determines the answer (for the result cache)."""
        return json.dumps(
            {"text": self.text, "messages": self.messages, "sampling": self.sampling.__dict__},
            sort_keys=True, separators=(",", ":"),
        )


@dataclass
class Generation:
    """One answer. ``finish_reason``: "stop" (EOS or a stop sequence) or "length"."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class ParsedRequest:
    kind: Literal["generate", "chat"]
    tasks: list[GenerationTask]
    details: bool = False
    return_full_text: bool = False
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    stream: bool = False  # answer with server-sent events (one task), never from the cache


def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        # pydantic adds the union branch it tried ("str", "list[str]"); users know only their field.
        if isinstance(part, str) and ("[" in part or "-" in part or part in ("str", "int", "float", "bool")):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validation_error(exc: ValidationError) -> RequestError:
    errors = exc.errors()
    first = errors[0]
    where = _field(tuple(first["loc"])) or "body"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field; check its spelling against the documented request shape"
    elif where == "inputs" or where.startswith("inputs["):
        where, message = "inputs", f"must be a non-empty string or a list of 1 to {MAX_INPUTS} non-empty strings"
        errors = errors[:1]
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return RequestError(422, f"{where}: {message}{more}", field=where)


def adapter_from_custom_attributes(header: str | None) -> str | None:
    """``adapter=NAME`` from ``X-Amzn-SageMaker-Custom-Attributes`` (pairs separated by ``,`` or ``;``)."""
    if not header:
        return None
    for item in header.replace(";", ",").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip() == ADAPTER_ATTRIBUTE and value.strip():
            return value.strip()
    return None


def parse_request(body: bytes, custom_attributes: str | None = None) -> ParsedRequest:
    """Body bytes -> tasks. Raises :class:`RequestError` (400 malformed JSON, 422 invalid fields)."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError(422, "body: must be a JSON object with \"inputs\" or \"messages\"", field="body")
    header_adapter = adapter_from_custom_attributes(custom_attributes)
    try:
        if "messages" in payload:
            chat = ChatRequest.model_validate(payload)
        else:
            if "inputs" not in payload:
                raise RequestError(422, "inputs: field required (or send chat \"messages\")", field="inputs")
            req = GenerateRequest.model_validate(payload)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    if "messages" in payload:
        s = sampling(chat.max_completion_tokens or chat.max_tokens, bool(chat.temperature), chat.temperature,
                     chat.top_p, chat.top_k, chat.repetition_penalty, chat.stop, chat.seed)
        messages = tuple((m.role, m.text()) for m in chat.messages)
        task = GenerationTask(text=None, messages=messages, sampling=s, adapter=chat.adapter_id or header_adapter)
        return ParsedRequest(kind="chat", tasks=[task], model=chat.model, stream=chat.stream)
    p = req.parameters
    s = sampling(p.max_new_tokens, p.do_sample, p.temperature, p.top_p, p.top_k, p.repetition_penalty, p.stop, p.seed)
    if req.stream and not isinstance(req.inputs, str):
        raise RequestError(422, "stream: a streamed request answers one prompt; send \"inputs\" as a single "
                                "string, or send the list without stream", field="stream")
    texts = [req.inputs] if isinstance(req.inputs, str) else list(req.inputs)
    adapter = p.adapter_id or header_adapter
    tasks = [GenerationTask(text=t, messages=None, sampling=s, adapter=adapter) for t in texts]
    return ParsedRequest(kind="generate", tasks=tasks, details=p.details, return_full_text=p.return_full_text,
                         stream=req.stream)


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------
def generate_response(request: ParsedRequest, results: list[Generation]) -> list[dict[str, Any]]:
    out = []
    for task, result in zip(request.tasks, results, strict=True):
        text = (task.text or "") + result.text if request.return_full_text else result.text
        item: dict[str, Any] = {"generated_text": text}
        if request.details:
            item["details"] = {
                "finish_reason": result.finish_reason,
                "generated_tokens": result.completion_tokens,
                "prompt_tokens": result.prompt_tokens,
                "seed": task.sampling.seed,
            }
        out.append(item)
    return out


def chat_response(request: ParsedRequest, result: Generation, model_name: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model or model_name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": result.text},
            "finish_reason": result.finish_reason,
        }],
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        },
    }


# ---------------------------------------------------------------------------
# Streamed responses (server-sent events)
# ---------------------------------------------------------------------------
SSE_MEDIA_TYPE = "text/event-stream"
SSE_DONE = b"data: [DONE]\n\n"


def sse(data: dict[str, Any]) -> bytes:
    """One server-sent event. Compact JSON holds no newline, so one ``data:`` line is the whole event."""
    return b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def generate_stream_event(text: str, token_id: int | None) -> dict[str, Any]:
    """TGI's event for one piece of the answer."""
    return {"token": {"id": token_id, "text": text, "special": False}, "generated_text": None, "details": None}


def generate_stream_final(request: ParsedRequest, result: Generation, token_id: int | None) -> dict[str, Any]:
    """TGI's last event: the full text (``return_full_text`` honoured) and the details."""
    task = request.tasks[0]
    return {
        "token": {"id": token_id, "text": "", "special": True},
        "generated_text": (task.text or "") + result.text if request.return_full_text else result.text,
        "details": {"finish_reason": result.finish_reason, "generated_tokens": result.completion_tokens,
                    "prompt_tokens": result.prompt_tokens, "seed": task.sampling.seed},
    }


class ChatStream:
    """The ``chat.completion.chunk`` objects of one streamed chat answer (one id and timestamp for all)."""

    def __init__(self, request: ParsedRequest, model_name: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = request.model or model_name

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}

    def first(self) -> dict[str, Any]:
        return self.chunk({"role": "assistant", "content": ""})

    def piece(self, text: str) -> dict[str, Any]:
        return self.chunk({"content": text})

    def last(self, result: Generation) -> dict[str, Any]:
        return self.chunk({}, result.finish_reason, usage={
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens})
