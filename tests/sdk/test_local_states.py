"""The local backend's state machine with real processes: stops at every moment, crashes while
stopping, a runner killed with SIGKILL, and the job lock that keeps a second trainer out.

Most cases run a fake trainer: a ``ftcloud_train`` package put first on PYTHONPATH, so the real
runner starts it exactly as it starts the real one (``python -m ftcloud_train train``). The
kill -9 case runs the real tiny training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ftcloud.backends.local import JobLockedError, LocalBackend, read_json
from ftcloud.errors import UsageError
from ftcloud.job import build_job_spec

FAKE_TRAINER = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path

    root = Path(os.environ["FTCLOUD_ML_ROOT"])
    mode = os.environ.get("FAKE_TRAINER_MODE", "sleep")

    def crash_on_stop(signum, frame):
        (root / "output").mkdir(parents=True, exist_ok=True)
        (root / "output" / "failure").write_text("CUDA error while saving the checkpoint")
        os._exit(1)

    if mode == "crash_on_stop":
        signal.signal(signal.SIGTERM, crash_on_stop)
    elif mode == "ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif mode == "stop_cleanly":
        signal.signal(signal.SIGTERM, lambda s, f: os._exit(143))
    elif mode == "finish_on_stop":  # the stop lands while the final model is written: it still completes
        signal.signal(signal.SIGTERM, lambda s, f: os._exit(0))
    # Started only once its handler is in place, so a test's SIGTERM meets the mode's behaviour
    # (and after its only print, so a runner killed right after cannot break a pending write).
    print("fake trainer running", flush=True)
    (root.parent / "trainer.started").write_text(str(os.getpid()))
    if mode == "finish":
        sys.exit(0)
    time.sleep(float(os.environ.get("FAKE_TRAINER_SECONDS", "60")))
    """
)


@pytest.fixture()
def fake_trainer(tmp_path, monkeypatch):
    """Put a fake ``ftcloud_train`` first on the path that the runner hands to the trainer."""
    pkg = tmp_path / "fake-trainer" / "ftcloud_train"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(FAKE_TRAINER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(pkg.parent), os.environ.get("PYTHONPATH")])))

    def use(mode: str) -> None:
        monkeypatch.setenv("FAKE_TRAINER_MODE", mode)

    return use


@pytest.fixture()
def backend(ftcloud_home):
    return LocalBackend(root=ftcloud_home / "jobs")


@pytest.fixture()
def spec_for(train_file, tmp_path):
    model = tmp_path / "model"
    model.mkdir()

    def make(name: str):
        return build_job_spec(overrides={"name": name, "model": str(model), "train_data": str(train_file)})

    return make


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited; it only waits to be reaped
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while not (value := predicate()):
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def trainer_pid(job_dir: Path) -> int:
    return int(wait_for(lambda: (job_dir / "trainer.started").is_file()
                        and (job_dir / "trainer.started").read_text(), 60, "the trainer to start"))


def reap_runner(job_dir: Path) -> None:
    """The runner is our child here (launched in-process): reap it so its pid really disappears."""
    pid = int((job_dir / "runner.pid").read_text())
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


# ---------------------------------------------------------------------- (a) crash while stopping
def test_a_crash_after_a_stop_request_is_failed_with_the_reason(backend, fake_trainer, spec_for):
    fake_trainer("crash_on_stop")
    backend.launch(spec_for("crash-stop"))
    job_dir = backend.job_dir("crash-stop")
    trainer_pid(job_dir)

    assert backend.stop("crash-stop").status == "Stopping"
    final = backend.wait("crash-stop", poll=0.1, timeout=60)

    assert final.status == "Failed"
    assert "CUDA error while saving the checkpoint" in final.failure_reason
    assert "stop was requested" in final.failure_reason
    assert read_json(job_dir / "state.json")["exit_code"] == 1


def test_a_clean_stop_is_stopped(backend, fake_trainer, spec_for):
    fake_trainer("stop_cleanly")
    backend.launch(spec_for("clean-stop"))
    job_dir = backend.job_dir("clean-stop")
    trainer_pid(job_dir)
    backend.stop("clean-stop")
    final = backend.wait("clean-stop", poll=0.1, timeout=60)
    assert final.status == "Stopped" and final.failure_reason is None
    assert read_json(job_dir / "state.json")["exit_code"] == 143


def test_a_trainer_that_finishes_as_the_stop_arrives_is_completed(backend, fake_trainer, spec_for):
    fake_trainer("finish_on_stop")
    backend.launch(spec_for("late-stop"))
    job_dir = backend.job_dir("late-stop")
    trainer_pid(job_dir)
    backend.stop("late-stop")
    final = backend.wait("late-stop", poll=0.1, timeout=60)
    assert final.status == "Completed", "a written model is not undone by a stop that came too late"


