"""The local backend: runs the training entrypoint as a local process, no Docker, no AWS.

Each job gets a directory in the local job store (``$FTCLOUD_HOME/jobs/<name>``)::

    job.json          the job spec as launched (written once)
    state.json        status, history, pids, exit code (written by the runner)
    ml/               the SageMaker-style tree the entrypoint reads (FTCLOUD_ML_ROOT)
    logs/algo-1.log   output lines as JSON: {"t": epoch ms, "m": text}
    stop_requested    present once ``ftcloud stop`` ran
    runner.pid        pid of the runner, written by the process that spawned it
    job.lock          flock()ed by whoever may write ``ml/``: one runner and its trainer

A small detached runner (:mod:`ftcloud.backends.local_runner`) owns the training process, so
``jobs``, ``status``, ``logs`` and ``stop`` work from any later invocation. ``stop`` sends
SIGTERM, which the entrypoint answers by writing a checkpoint.

States (``status`` / ``secondary_status``) and who moves them::

    from                event                                         to                          written by
    ------------------  --------------------------------------------  --------------------------  ----------
    -                   launch / resume (lock taken)                  InProgress / Starting       backend
    Starting            stop_requested seen before the trainer runs   Stopped (trainer never ran) runner
    Starting            trainer started                               InProgress / Training       runner
    Training            trainer exits 0 (even after a stop request)   Completed                   runner
    Training            trainer exits 143 (EXIT_STOPPED) or -SIGTERM  Stopped                     runner
    Training            any other exit, stop requested or not         Failed (+ container reason) runner
    any                 the runner itself raises                      Failed ("local runner       runner
                                                                      failed: ...")
    not terminal        runner gone, no final state recorded          Failed ("runner exited      status()
                                                                      unexpectedly")
    Stopped / Failed    resume while job.lock is held                 refused (UsageError)        backend

Two guarantees hold the table true:

* ``stop`` writes ``stop_requested`` first and signals the runner only once the runner has put
  its pid in ``state.json`` (after installing its SIGTERM handler); the runner reads
  ``stop_requested`` after that, so a stop at any moment takes effect.
* ``job.lock`` is taken by the backend before it spawns a runner and inherited by the runner and
  the trainer, so it is held while either lives. On Linux the trainer also gets SIGTERM when its
  runner dies (``PR_SET_PDEATHSIG``) and exits instead of training unsupervised; its output pipe
  died with the runner, so ``resume`` continues from the last checkpoint it completed, not from
  one taken at that moment. Elsewhere (macOS) it may outlive a killed runner; the lock then keeps
  ``resume`` out until it exits.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ftcloud.backends.base import Backend, JobStatus, LaunchResult, LogCursor, LogEvent, StatusTransition
from ftcloud.config import ftcloud_home
from ftcloud.contract import ContainerPaths, parse_metric_line
from ftcloud.errors import FtcloudError, JobNotFoundError, UsageError
from ftcloud.job import new_job_name
from ftcloud.spec import SpecError

HOST = "algo-1"
LOCK_FILE = "job.lock"


def jobs_root() -> Path:
    return ftcloud_home() / "jobs"


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


class JobLockedError(UsageError):
    """Another runner or trainer holds the job's lock: starting one more would share ``ml/``."""


