"""``python -m ftcloud_train serve``: SageMaker's serving contract over FastAPI + uvicorn, one process.

Start-up order matters on SageMaker (connections must be accepted within ~250 ms, ``/ping`` must
answer within 2 s): the port is bound first, with nothing heavier than the standard library
imported; then the web stack starts and ``/ping`` answers 503 while a background thread imports
torch and loads the model; once loaded, ``/ping`` answers 200. SIGTERM: uvicorn stops accepting,
the requests in flight finish (the batcher drains its queue), the process exits 0.

Routes: ``GET /ping``, ``POST /invocations`` (see :mod:`.protocol` for shapes), ``GET /stats``
(latency, batch sizes, queue depth, cache hits/misses; SageMaker routes only /ping and
/invocations, so this is for local use; the same summary is logged at shutdown).

Every log line is one JSON object on stdout (``{"ts", "level", "event", ...}``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import traceback
from typing import Any

from ftcloud_train.serving.settings import ServeSettings, SettingsError

log = logging.getLogger("ftcloud.serve")

#: SageMaker sends SIGKILL 30 s after SIGTERM: finish the requests in flight before that.
GRACEFUL_SHUTDOWN_S = 25


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(out, default=str)


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # one structured line per request instead


def event(message: str, level: int = logging.INFO, /, *, exc_info: bool = False, **fields: Any) -> None:
    log.log(level, message, extra={"fields": fields}, exc_info=exc_info)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it Nagle + delayed ACK add ~40 ms to every response written in two parts.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftcloud_train serve",
                                     description="Serve model/ over SageMaker's /ping + /invocations contract.")
    parser.add_argument("--port", type=int, default=None, help="default: $SAGEMAKER_BIND_TO_PORT, else 8080")
    parser.add_argument("--host", default=None, help="default: $FTCLOUD_SERVE_HOST, else 0.0.0.0")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = ServeSettings.from_env(port=args.port, host=args.host)
    except SettingsError as exc:
        event("bad setting", logging.ERROR, error=str(exc))
        print(f"[ftcloud] error: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        print(f"[ftcloud] error: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr, flush=True)
        return 1
    event("listening", host=settings.host, port=sock.getsockname()[1], model_dir=str(settings.model_dir))

    # Fail fast, before the web stack, on a model dir that cannot be served (file checks only).
    from ftcloud_train.serving.runner import Artifact, ModelLoadError

    try:
        Artifact.inspect(settings.model_dir, settings.ml_root, settings.base_model)
    except ModelLoadError as exc:
        event("no model to serve", logging.ERROR, error=str(exc))
        print(f"[ftcloud] error: {exc}", file=sys.stderr, flush=True)
        sock.close()
        return 1

    import uvicorn

    from ftcloud_train.serving.app import ServerState, create_app

    state = ServerState(settings)
    config = uvicorn.Config(create_app(state), log_config=None, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    server = uvicorn.Server(config)
    state.on_fatal = lambda: setattr(server, "should_exit", True)
    # uvicorn re-raises the signal it caught once it has shut down; with this no-op handler in place
    # that re-raise returns, so a clean SIGTERM stop exits 0 instead of dying by the signal.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run(sockets=[sock])
    return 1 if state.load_error else 0
