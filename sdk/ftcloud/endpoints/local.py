"""Local endpoints: the image's ``serve`` entrypoint as a detached process on this machine.

``deploy --backend local JOB|GROUP:VERSION`` starts ``python -m ftcloud_train serve`` with the
same environment contract SageMaker gives the container, waits until ``GET /ping`` answers 200
and records the endpoint. Each endpoint lives in ``$FTCLOUD_HOME/endpoints/<name>/``::

    endpoint.json   name, target, pid (+ its start time), port, url, model dir, created (atomic writes)
    server.log      the server's stdout and stderr
    ml/model        a symlink to the job's model directory (FTCLOUD_ML_ROOT=ml, as /opt/ml on SageMaker)

The server runs in its own session (Ctrl-C in the deploying terminal does not stop it);
``undeploy`` sends SIGTERM to its process group, waits up to 30 s (SageMaker's window), then
SIGKILL, and removes the endpoint directory. The job's files and the registry are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftcloud.config import ftcloud_home
from ftcloud.contract import (
    CUSTOM_ATTRIBUTES_HEADER,
    MAX_REQUEST_BYTES,
    ROOT_ENV,
    SERVE_HOST_ENV,
    SERVE_PORT_ENV,
    ContainerPaths,
)
from ftcloud.endpoints.base import (
    DeployError,
    EndpointNotFoundError,
    Endpoints,
    EndpointStatus,
    Progress,
    adapter_attribute,
    check_endpoint_name,
    default_endpoint_name,
    iter_stream_text,
    parse_target,
)
from ftcloud.errors import FtcloudError, JobNotFoundError, UsageError

#: The serving entrypoint: the same module and argument the image's ``serve`` runs.
SERVE_COMMAND = ("-m", "ftcloud_train", "serve")
LOCAL_HOST = "127.0.0.1"
#: Seconds ``undeploy`` waits after SIGTERM before SIGKILL (SageMaker's stop window is 30 s too).
STOP_GRACE_S = 30.0
DEFAULT_DEPLOY_TIMEOUT_S = 600.0
DEFAULT_INVOKE_TIMEOUT_S = 60.0
LOG_TAIL_LINES = 20


def endpoints_root() -> Path:
    return ftcloud_home() / "endpoints"


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)


def free_port(host: str = LOCAL_HOST) -> int:
    """A port nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (``/proc/PID/stat`` field 22), to tell a recycled pid
    from our server; None where /proc does not exist (macOS)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int | None, start_time: str | None = None) -> bool:
    """True while ``pid`` runs (not a zombie) and, when known, is still the process we started."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    if state == "Z":
        return False
    return start_time is None or process_start_time(pid) == start_time


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    tail = text.rstrip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(empty log)"


def ping(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of ``GET url/ping`` (None when nothing answers)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


class EndpointInvokeError(FtcloudError):
    """The server answered an invocation with an error status."""

    def __init__(self, message: str, *, status: int, body: str, hint: str | None = None):
        self.status = status
        self.body = body
        super().__init__(message, hint=hint)


class LocalEndpoints(Endpoints):
    name = "local"

    def __init__(self, root: Path | None = None, python: str | None = None, jobs: Any = None,
                 registry: Any = None, sleep: Any = time.sleep):
        self.root = Path(root) if root else endpoints_root()
        self.python = python or sys.executable
        self._jobs = jobs
        self._registry = registry
        self._sleep = sleep

    def describe_target(self) -> str:
        return f"endpoint store {self.root}"

    @property
    def jobs(self) -> Any:
        if self._jobs is None:
            from ftcloud.backends.local import LocalBackend

            self._jobs = LocalBackend()
        return self._jobs

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from ftcloud.endpoints.registry_link import local_registry

            self._registry = local_registry()
        return self._registry

    def endpoint_dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise EndpointNotFoundError(f"'{name}' is not an endpoint name.")
        return self.root / name

    # ------------------------------------------------------------------ what to serve
    def resolve_model_dir(self, target: str) -> tuple[Path, dict[str, str], dict[str, Any]]:
        """(model directory, serving environment, facts for the record) for ``target``: a Completed
        local job, or an Approved local registry version."""
        parsed = parse_target(target)
        if parsed.kind == "name" and self.jobs.has_job(parsed.ref):
            job = self.jobs.status(parsed.ref)
            if job.status != "Completed":
                raise UsageError(
                    f"Job '{parsed.ref}' is {job.status}; only a Completed job has a model to serve.",
                    hint=f"Wait for it: 'ftcloud status {parsed.ref}'.",
                )
            model_dir = Path(job.artifacts or ContainerPaths(Path(job.location or "") / "ml").model_dir)
            return _checked_model_dir(model_dir, f"job {parsed.ref}"), {}, {"job": parsed.ref}
        from ftcloud.endpoints.registry_link import approved_version

        version = approved_version(self.registry, target, job_checked=parsed.kind == "name")
        model_dir = Path(str(version.artifact)).expanduser()
        facts = {"version": version.ref, "job": (version.lineage or {}).get("training_job")}
        # The serving environment recorded with the version (e.g. FTCLOUD_BASE_MODEL) applies here too.
        return _checked_model_dir(model_dir, f"registry version {version.ref}"), dict(version.environment or {}), facts

    # ------------------------------------------------------------------ deploy
    def deploy(
        self,
        target: str,
        name: str | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
        progress: Progress | None = None,
        dry_run: bool = False,
        env: dict[str, str] | None = None,
        port: int | None = None,
        **options: Any,
    ) -> EndpointStatus:
        """Start the server for ``target``; with ``wait`` block until ``/ping`` answers 200.

        Options that only SageMaker understands (instance type, scaling, ...) are refused here,
        so a pipeline does not silently get something else than it asked for."""
        # network_isolation / vpc are tri-state: an explicit False asks for something too.
        tri_state = {"network_isolation", "vpc"}
        unsupported = sorted(
            k for k, v in options.items()
            if v not in (None, False, (), [], {}) or (k in tri_state and v is False)
        )
        if unsupported:
            raise UsageError(
                f"the local backend does not use {', '.join(unsupported)}: these are SageMaker settings.",
                hint="Drop them, or deploy with --backend sagemaker.",
            )
        model_dir, version_env, facts = self.resolve_model_dir(target)
        name = check_endpoint_name(name or default_endpoint_name(parse_target(target)))
        endpoint_dir = self.endpoint_dir(name)
        if (endpoint_dir / "endpoint.json").exists():
            current = self.describe(name)
            if current.status != "Failed":
                raise UsageError(
                    f"A local endpoint named '{name}' already exists ({current.status}, {current.url}).",
                    hint=f"Undeploy it first ('ftcloud undeploy {name} --backend local') or pass another --name.",
                )
            self._remove(endpoint_dir)  # a dead one: its name is free again
        port = int(port or free_port())
        url = f"http://{LOCAL_HOST}:{port}"
        command = [self.python, *SERVE_COMMAND]
        server_env = {
            ROOT_ENV: str(endpoint_dir / "ml"),
            SERVE_PORT_ENV: str(port),
            SERVE_HOST_ENV: LOCAL_HOST,
            "PYTHONUNBUFFERED": "1",
            **version_env,
            **(env or {}),
        }
        status = EndpointStatus(
            name=name, backend=self.name, status="Creating", target=target, model=str(model_dir), url=url,
            instance_type="local", instance_count=1, port=port, log=str(endpoint_dir / "server.log"),
        )
        if dry_run:
            status.status = "DryRun"
            status.requests = [{"command": command, "env": server_env, "model_dir": str(model_dir), "url": url}]
            return status

        endpoint_dir.mkdir(parents=True, exist_ok=True)
        proc: subprocess.Popen | None = None
        try:
            paths = ContainerPaths(endpoint_dir / "ml")
            paths.root.mkdir(exist_ok=True)
            paths.model_dir.symlink_to(model_dir.resolve(), target_is_directory=True)
            with open(endpoint_dir / "server.log", "ab") as log:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=str(endpoint_dir),
                    env={**os.environ, **server_env},
                    start_new_session=True,  # Ctrl-C in the deploying terminal must not stop the server
                )
            created = time.time()
            record = {
                "name": name, "target": target, "model_dir": str(model_dir), "url": url, "port": port,
                "pid": proc.pid, "pid_start_time": process_start_time(proc.pid), "created": created,
                "status": "Creating", "command": command, "env": {k: v for k, v in server_env.items()},
                **{k: v for k, v in facts.items() if v},
            }
            write_json_atomic(endpoint_dir / "endpoint.json", record)
            status.pid, status.created = proc.pid, created
            if not wait:
                return status
            self._wait_ready(endpoint_dir, record, proc, timeout or DEFAULT_DEPLOY_TIMEOUT_S, progress)
        except BaseException:
            # Nothing half-made stays behind: no server, no record (Ctrl-C included).
            if proc is not None:
                self._stop_process({"pid": proc.pid}, grace=5.0)
            self._remove(endpoint_dir)
            raise
        record["status"] = "InService"
        record["ready_at"] = time.time()
        write_json_atomic(endpoint_dir / "endpoint.json", record)
        return self.describe(name)

    def _wait_ready(self, endpoint_dir: Path, record: dict, proc: subprocess.Popen, timeout: float,
                    progress: Progress | None) -> None:
        started = time.monotonic()
        last_note = -1.0
        log = endpoint_dir / "server.log"
        while True:
            code = ping(record["url"], timeout=2.0)
            if code == 200:
                if progress:
                    progress(f"{record['name']}: InService at {record['url']} "
                             f"({time.monotonic() - started:.1f} s)")
                return
            exit_code = proc.poll()
            if exit_code is not None:
                raise DeployError(
                    f"The local server for '{record['name']}' exited with status {exit_code} before it "
                    f"answered /ping. Last lines of {log}:\n{log_tail(log)}",
                    hint="Fix the cause shown above and deploy again; nothing was left running.",
                )
            elapsed = time.monotonic() - started
            if elapsed >= timeout:
                raise DeployError(
                    f"The local server for '{record['name']}' did not answer /ping with 200 within "
                    f"{timeout:.0f} s (last answer: {code or 'no connection'}). Last lines of {log}:\n"
                    f"{log_tail(log)}",
                    hint="A large model loads slowly: pass a longer --timeout. The server was stopped.",
                )
            if progress and elapsed - last_note >= 5.0:
                last_note = elapsed
                what = "loading the model" if code == 503 else "starting"
                progress(f"{record['name']}: {what} ({elapsed:.0f} s, pid {record['pid']}, log {log})")
            self._sleep(0.25)

    # ------------------------------------------------------------------ state
    def describe(self, name: str) -> EndpointStatus:
        endpoint_dir = self.endpoint_dir(name)
        record = read_record(endpoint_dir)
        if not record:
            raise EndpointNotFoundError(
                f"No local endpoint named '{name}' in {self.root}.",
                hint="List them with 'ftcloud endpoints --backend local'.",
            )
        status = EndpointStatus(
            name=name, backend=self.name, status=record.get("status", "Creating"), target=record.get("target", ""),
            model=record.get("model_dir"), url=record.get("url"), created=record.get("created"),
            updated=record.get("ready_at"), instance_type="local", instance_count=1, pid=record.get("pid"),
            port=record.get("port"), log=str(endpoint_dir / "server.log"),
        )
        if not process_alive(record.get("pid"), record.get("pid_start_time")):
            status.status = "Failed"
            status.failure_reason = (
                f"The server process (pid {record.get('pid')}) is not running. Last lines of {status.log}:\n"
                f"{log_tail(endpoint_dir / 'server.log', 5)}\nDeploy again to restart it "
                f"('ftcloud undeploy {name}' removes the record)."
            )
            return status
        code = ping(record["url"], timeout=2.0)
        if code == 200:
            status.status = "InService"
        elif record.get("status") == "InService":
            status.status = "Unhealthy"
            status.failure_reason = f"/ping answered {code or 'nothing'}; see {status.log}."
        return status

    def list(self) -> list[EndpointStatus]:
        if not self.root.is_dir():
            return []
        rows = [self.describe(p.name) for p in self.root.iterdir() if (p / "endpoint.json").is_file()]
        return sorted(rows, key=lambda s: s.created or 0, reverse=True)

    # ------------------------------------------------------------------ undeploy
    def undeploy(self, name: str) -> EndpointStatus:
        """SIGTERM the server's process group, wait (SIGKILL after 30 s), remove the endpoint."""
        status = self.describe(name)
        endpoint_dir = self.endpoint_dir(name)
        self._stop_process(read_record(endpoint_dir), grace=STOP_GRACE_S)
        self._remove(endpoint_dir)
        status.status = "Deleted"
        return status

    def _stop_process(self, record: dict[str, Any], grace: float) -> None:
        pid = record.get("pid")
        if not process_alive(pid, record.get("pid_start_time")):
            if pid:
                _reap(pid)
            return
        try:
            os.killpg(pid, signal.SIGTERM)  # the server leads its own session: its group is its pid
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not process_alive(pid, record.get("pid_start_time")):
                _reap(pid)
                return
            time.sleep(0.1)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _reap(pid)

    @staticmethod
    def _remove(endpoint_dir: Path) -> None:
        # rmtree unlinks the ml/model symlink; it never descends into the job's model directory.
        shutil.rmtree(endpoint_dir, ignore_errors=True)

    # ------------------------------------------------------------------ invoke
    def invoke(self, name: str, payload: dict[str, Any], *, adapter: str | None = None, stream: bool = False,
               timeout: float = DEFAULT_INVOKE_TIMEOUT_S) -> Any:
        """POST ``payload`` to ``/invocations``; the adapter travels in SageMaker's CustomAttributes header."""
        import urllib.error
        import urllib.request

        record = read_record(self.endpoint_dir(name))
        if not record:
            raise EndpointNotFoundError(
                f"No local endpoint named '{name}' in {self.root}.",
                hint="List them with 'ftcloud endpoints --backend local'.",
            )
        if not process_alive(record.get("pid"), record.get("pid_start_time")):
            raise DeployError(
                f"Local endpoint '{name}' is not running (pid {record.get('pid')} exited).",
                hint=f"See {self.endpoint_dir(name) / 'server.log'}; undeploy and deploy it again.",
            )
        body = json.dumps(payload).encode("utf-8")
        if len(body) > MAX_REQUEST_BYTES:
            raise UsageError(f"the request is {len(body)} bytes; endpoints accept at most {MAX_REQUEST_BYTES}.")
        headers = {"Content-Type": "application/json",
                   "Accept": "text/event-stream" if stream else "application/json"}
        attribute = adapter_attribute(adapter)
        if attribute:
            headers[CUSTOM_ATTRIBUTES_HEADER] = attribute
        request = urllib.request.Request(f"{record['url']}/invocations", data=body, headers=headers, method="POST")
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            raise EndpointInvokeError(
                f"Endpoint '{name}' answered {exc.code}: {_error_message(text)}",
                status=exc.code, body=text,
                hint="429/503: the server is saturated, retry later; 4xx: fix the request.",
            ) from None
        except OSError as exc:
            raise FtcloudError(f"Cannot reach local endpoint '{name}' at {record['url']}: {exc}.",
                               hint=f"Check 'ftcloud endpoints --backend local' and {record.get('url')}/ping.") from None
        if stream:
            return _stream(response)
        with response:
            return json.loads(response.read().decode("utf-8"))


def _stream(response: Any) -> Iterator[str]:
    with response:
        if "text/event-stream" not in (response.headers.get("Content-Type") or ""):
            from ftcloud.endpoints.base import generated_text

            yield generated_text(json.loads(response.read().decode("utf-8")))
            return
        yield from iter_stream_text(iter(lambda: response.read1(65536), b""))


def _error_message(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    if isinstance(data, dict):
        for key in ("error", "message", "detail"):
            if key in data:
                value = data[key]
                return value if isinstance(value, str) else json.dumps(value)[:500]
    return text.strip()[:500]


def read_record(endpoint_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((endpoint_dir / "endpoint.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def _reap(pid: int) -> None:
    """Collect the exit status if the server is our child (a deploy in this process), so no zombie stays."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _checked_model_dir(model_dir: Path, what: str) -> Path:
    if not model_dir.is_dir() or not any(model_dir.iterdir()):
        raise UsageError(
            f"{what}: the model directory {model_dir} is missing or empty.",
            hint="Deploy a job that completed and saved its model (ftcloud status JOB shows its artifacts).",
        )
    return model_dir


__all__ = ["JobNotFoundError", "LocalEndpoints", "endpoints_root"]