# ---------------------------------------------------------------------- (b) stop before the runner runs
def test_b_stop_before_the_runner_exists_stops_the_job_and_no_trainer_starts(backend, fake_trainer, spec_for,
                                                                            monkeypatch):
    fake_trainer("sleep")
    spawn = LocalBackend._spawn
    held: list = []
    monkeypatch.setattr(LocalBackend, "_spawn", lambda self, *args: held.append(args))
    backend.launch(spec_for("early-stop"))
    job_dir = backend.job_dir("early-stop")
    assert not (job_dir / "runner.pid").exists()

    assert backend.stop("early-stop").status == "Stopping"  # nobody to signal yet
    spawn(backend, *held[0])  # now the runner starts, after the stop
    final = backend.wait("early-stop", poll=0.1, timeout=60)

    assert final.status == "Stopped"
    assert [h.status for h in final.history] == ["Starting", "Stopped"]
    assert not (job_dir / "trainer.started").exists(), "the trainer must never start after a stop"
    assert "child_pid" not in read_json(job_dir / "state.json")


def test_b_stop_right_after_launch_is_stopped_not_a_killed_runner(backend, fake_trainer, spec_for):
    """'stop' at once: the runner may not have its SIGTERM handler yet; it must not die of it."""
    fake_trainer("sleep")
    backend.launch(spec_for("instant-stop"))
    backend.stop("instant-stop")
    final = backend.wait("instant-stop", poll=0.1, timeout=60)
    assert final.status == "Stopped", final.failure_reason
    assert not (backend.job_dir("instant-stop") / "trainer.started").exists()


def test_a_runner_that_cannot_start_the_trainer_records_failed(backend, spec_for, monkeypatch):
    spawn = LocalBackend._spawn
    held: list = []
    monkeypatch.setattr(LocalBackend, "_spawn", lambda self, *args: held.append(args))
    backend.launch(spec_for("no-python"))
    job_dir = backend.job_dir("no-python")
    job = read_json(job_dir / "job.json")
    (job_dir / "job.json").write_text(json.dumps({**job, "python": str(job_dir / "no-such-python")}))
    spawn(backend, *held[0])
    wait_for(lambda: read_json(job_dir / "state.json").get("status") == "Failed", 30, "the runner to record it")
    reap_runner(job_dir)
    status = backend.status("no-python")
    assert status.status == "Failed" and "The local runner failed" in status.failure_reason
    assert "no-such-python" in status.failure_reason


# ---------------------------------------------------------------------- (c) runner killed with SIGKILL
@pytest.mark.slow
def test_c_kill_9_of_the_runner_ends_the_real_trainer_and_resume_works(tiny_model_dir, make_data, ftcloud_home):
    from tests.sdk.test_local_e2e import ftcloud, launch_until_training

    name = "e2e-kill9"
    backend = launch_until_training(name, 12, tiny_model_dir, make_data(rows=24, fmt="chat"), ftcloud_home)
    job_dir = ftcloud_home / "jobs" / name
    runner = int((job_dir / "runner.pid").read_text())
    trainer = read_json(job_dir / "state.json")["child_pid"]
    assert pid_running(trainer)

    os.kill(runner, signal.SIGKILL)
    wait_for(lambda: not pid_running(trainer), 30, "the trainer to exit with its runner")

    status = backend.status(name)
    assert status.status == "Failed"
    assert "runner exited unexpectedly" in status.failure_reason

    resumed = ftcloud("resume", name, "--json", home=ftcloud_home)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    final = json.loads(resumed.stdout)
    assert final["status"] == "Completed", final.get("failure_reason")
    metrics = json.loads((job_dir / "ml" / "model" / "metrics.json").read_text())
    assert metrics["global_step"] == 12


def test_c_a_dead_runner_is_failed_not_running_forever(backend, fake_trainer, spec_for):
    fake_trainer("sleep")
    backend.launch(spec_for("dead-runner"))
    job_dir = backend.job_dir("dead-runner")
    trainer = trainer_pid(job_dir)
    os.kill(int((job_dir / "runner.pid").read_text()), signal.SIGKILL)
    reap_runner(job_dir)

    wait_for(lambda: not pid_running(trainer), 10, "the trainer to die with its runner")
    status = backend.status("dead-runner")
    assert status.status == "Failed" and "runner exited unexpectedly" in status.failure_reason
    assert backend.resume("dead-runner").status == "InProgress"
    backend.stop("dead-runner")
    assert backend.wait("dead-runner", poll=0.1, timeout=60).status == "Stopped"


