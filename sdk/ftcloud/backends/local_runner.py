"""Supervises one local training process: ``python -m ftcloud.backends.local_runner JOB_DIR [--lock-fd=N]``.

Started detached by the local backend. It runs ``python -m ftcloud_train train`` with
``FTCLOUD_ML_ROOT`` set to the job's ``ml/`` tree, timestamps every output line into
``logs/algo-1.log``, forwards SIGTERM (``ftcloud stop``) so the entrypoint checkpoints, and
records the outcome in ``state.json`` so later commands can report it. The state table and the
lock / stop handshake it follows are in :mod:`ftcloud.backends.local`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ftcloud.backends.local import HOST, JobLockedError, lock_job_dir, read_json, write_json_atomic
from ftcloud.contract import EXIT_STOPPED, ROOT_ENV, ContainerPaths

TRAIN_COMMAND = ("-m", "ftcloud_train", "train")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _transition(state: dict, status: str, message: str) -> None:
    now = time.time()
    history = state.setdefault("history", [])
    if history and history[-1].get("end") is None:
        history[-1]["end"] = now
    history.append({"status": status, "start": now, "message": message})
    state["secondary_status"] = status


def _finish(state: dict, status: str, message: str) -> None:
    state["status"] = status
    state["ended"] = time.time()
    _transition(state, status, message)
    state["history"][-1]["end"] = state["ended"]


def die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies (Linux only).

    SIGTERM, not SIGKILL: under torchrun the entrypoint forwards it to the workers, which a
    SIGKILL of the launcher alone would leave training. Elsewhere (macOS) there is no
    equivalent; the job lock still keeps a second trainer out.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the runner died before prctl took effect
            os._exit(EXIT_STOPPED)

    return hook


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def outcome(code: int, stop_requested: bool, failure: str) -> tuple[str, str]:
    """(status, message) for a trainer that ended with ``code``: the rows of the state table."""
    if code == 0:
        # A stop that arrived as training ended does not undo a written model.
        return "Completed", "Training job completed"
    if code in (EXIT_STOPPED, -signal.SIGTERM):  # checkpointed on SIGTERM, or ended by it before training
        why = "on request" if stop_requested else "by SIGTERM from outside ftcloud"
        return "Stopped", f"Stopped {why} (exit code {code}); checkpoint in ml/checkpoints"
    reason = failure or f"The training process {describe_exit(code)}; see 'ftcloud logs'."
    if stop_requested:
        reason = f"{reason} (it failed while stopping: a stop was requested, but it did not exit cleanly)"
    return "Failed", reason


def run(job_dir: Path, lock_fd: int | None = None) -> int:
    """Run the job's trainer once and record how it ended. Holds the job lock throughout."""
    if lock_fd is None:  # started by hand: take the lock ourselves
        try:
            lock_fd = lock_job_dir(job_dir)
        except JobLockedError as exc:
            print(f"local_runner: {exc}", file=sys.stderr)
            return 3  # state.json belongs to the runner that holds the lock: leave it alone
    state_path = job_dir / "state.json"
    state = read_json(state_path)
    try:
        return _supervise(job_dir, lock_fd, state)
    except Exception as exc:  # noqa: BLE001 - the state must say Failed, not InProgress forever
        _finish(state, "Failed", f"The local runner failed: {type(exc).__name__}: {exc}; see logs/runner.log.")
        state["failure_reason"] = state["history"][-1]["message"]
        write_json_atomic(state_path, state)
        raise


def _supervise(job_dir: Path, lock_fd: int, state: dict) -> int:
    state_path = job_dir / "state.json"
    stop_file = job_dir / "stop_requested"
    job = read_json(job_dir / "job.json")
    paths = ContainerPaths(job_dir / "ml")
    stop_requested = {"flag": False}
    child: dict[str, subprocess.Popen | None] = {"proc": None}

    def on_term(signum, frame):  # noqa: ARG001
        stop_requested["flag"] = True
        proc = child["proc"]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Announce the pid only now that SIGTERM is handled; 'stop' signals only announced runners.
    state["runner_pid"] = os.getpid()
    write_json_atomic(state_path, state)
    if stop_requested["flag"] or stop_file.exists():  # 'stop' ran before we could be signalled
        _finish(state, "Stopped", "Stopped on request before the training process started")
        write_json_atomic(state_path, state)
        return 0

    env = {**os.environ, ROOT_ENV: str(paths.root), "PYTHONUNBUFFERED": "1"}
    python = job.get("python") or sys.executable
    log_path = job_dir / "logs" / f"{HOST}.log"
    state["started"] = time.time()
    _transition(state, "Training", "Training process started")
    with open(log_path, "ab", buffering=0) as log:
        proc = subprocess.Popen(
            [python, *TRAIN_COMMAND],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=str(job_dir),
            env=env,
            pass_fds=(lock_fd,),  # the trainer holds the job lock for as long as it lives
            preexec_fn=die_with_parent_hook(),  # noqa: PLW1509 - the runner has no threads
        )
        child["proc"] = proc
        state["child_pid"] = proc.pid
        write_json_atomic(state_path, state)
        if stop_requested["flag"]:  # arrived while Popen ran
            proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            record = json.dumps({"t": int(time.time() * 1000), "m": line}, ensure_ascii=False)
            log.write(record.encode("utf-8") + b"\n")
        code = proc.wait()

    failure = paths.failure_file.read_text(errors="replace").strip() if paths.failure_file.exists() else ""
    status, message = outcome(code, stop_requested["flag"] or stop_file.exists(), failure)
    state["exit_code"] = code
    if status == "Failed":
        state["failure_reason"] = message
    _finish(state, status, message[:200])
    write_json_atomic(state_path, state)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    lock_fd = None
    if len(argv) == 2 and argv[1].startswith("--lock-fd="):
        lock_fd = int(argv[1].split("=", 1)[1])
        argv = argv[:1]
    if len(argv) != 1:
        print("usage: python -m ftcloud.backends.local_runner JOB_DIR [--lock-fd=N]", file=sys.stderr)
        return 2
    return run(Path(argv[0]), lock_fd)


if __name__ == "__main__":
    sys.exit(main())
