"""The HTTP routes and the state they share (loaded model, batcher, cache, counters).

Imported by :mod:`.server` only after the port is bound (FastAPI, pydantic and, in the load thread,
torch come after). The routes stay thin: parsing is :mod:`.protocol`, batching :mod:`.batcher`,
the model :mod:`.runner`, the cache :mod:`.cache`.

Streaming (``"stream": true``): the answer is server-sent events over a ``StreamingResponse``, sent
chunked as the pieces come. SageMaker's InvokeEndpointWithResponseStream requires exactly that: the
container must stream its HTTP response body (chunked transfer encoding); SageMaker forwards the bytes
to the caller as ``PayloadPart`` events, cut at arbitrary offsets (the SDK's ``iter_stream_text``
re-joins them). A stream generates on its own (:meth:`.runner.ModelRunner.stream`, not in a batch),
beside the batches, holds one slot of the queue bound (a full server answers 429 before the stream
starts), and is never cached. Validation, the adapter and prompt checks all happen before the 200.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ftcloud.contract import CUSTOM_ATTRIBUTES_HEADER, MAX_REQUEST_BYTES
from ftcloud_train.serving.batcher import DynamicBatcher, QueueFull, RequestTimeout, ShuttingDown
from ftcloud_train.serving.cache import ResultCache
from ftcloud_train.serving.protocol import (
    SSE_DONE,
    SSE_MEDIA_TYPE,
    ChatStream,
    Generation,
    ParsedRequest,
    RequestError,
    chat_response,
    generate_response,
    generate_stream_event,
    generate_stream_final,
    parse_request,
    sse,
)
from ftcloud_train.serving.server import event
from ftcloud_train.serving.settings import ServeSettings

#: Seconds a client is told to wait: while the model loads, and when the queue is full.
RETRY_AFTER_LOADING_S = 5
RETRY_AFTER_BUSY_S = 1
#: A body over the limit is read and dropped up to this size, so the client can read the 413.
MAX_DRAIN_BYTES = 8 * MAX_REQUEST_BYTES


def _percentiles(values) -> dict[str, float | None]:
    data = sorted(values)
    if not data:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}

    def pick(q: float) -> float:
        return round(data[min(len(data) - 1, int(q * len(data)))], 3)

    return {"count": len(data), "p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": round(data[-1], 3)}


class ServerState:
    """Everything the routes share: settings, the runner once loaded, batcher, cache, counters."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.runner = None
        self.batcher = None
        self.cache = ResultCache(settings.cache_size, settings.cache_ttl_s)
        self.load_error: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_fatal = lambda: None
        self.started = time.time()
        self.loaded_at: float | None = None
        self.latencies_ms: collections.deque = collections.deque(maxlen=2000)
        self.statuses: collections.Counter = collections.Counter()

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    # -- loading (background thread) ---------------------------------------------------
    def load(self) -> None:
        s = self.settings
        started = time.perf_counter()
        try:
            from ftcloud_train.serving.runner import Artifact, ModelRunner, resolve_load_in

            artifact = Artifact.inspect(s.model_dir, s.ml_root, s.base_model)
            load_in = resolve_load_in(s.load_in, artifact)
            event("loading model", weights=artifact.weights, weights_from=artifact.base_source,
                  adapters=list(artifact.adapters), load_in=load_in)
            runner = ModelRunner.load(s.model_dir, s.ml_root, s.base_model, load_in, artifact=artifact)
        except Exception as exc:  # noqa: BLE001 - a model that cannot load ends the server, loudly
            self.load_error = f"{type(exc).__name__}: {exc}"
            event("model load failed", logging.ERROR, exc_info=True, error=self.load_error)
            self.loop.call_soon_threadsafe(self.on_fatal)
            return
        self.loop.call_soon_threadsafe(self._ready, runner, time.perf_counter() - started)

    def _ready(self, runner, seconds: float) -> None:
        s = self.settings
        batcher = DynamicBatcher(runner.generate, runner.batch_key, s.max_batch_size, s.max_wait_ms,
                                 s.max_queue, s.request_timeout_s)
        batcher.start()
        self.runner, self.batcher, self.loaded_at = runner, batcher, time.time()
        event("model loaded", seconds=round(seconds, 2), **runner.describe())

    async def shutdown(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        event("stopped", **self.summary())

    def summary(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "load_error": self.load_error,
            "uptime_s": round(time.time() - self.started, 1),
            "model": self.runner.describe() if self.runner else None,
            "requests": dict(self.statuses),
            "latency_ms": _percentiles(self.latencies_ms),
            "queue": self.batcher.summary() if self.batcher else None,
            "cache": self.cache.stats(),
            "generate_calls": self.runner.generate_calls if self.runner else 0,
        }


async def read_body(request, limit: int = MAX_REQUEST_BYTES) -> bytes:
    too_big = RequestError(413, f"request body over {limit} bytes (SageMaker's InvokeEndpoint limit); "
                                f"send fewer or shorter prompts per request")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_DRAIN_BYTES:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_DRAIN_BYTES:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise too_big
    return b"".join(chunks)


def create_app(state: ServerState):
    @asynccontextmanager
    async def lifespan(app):
        state.loop = asyncio.get_running_loop()
        threading.Thread(target=state.load, name="ftcloud-load", daemon=True).start()
        yield
        await state.shutdown()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def error(exc: RequestError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.get("/ping")
    async def ping():
        if state.ready:
            return Response(status_code=200)
        status = "failed" if state.load_error else "loading"
        return JSONResponse({"status": status, "error": state.load_error}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_LOADING_S)})

    @app.get("/stats")
    async def stats():
        return state.summary()

    async def answer(request: Request) -> tuple[Any, dict[str, Any]]:
        if not state.ready:
            raise RequestError(503, "the model is still loading; retry shortly (GET /ping answers 200 once loaded)",
                               retry_after=RETRY_AFTER_LOADING_S)
        body = await read_body(request)
        parsed = parse_request(body, request.headers.get(CUSTOM_ATTRIBUTES_HEADER))
        if parsed.stream:
            return await start_stream(parsed), {"prompts": 1, "adapter": parsed.tasks[0].adapter,
                                                "kind": parsed.kind, "stream": True}
        runner, cache = state.runner, state.cache
        results: list[Any] = [None] * len(parsed.tasks)
        todo, keys = [], []
        for i, task in enumerate(parsed.tasks):
            adapter = runner.resolve_adapter(task.adapter, "adapter_id" if parsed.kind == "chat" else "parameters.adapter_id")
            key = None
            if task.sampling.deterministic and cache.enabled:
                key = cache.key(runner.version, str(adapter), task.canonical())
                results[i] = cache.get(key)
            if results[i] is None:
                todo.append(i)
                keys.append(key)
        hits = len(parsed.tasks) - len(todo)
        if todo:
            prepared = await asyncio.to_thread(lambda: [runner.prepare(parsed.tasks[i]) for i in todo])
            try:
                generated = await state.batcher.submit_many(prepared)
            except QueueFull as exc:
                raise RequestError(429, f"server busy: {exc}; retry shortly", retry_after=RETRY_AFTER_BUSY_S) from None
            except RequestTimeout as exc:
                raise RequestError(503, f"request timed out: {exc}", retry_after=RETRY_AFTER_BUSY_S) from None
            except ShuttingDown as exc:
                raise RequestError(503, str(exc), retry_after=RETRY_AFTER_LOADING_S) from None
            for i, key, result in zip(todo, keys, generated, strict=True):
                results[i] = result
                if key is not None:
                    cache.put(key, result)
        if parsed.kind == "chat":
            payload = chat_response(parsed, results[0], runner.name)
        else:
            payload = generate_response(parsed, results)
        return payload, {"prompts": len(parsed.tasks), "cache_hits": hits,
                         "adapter": parsed.tasks[0].adapter, "kind": parsed.kind}

    async def start_stream(parsed: ParsedRequest) -> StreamingResponse:
        """Check everything a non-streamed request checks, take a queue slot, start generating; the
        events follow in the response body. Errors raised here still get their own HTTP status."""
        runner, task = state.runner, parsed.tasks[0]
        runner.resolve_adapter(task.adapter, "adapter_id" if parsed.kind == "chat" else "parameters.adapter_id")
        prepared = await asyncio.to_thread(runner.prepare, task)
        try:
            state.batcher.reserve()
        except QueueFull as exc:
            raise RequestError(429, f"server busy: {exc}; retry shortly", retry_after=RETRY_AFTER_BUSY_S) from None
        except ShuttingDown as exc:
            raise RequestError(503, str(exc), retry_after=RETRY_AFTER_LOADING_S) from None
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def generate() -> None:
            # Started here, not when the body is first read: the slot is released even if it never is.
            try:
                for item in runner.stream(prepared, state.settings.request_timeout_s, cancel):
                    loop.call_soon_threadsafe(items.put_nowait, item)
            except BaseException as exc:  # noqa: BLE001 - handed to the response, which reports it
                loop.call_soon_threadsafe(items.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(state.batcher.release)

        threading.Thread(target=generate, name="ftcloud-stream-reader", daemon=True).start()
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream_events(parsed, items, cancel), media_type=SSE_MEDIA_TYPE, headers=headers)

    async def stream_events(parsed: ParsedRequest, items: asyncio.Queue, cancel: threading.Event):
        started = time.perf_counter()
        chat = ChatStream(parsed, state.runner.name) if parsed.kind == "chat" else None
        fields: dict[str, Any] = {"kind": parsed.kind, "pieces": 0}
        token_id = None
        try:
            if chat is not None:
                yield sse(chat.first())
            while True:
                item = await items.get()
                if isinstance(item, Generation):
                    fields.update(finish_reason=item.finish_reason, completion_tokens=item.completion_tokens)
                    if chat is not None:
                        yield sse(chat.last(item))
                        yield SSE_DONE
                    else:
                        yield sse(generate_stream_final(parsed, item, token_id))
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, TimeoutError):
                        err = {"error": f"request timed out: {item}", "status": 503}
                    else:
                        event("stream crashed", logging.ERROR, exc_info=item)
                        err = {"error": f"internal error: {type(item).__name__}: {item}", "status": 500}
                    fields["error"] = err["error"]
                    yield sse(err)
                    return
                if fields["pieces"] == 0:
                    fields["first_piece_ms"] = round((time.perf_counter() - started) * 1000, 2)
                fields["pieces"] += 1
                token_id = item.token_id
                yield sse(chat.piece(item.text) if chat is not None else generate_stream_event(item.text, token_id))
        finally:
            cancel.set()  # client gone or stream over: the model stops at its next token
            event("stream finished", seconds=round(time.perf_counter() - started, 3), **fields)

    @app.post("/invocations")
    async def invocations(request: Request):
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        try:
            payload, fields = await answer(request)
            response = payload if isinstance(payload, Response) else JSONResponse(payload)
        except RequestError as exc:
            response = error(exc)
            fields = {"error": exc.message}
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
            event("invocation crashed", logging.ERROR, exc_info=True)
            response = JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}", "status": 500},
                                    status_code=500)
            fields = {"error": f"{type(exc).__name__}: {exc}"}
        ms = (time.perf_counter() - started) * 1000
        state.statuses[str(response.status_code)] += 1
        if response.status_code == 200:
            state.latencies_ms.append(ms)
        event("invocation", status=response.status_code, latency_ms=round(ms, 2),
              queue_depth=state.batcher.depth if state.batcher else None, **fields)
        return response

    return app
