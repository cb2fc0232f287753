"""Supervises one local training process: ``python -m ftcloud.backends.local_runner JOB_DIR``.

Started detached by the local backend. It runs ``python -m ftcloud_train train`` with
``FTCLOUD_ML_ROOT`` set to the job's ``ml/`` tree, timestamps every output line into
``logs/algo-1.log``, forwards SIGTERM (``ftcloud stop``) so the entrypoint checkpoints, and
records the outcome in ``state.json`` so later commands can report it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ftcloud.backends.local import HOST, read_json, write_json_atomic
from ftcloud.contract import EXIT_STOPPED, ROOT_ENV, ContainerPaths

TRAIN_COMMAND = ("-m", "ftcloud_train", "train")


def _transition(state: dict, status: str, message: str) -> None:
    now = time.time()
    history = state.setdefault("history", [])
    if history and history[-1].get("end") is None:
        history[-1]["end"] = now
    history.append({"status": status, "start": now, "message": message})
    state["secondary_status"] = status


def run(job_dir: Path) -> int:
    state_path = job_dir / "state.json"
    state = read_json(state_path)
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
        )
        child["proc"] = proc
        state["child_pid"] = proc.pid
        write_json_atomic(state_path, state)
        if stop_requested["flag"]:
            proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            record = json.dumps({"t": int(time.time() * 1000), "m": line}, ensure_ascii=False)
            log.write(record.encode("utf-8") + b"\n")
        code = proc.wait()

    # 143 / -15: the process ended on SIGTERM (from us, or from someone else) after checkpointing.
    terminated = code in (EXIT_STOPPED, -signal.SIGTERM)
    stopped = stop_requested["flag"] or (job_dir / "stop_requested").exists() or terminated
    state["exit_code"] = code
    state["ended"] = time.time()
    if stopped:
        state["status"] = "Stopped"
        _transition(state, "Stopped", f"Stopped on request (exit code {code}); checkpoint in ml/checkpoints")
    elif code == 0:
        state["status"] = "Completed"
        _transition(state, "Completed", "Training job completed")
    else:
        state["status"] = "Failed"
        reason = ""
        if paths.failure_file.exists():
            reason = paths.failure_file.read_text(errors="replace").strip()
        state["failure_reason"] = reason or f"The training process exited with code {code}; see 'ftcloud logs'."
        _transition(state, "Failed", state["failure_reason"][:200])
    history = state["history"]
    history[-1]["end"] = state["ended"]
    write_json_atomic(state_path, state)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m ftcloud.backends.local_runner JOB_DIR", file=sys.stderr)
        return 2
    return run(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