def try_lock(path: Path) -> int | None:
    """Take an exclusive lock on ``path`` without waiting: its (inheritable) file descriptor, or
    None when another process holds it. The lock lives as long as any process holding a copy of
    the descriptor, so handing it to a child keeps it held until the last of them exits."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        return None
    return fd


def lock_job_dir(job_dir: Path) -> int:
    """Take the job's exclusive lock without waiting (see :func:`try_lock`); passed to the runner
    and on to the trainer, it stays held until the last of them exits."""
    fd = try_lock(job_dir / LOCK_FILE)
    if fd is None:
        state = read_json(job_dir / "state.json")
        holders = ", ".join(
            f"{what} pid {state[key]}" for key, what in (("runner_pid", "runner"), ("child_pid", "trainer"))
            if state.get(key) and _job_process_running(job_dir, int(state[key]))
        )
        raise JobLockedError(
            f"Job '{job_dir.name}' is still held by a running process ({holders or 'pid unknown'}): "
            f"{job_dir / LOCK_FILE} is locked, and a second trainer would write the same checkpoints.",
            hint=f"Stop it with 'ftcloud stop {job_dir.name}', or wait for that process to exit, then retry.",
        )
    return fd


class LocalBackend(Backend):
    name = "local"
    poll_seconds = 1.0

    def __init__(self, root: Path | None = None, python: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.root = Path(root) if root else jobs_root()
        self.python = python or sys.executable

    def describe_target(self) -> str:
        return f"job store {self.root}"

    def job_dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise JobNotFoundError(f"'{name}' is not a job name.")
        return self.root / name

    # ------------------------------------------------------------------ launch
    def launch(self, spec: Any, *, dry_run: bool = False) -> LaunchResult:
        name = spec.name or new_job_name(spec.training.technique)
        notes: list[str] = []
        if spec.compute.instance_count != 1:
            raise SpecError(
                "the local backend runs one host; 'compute.instance_count' > 1 needs the sagemaker backend.",
                "compute.instance_count",
                "job spec",
            )
        if spec.networking.network_isolation:
            notes.append("networking.network_isolation applies to SageMaker only; the local run has your network.")
        channels = {"train": spec.data.train, "validation": spec.data.validation, "model": spec.data.model}
        if not spec.data.train:
            raise SpecError("no training data: set data.train in the job file or pass --data PATH.", "data.train", "job spec")
        for channel, value in channels.items():
            if value and value.startswith("s3://"):
                raise SpecError(
                    f"data.{channel} is an S3 URI ({value}); the local backend reads local files. "
                    "Download it first, or use the sagemaker backend.",
                    f"data.{channel}",
                    "job spec",
                )
            if value and not Path(value).expanduser().exists():
                raise SpecError(f"data.{channel}: no such file or directory: {value}", f"data.{channel}", "job spec")
        hyperparameters = spec.training.to_hyperparameters()
        model = spec.training.model
        if spec.data.model:
            hyperparameters["model"] = ""  # the entrypoint reads the 'model' channel
        elif model and Path(model).expanduser().exists():
            hyperparameters["model"] = str(Path(model).expanduser().resolve())
        elif not model:
            raise SpecError(
                "no base model: set training.model (a Hugging Face id or a local path) or data.model.",
                "training.model",
                "job spec",
            )
        job_dir = self.job_dir(name)
        result = LaunchResult(name=name, backend=self.name, dry_run=dry_run, location=str(job_dir), notes=notes)
        if dry_run:
            result.request = {
                "hyperparameters": hyperparameters,
                "channels": {k: str(Path(v).expanduser().resolve()) for k, v in channels.items() if v},
                "job_dir": str(job_dir),
            }
            return result
        try:
            job_dir.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise UsageError(
                f"A local job named '{name}' already exists ({job_dir}).",
                hint="Choose another --name, or leave the name empty to generate one.",
            ) from None
        try:
            self._prepare(job_dir, spec, name, channels, hyperparameters)
            self._spawn(job_dir, lock_job_dir(job_dir))
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)  # leave nothing half-made behind
            raise
        return result

    def _prepare(self, job_dir: Path, spec: Any, name: str, channels: dict, hyperparameters: dict) -> None:
        paths = ContainerPaths(job_dir / "ml")
        paths.config_dir.mkdir(parents=True)
        paths.ensure()
        (job_dir / "logs").mkdir()
        input_config = {}
        for channel, value in channels.items():
            if not value:
                continue
            _link_tree(Path(value).expanduser().resolve(), paths.channel(channel))
            input_config[channel] = {
                "ContentType": "application/jsonlines" if channel != "model" else "application/octet-stream",
                "TrainingInputMode": "File",
                "S3DistributionType": "FullyReplicated",
                "RecordWrapperType": "None",
            }
        write_json_atomic(paths.hyperparameters, hyperparameters)
        write_json_atomic(paths.resource_config, {"current_host": HOST, "hosts": [HOST]})
        write_json_atomic(paths.input_data_config, input_config)
        now = time.time()
        write_json_atomic(
            job_dir / "job.json",
            {"name": name, "backend": self.name, "created": now, "spec": spec.to_dict(), "python": self.python},
        )
        write_json_atomic(
            job_dir / "state.json",
            {
                "status": "InProgress",
                "secondary_status": "Starting",
                "history": [{"status": "Starting", "start": now, "message": "Preparing the local job directory"}],
            },
        )

    def _spawn(self, job_dir: Path, lock_fd: int) -> None:
        """Start the runner and hand it ``lock_fd`` (taken by :func:`lock_job_dir`); ours is closed."""
        spawn_detached(self.python, "ftcloud.backends.local_runner", job_dir, "runner", lock_fd)

    # ------------------------------------------------------------------ status
    def status(self, name: str) -> JobStatus:
        job_dir = self.job_dir(name)
        job = read_json(job_dir / "job.json")
        if not job:
            raise JobNotFoundError(
                f"No local job named '{name}' in {self.root}.",
                hint="List them with 'ftcloud jobs --backend local'.",
            )
        state = read_json(job_dir / "state.json")
        spec = job.get("spec", {})
        status = JobStatus(
            name=name,
            backend=self.name,
            status=state.get("status", "InProgress"),
            secondary_status=state.get("secondary_status", ""),
            failure_reason=state.get("failure_reason"),
            created=job.get("created"),
            started=state.get("started"),
            ended=state.get("ended"),
            history=[StatusTransition(**h) for h in state.get("history", [])],
            technique=spec.get("training", {}).get("technique"),
            model=spec.get("training", {}).get("model") or spec.get("data", {}).get("model"),
            artifacts=str(job_dir / "ml" / "model"),
            checkpoints=str(job_dir / "ml" / "checkpoints"),
            instance_type="local",
            instance_count=1,
            location=str(job_dir),
        )
        if status.started:
            status.training_seconds = int((status.ended or time.time()) - status.started)
        if not status.terminal and not self._runner_alive(job_dir):
            # Re-read: the runner may have finished between the two reads.
            state = read_json(job_dir / "state.json")
            if state.get("status") in ("Completed", "Failed", "Stopped"):
                return self.status(name)
            status.status = "Failed"
            status.secondary_status = "Failed"
            trainer = state.get("child_pid")
            still = (
                f" Its training process (pid {trainer}) is still exiting; resume waits for it."
                if trainer and _job_process_running(job_dir, int(trainer)) else ""
            )
            status.failure_reason = (
                "The local runner exited unexpectedly (killed, or the machine restarted) without recording "
                f"how training ended.{still} Continue from the last checkpoint with 'ftcloud resume {name}'; "
                f"see {job_dir / 'logs' / 'runner.log'}."
            )
        status.metrics = self._latest_metrics(job_dir)
        return status

    def _runner_alive(self, job_dir: Path) -> bool:
        try:
            pid = int((job_dir / "runner.pid").read_text())
        except (OSError, ValueError):
            # Written right after spawn; a job younger than a few seconds may not have it yet.
            return time.time() - (job_dir / "state.json").stat().st_mtime < 10
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        if _is_zombie(pid):  # exited, not yet reaped by the process that launched it
            return False
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists():  # guard against pid reuse (Linux)
            try:
                return str(job_dir).encode() in cmdline.read_bytes()
            except OSError:
                return False
        return True

    def _latest_metrics(self, job_dir: Path) -> dict[str, float]:
        latest: dict[str, float] = {}
        for event in self._read_events(job_dir, LogCursor()):
            parsed = parse_metric_line(event.message)
            if parsed:
                latest.update(parsed)
        return latest

    def list_jobs(self, limit: int = 20) -> list[JobStatus]:
        if not self.root.is_dir():
            return []
        names = [p.name for p in self.root.iterdir() if (p / "job.json").is_file()]
        created = {n: read_json(self.root / n / "job.json").get("created") or 0 for n in names}
        out = []
        for name in sorted(names, key=lambda n: created[n], reverse=True)[:limit]:
            try:
                out.append(self.status(name))
            except FtcloudError:
                continue
        return out

    # ------------------------------------------------------------------ logs
    def read_logs(self, name: str, cursor: LogCursor) -> list[LogEvent]:
        job_dir = self.job_dir(name)
        if not (job_dir / "job.json").is_file():
            raise JobNotFoundError(f"No local job named '{name}' in {self.root}.")
        return self._read_events(job_dir, cursor)

    def _read_events(self, job_dir: Path, cursor: LogCursor) -> list[LogEvent]:
        path = job_dir / "logs" / f"{HOST}.log"
        offset = int(cursor.tokens.get(HOST, 0))
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []  # only a partial line so far
        events = []
        for raw in data[: end + 1].splitlines():
            try:
                item = json.loads(raw)
                events.append(LogEvent(timestamp=int(item["t"]), host=HOST, message=str(item["m"])))
            except (ValueError, KeyError, TypeError):
                events.append(LogEvent(timestamp=0, host=HOST, message=raw.decode(errors="replace")))
        cursor.tokens[HOST] = offset + end + 1
        return events

    # ------------------------------------------------------------------ stop
    def stop(self, name: str) -> JobStatus:
        status = self.status(name)
        if status.terminal:
            return status
        job_dir = self.job_dir(name)
        # The file first: a runner that has not announced itself yet reads it before training.
        (job_dir / "stop_requested").write_text(str(time.time()))
        runner_pid = read_json(job_dir / "state.json").get("runner_pid")
        if runner_pid:  # announced only once its SIGTERM handler is installed
            try:
                os.kill(int(runner_pid), signal.SIGTERM)  # the runner forwards it to the training process
            except (OSError, ValueError):
                pass
        status.status = "Stopping"
        status.secondary_status = "Stopping"
        return status


    # ------------------------------------------------------------------ resume
    def resume(self, name: str) -> JobStatus:
        """Run a Stopped or Failed job again in its own directory: the entrypoint finds the
        newest complete checkpoint in ``ml/checkpoints`` and continues from there."""
        status = self.status(name)
        if status.status not in ("Stopped", "Failed"):
            raise UsageError(
                f"Job '{name}' is {status.status}; only Stopped or Failed jobs can be resumed.",
                hint=f"Follow it with 'ftcloud logs {name} --follow'." if not status.terminal else None,
            )
        job_dir = self.job_dir(name)
        # Before touching anything: a trainer that outlived its runner may still be writing ml/.
        lock_fd = lock_job_dir(job_dir)
        try:
            self._reset_for_resume(job_dir)
        except BaseException:
            os.close(lock_fd)
            raise
        self._spawn(job_dir, lock_fd)
        return self.status(name)

    def _reset_for_resume(self, job_dir: Path) -> None:
        paths = ContainerPaths(job_dir / "ml")
        paths.failure_file.unlink(missing_ok=True)  # the old reason must not outlive the retry
        (job_dir / "stop_requested").unlink(missing_ok=True)
        state = read_json(job_dir / "state.json")
        for key in ("exit_code", "failure_reason", "ended", "runner_pid", "child_pid"):
            state.pop(key, None)
        now = time.time()
        state["status"] = "InProgress"
        state["secondary_status"] = "Starting"
        state.setdefault("history", []).append(
            {"status": "Starting", "start": now, "message": "Resuming from the newest complete checkpoint"}
        )
        write_json_atomic(job_dir / "state.json", state)


def spawn_detached(python: str, module: str, directory: Path, role: str, lock_fd: int) -> int:
    """Run ``python -m module DIRECTORY --lock-fd=N`` in its own session, logging to
    ``logs/<role>.log`` and writing ``<role>.pid``; the child inherits ``lock_fd`` and ours is closed
    (so the lock is the child's, or nobody's if it failed to start). Returns the pid."""
    try:
        with open(directory / "logs" / f"{role}.log", "ab") as log_file:
            proc = subprocess.Popen(
                [python, "-m", module, str(directory), f"--lock-fd={lock_fd}"],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=str(directory),
                start_new_session=True,  # Ctrl-C in the terminal that started it must not end it
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                pass_fds=(lock_fd,),
            )
    finally:
        os.close(lock_fd)
    (directory / f"{role}.pid").write_text(str(proc.pid))
    return proc.pid


def _job_process_running(job_dir: Path, pid: int) -> bool:
    """Whether ``pid`` is a live process of this job: runner and trainer run in ``job_dir``
    (checked where /proc exists, against pid reuse); a zombie waiting to be reaped is not live."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if _is_zombie(pid):
        return False
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == job_dir.resolve()
    except OSError:
        return True  # no /proc (macOS): trust the pid


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _link_tree(src: Path, dest: Path) -> None:
    """Put ``src`` (a file or a directory's files) into channel ``dest``: hard links, else copies."""
    dest.mkdir(parents=True, exist_ok=True)
    files = [(src, dest / src.name)] if src.is_file() else [
        (p, dest / p.relative_to(src)) for p in sorted(src.rglob("*")) if p.is_file()
    ]
    for source, target in files:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