# ---------------------------------------------------------------------- (d) one trainer per job
def test_d_a_trainer_that_outlives_its_runner_keeps_resume_out(backend, fake_trainer, spec_for):
    fake_trainer("ignore_term")  # e.g. stuck in a device call: the runner's death signal does nothing
    backend.launch(spec_for("orphan"))
    job_dir = backend.job_dir("orphan")
    trainer = trainer_pid(job_dir)
    os.kill(int((job_dir / "runner.pid").read_text()), signal.SIGKILL)
    reap_runner(job_dir)
    time.sleep(0.5)
    assert pid_running(trainer)
    assert backend.status("orphan").status == "Failed"
    assert f"pid {trainer}) is still exiting" in backend.status("orphan").failure_reason

    with pytest.raises(JobLockedError) as refused:
        backend.resume("orphan")
    assert f"trainer pid {trainer}" in str(refused.value) and "job.lock" in str(refused.value)
    assert read_json(job_dir / "state.json")["child_pid"] == trainer  # refused before touching anything
    cli = run_cli("resume", "orphan", "--backend", "local", home=backend.root.parent)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert f"trainer pid {trainer}" in cli.stderr and "wait for that process to exit" in cli.stderr

    os.kill(trainer, signal.SIGKILL)
    wait_for(lambda: not pid_running(trainer), 10, "the trainer to exit")
    assert backend.resume("orphan").status == "InProgress"  # the lock died with its last holder
    new_trainer = wait_for(lambda: read_json(job_dir / "state.json").get("child_pid"), 30, "the new trainer")
    assert new_trainer != trainer
    os.kill(new_trainer, signal.SIGKILL)
    assert backend.wait("orphan", poll=0.1, timeout=60).status == "Failed"


def test_d_a_second_runner_on_a_running_job_refuses_and_leaves_its_state(backend, fake_trainer, spec_for):
    fake_trainer("sleep")
    backend.launch(spec_for("twice"))
    job_dir = backend.job_dir("twice")
    trainer_pid(job_dir)
    before = (job_dir / "state.json").read_text()

    second = subprocess.run([sys.executable, "-m", "ftcloud.backends.local_runner", str(job_dir)],
                            capture_output=True, text=True, timeout=60)

    assert second.returncode == 3
    assert "is still held by a running process" in second.stderr and "job.lock" in second.stderr
    assert (job_dir / "state.json").read_text() == before
    assert len(list(job_dir.glob("trainer.started"))) == 1
    backend.stop("twice")
    assert backend.wait("twice", poll=0.1, timeout=60).status == "Stopped"


def test_d_resume_of_a_running_job_is_refused_by_the_cli(backend, fake_trainer, spec_for, ftcloud_home):
    fake_trainer("sleep")
    backend.launch(spec_for("busy"))
    trainer_pid(backend.job_dir("busy"))
    with pytest.raises(UsageError, match="only Stopped or Failed jobs can be resumed"):
        backend.resume("busy")
    backend.stop("busy")
    assert backend.wait("busy", poll=0.1, timeout=60).status == "Stopped"


# ---------------------------------------------------------------------- defect 11: CLI errors
def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FTCLOUD_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "ftcloud.cli", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_logs_cursor_in_a_missing_directory_is_a_clear_error(backend, fake_trainer, spec_for, ftcloud_home, tmp_path):
    fake_trainer("finish")
    backend.launch(spec_for("logged"))
    backend.wait("logged", poll=0.1, timeout=60)
    cursor = tmp_path / "no-such-dir" / "cursor.json"

    result = run_cli("logs", "logged", "--backend", "local", "--cursor", str(cursor), home=ftcloud_home)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"directory {cursor.parent} does not exist" in result.stderr
    ok = run_cli("logs", "logged", "--backend", "local", "--cursor", str(tmp_path / "cursor.json"), home=ftcloud_home)
    assert ok.returncode == 0 and "fake trainer running" in ok.stdout
    assert json.loads((tmp_path / "cursor.json").read_text())["tokens"]["algo-1"] > 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "must be a JSON object"),
        ('"local"', "must be a JSON object"),
        ('{"backend": 3}', "field 'backend' must be a string or null"),
        ('{"platform_cache": []}', "field 'platform_cache' must be a JSON object"),
        ("{not json", "cannot read the ftcloud config"),
    ],
)
def test_a_malformed_config_file_is_a_clear_error(ftcloud_home, content, message):
    ftcloud_home.mkdir(parents=True, exist_ok=True)
    (ftcloud_home / "config.json").write_text(content)
    result = run_cli("jobs", home=ftcloud_home)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{ftcloud_home / 'config.json'}:" in result.stderr and message in result.stderr
    assert "Fix or delete the file" in result.stderr
