"""Local tuning: Optuna over the local backend, one detached driver process per tuning.

Every trial is a normal local job (``<tune>-t003`` in the same job store, so ``ftcloud status``,
``logs`` and ``stop`` work on it). The study lives in SQLite next to a record of what was asked,
so a killed ``tune`` resumes with its finished trials kept. Each tuning has a directory
``$FTCLOUD_HOME/tunings/<name>/``::

    tuning.json       the job spec and TuningSpec as launched, the job store it uses (written once)
    study.db          the Optuna study (SQLite): trials, their parameters, reports and results
    state.json        status of the tuning (written by the driver): InProgress, Stopping, Completed, ...
    stop_requested    present once ``ftcloud tuning stop`` ran
    driver.pid        pid of the driver, written by the process that spawned it
    driver.lock       flock()ed while a driver runs: one driver per study
    logs/driver.log   what the driver did (trials launched, pruned, finished)

The driver (:mod:`ftcloud.tuning.local_driver`) maps the strategy onto Optuna, launches trials
through :class:`~ftcloud.backends.local.LocalBackend`, feeds each trial's periodic metric lines to
the pruner and records results. This module owns the verbs (launch, status, stop) and the files;
it stays import-light: Optuna loads only inside the functions that read the study.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftcloud.backends.local import (
    LocalBackend,
    _job_process_running,
    read_json,
    spawn_detached,
    try_lock,
    write_json_atomic,
)
from ftcloud.config import ftcloud_home
from ftcloud.errors import UsageError
from ftcloud.tuning.base import (
    TERMINAL_TUNING_STATUSES,
    Objective,
    ParameterRange,
    Trial,
    Tuner,
    TuningLaunchResult,
    TuningNotFoundError,
    TuningSpec,
    TuningStatus,
)

RECORD = "tuning.json"
STATE = "state.json"
STUDY_DB = "study.db"
STOP_FILE = "stop_requested"
LOCK_FILE = "driver.lock"
#: Trial job names: ``<tune>-t<number>``; a tuning name is at most 32 characters (SageMaker's limit).
TRIAL_SUFFIX = "-t{number:03d}"
#: Seconds between the driver's polls of its trials (tests shorten it through the environment).
POLL_ENV = "FTCLOUD_TUNING_POLL_S"
DEFAULT_POLL_S = 1.0


def tunings_root() -> Path:
    return ftcloud_home() / "tunings"


def trial_job_name(tuning: str, number: int) -> str:
    return tuning + TRIAL_SUFFIX.format(number=number)


# ---------------------------------------------------------------------- how many trials at once
def visible_gpu_ids(cuda_visible_devices: str | None, nvidia_smi_list: str | None) -> list[str]:
    """The GPUs trials may use, as values for ``CUDA_VISIBLE_DEVICES``.

    ``cuda_visible_devices`` (the variable as set, or ``None``) wins: CUDA stops at the first
    invalid entry, and ``""`` / ``-1`` hide every GPU. Otherwise ``nvidia-smi -L`` output: one
    id per GPU, or the MIG instances' UUIDs where a GPU is partitioned (a process sees one MIG
    instance, so each is a slot of its own).
    """
    if cuda_visible_devices is not None:
        ids = []
        for item in cuda_visible_devices.split(","):
            item = item.strip()
            if not item or item.startswith("-"):
                break
            ids.append(item)
        return ids
    gpus: list[tuple[str, list[str]]] = []
    for line in (nvidia_smi_list or "").splitlines():
        text = line.strip()
        if text.startswith("GPU ") and ":" in text:
            gpus.append((text[4:text.index(":")].strip(), []))
        elif text.startswith("MIG ") and gpus and "UUID: " in text:
            gpus[-1][1].append(text.split("UUID: ", 1)[1].rstrip(")").strip())
    return [uuid for index, migs in gpus for uuid in (migs or [index])]


def trial_slots(requested: int, cpus: int, gpus: Sequence[str]) -> list[dict[str, str]]:
    """One environment per trial that may run at once (``len`` is the parallelism).

    On GPUs each trial gets one GPU of its own (``CUDA_VISIBLE_DEVICES``), so at most one trial
    per GPU. On CPU each trial needs at least one core; the cores are split evenly between the
    trials (``OMP_NUM_THREADS``), or every trial would start a thread per core and they would
    all slow down together.
    """
    requested = max(1, int(requested))
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in list(gpus)[:requested]]
    cpus = max(1, int(cpus or 1))
    count = min(requested, cpus)
    return [{"OMP_NUM_THREADS": str(cpus // count)} for _ in range(count)]


def detect_gpu_ids() -> list[str]:
    """:func:`visible_gpu_ids` for this machine (``nvidia-smi -L`` where it is installed)."""
    listing = None
    if os.environ.get("CUDA_VISIBLE_DEVICES") is None and shutil.which("nvidia-smi"):
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            listing = None
    return visible_gpu_ids(os.environ.get("CUDA_VISIBLE_DEVICES"), listing)


# ---------------------------------------------------------------------- records
def tuning_from_dict(data: dict[str, Any]) -> TuningSpec:
    """Inverse of :meth:`TuningSpec.to_dict` (the record in ``tuning.json``)."""
    values = dict(data)
    values["parameters"] = [ParameterRange(**p) for p in values.get("parameters", [])]
    values["objective"] = Objective(**values.get("objective", {}))
    known = {f.name for f in dataclasses.fields(TuningSpec)}
    return TuningSpec(**{k: v for k, v in values.items() if k in known})


def job_record(job: Any) -> dict[str, Any]:
    """The job spec as stored: without its ``tune:`` section (kept separately as a TuningSpec)."""
    out = job.to_dict()
    out.pop("tune", None)
    return out


def trial_spec(job: Any, name: str, values: dict[str, Any]) -> Any:
    """A copy of the tuning's job spec for one trial: its name and the sampled training keys."""
    spec = copy.deepcopy(job)
    spec.tune = None
    spec.name = name
    spec.backend = "local"
    spec.training = dataclasses.replace(spec.training, **values)
    spec.validate(f"trial {name}")
    return spec


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like records."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def _lock(directory: Path) -> int:
    """Take the tuning's driver lock without waiting; the descriptor is inherited by the driver."""
    fd = try_lock(directory / LOCK_FILE)
    if fd is None:
        raise UsageError(
            f"Tuning '{directory.name}' is already running (its driver holds {directory / LOCK_FILE}).",
            hint=f"Follow it with 'ftcloud tuning {directory.name}', or stop it with "
                 f"'ftcloud tuning stop {directory.name}'.",
        )
    return fd


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_url(directory: Path) -> str:
    return f"sqlite:///{directory / STUDY_DB}"


def open_storage(directory: Path):
    """The study's storage; SQLite waits for the driver's writes instead of failing at once."""
    optuna = _optuna()
    return optuna.storages.RDBStorage(storage_url(directory), engine_kwargs={"connect_args": {"timeout": 30}})


class LocalTuner(Tuner):
    """Optuna over the local backend (see the module docstring for the files and the driver)."""

    name = "local"

    def __init__(self, root: Path | None = None, backend: LocalBackend | None = None, python: str | None = None):
        self.root = Path(root) if root else tunings_root()
        self.backend = backend or LocalBackend()
        self.python = python or sys.executable

    def tuning_dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise TuningNotFoundError(f"'{name}' is not a tuning name.")
        return self.root / name

    # ------------------------------------------------------------------ launch
    def launch(self, job: Any, tuning: TuningSpec, *, dry_run: bool = False) -> TuningLaunchResult:
        from ftcloud.tuning.space import new_tuning_name, validate_tuning

        job = copy.deepcopy(job)
        job.name = job.name or new_tuning_name()
        job.backend = "local"
        tuning = validate_tuning(copy.deepcopy(tuning), job)
        name = job.name
        notes: list[str] = []
        if (tuning.early_stopping == "auto" or tuning.strategy == "hyperband") and job.training.eval_steps == 0 \
                and tuning.objective.metric.startswith("eval_"):
            # Without periodic evaluation the pruner would only see the final value, too late to stop anything.
            job.training.eval_steps = job.training.logging_steps
            notes.append(f"eval_steps set to {job.training.eval_steps} (logging_steps) so that early stopping "
                         f"sees {tuning.objective.metric} during training; set training.eval_steps to choose.")
        if tuning.warm_start_from:
            notes.append("warm_start_from applies to SageMaker tunings; the local study starts from its own trials.")
        # The backend's own checks (data paths, base model, one host) before anything is written.
        first = {p.name: p.values[0] if p.kind == "categorical" else p.low for p in tuning.parameters}
        self.backend.launch(trial_spec(job, trial_job_name(name, 0), first), dry_run=True)
        directory = self.tuning_dir(name)
        slots = trial_slots(tuning.max_parallel, os.cpu_count() or 1, detect_gpu_ids())
        if len(slots) < tuning.max_parallel:
            notes.append(f"{len(slots)} trial(s) at a time: this machine has room for no more "
                         f"(max_parallel {tuning.max_parallel}).")
        result = TuningLaunchResult(name=name, backend=self.name, dry_run=dry_run, location=str(directory),
                                    notes=notes)
        record = {"job": job_record(job), "tuning": tuning.to_dict(), "jobs_root": str(self.backend.root)}
        if dry_run:
            from ftcloud.tuning.local_driver import describe_engine

            result.request = {**record, "study": storage_url(directory), "parallel_trials": len(slots),
                              "trial_names": trial_job_name(name, 0) + " ...", **describe_engine(tuning, job)}
            return result
        resuming = (directory / RECORD).is_file()
        if resuming:
            self._check_same(directory, record)
        directory.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(directory)
        try:
            if not resuming:
                write_json_atomic(directory / RECORD, {"name": name, "backend": self.name, "created": time.time(),
                                                       **record})
            self._create_study(directory, name, tuning)
            (directory / STOP_FILE).unlink(missing_ok=True)
            state = read_json(directory / STATE)
            state.update(status="InProgress", ended=None, failure_reason=None, message=None,
                         launched=time.time())
            write_json_atomic(directory / STATE, state)
            (directory / "logs").mkdir(exist_ok=True)
            self._spawn(directory, lock_fd)
        except BaseException:
            if not resuming:
                shutil.rmtree(directory, ignore_errors=True)  # nothing half-made is left behind
            raise
        if resuming:
            result.notes.append("resumed: finished trials are kept; interrupted ones continue.")
        return result

    def _check_same(self, directory: Path, record: dict[str, Any]) -> None:
        stored = read_json(directory / RECORD)
        changed = _differences({k: stored.get(k) for k in ("job", "tuning")},
                               {k: record[k] for k in ("job", "tuning")})
        if changed:
            shown = ", ".join(changed[:6]) + (" ..." if len(changed) > 6 else "")
            raise UsageError(
                f"A local tuning named '{directory.name}' already exists with a different spec (changed: {shown}); "
                "running it again resumes it and needs the same job and tune settings.",
                hint=f"Use another --name for a new search, or restore the settings in {directory / RECORD}.",
            )

    def _create_study(self, directory: Path, name: str, tuning: TuningSpec) -> None:
        optuna = _optuna()
        direction = "minimize" if tuning.objective.goal == "minimize" else "maximize"
        optuna.create_study(storage=open_storage(directory), study_name=name, direction=direction,
                            load_if_exists=True)

    def _spawn(self, directory: Path, lock_fd: int) -> None:
        spawn_detached(self.python, "ftcloud.tuning.local_driver", directory, "driver", lock_fd)

    # ------------------------------------------------------------------ status
    def driver_alive(self, directory: Path) -> bool:
        try:
            pid = int((directory / "driver.pid").read_text())
        except (OSError, ValueError):
            return False
        return _job_process_running(directory, pid)

    def status(self, name: str) -> TuningStatus:
        directory = self.tuning_dir(name)
        record = read_json(directory / RECORD)
        if not record:
            raise TuningNotFoundError(
                f"No local tuning named '{name}' in {self.root}.",
                hint="List them with 'ftcloud tunings --backend local'.",
            )
        tuning = tuning_from_dict(record["tuning"])
        state = read_json(directory / STATE)
        status = TuningStatus(
            name=name, backend=self.name, status=state.get("status", "InProgress"), strategy=tuning.strategy,
            objective=tuning.objective, max_trials=tuning.max_trials, max_parallel=tuning.max_parallel,
            created=record.get("created"), ended=state.get("ended"), failure_reason=state.get("failure_reason"),
            location=str(directory),
        )
        if status.status not in TERMINAL_TUNING_STATUSES and not self.driver_alive(directory):
            state = read_json(directory / STATE)  # it may have ended between the two reads
            if state.get("status") in TERMINAL_TUNING_STATUSES:
                return self.status(name)
            status.status = "Failed"
            status.failure_reason = (
                "The tuning driver exited unexpectedly (killed, or the machine restarted). Run the same "
                f"'ftcloud tune' again (same name '{name}', same settings) to resume: finished trials are kept; "
                f"see {directory / 'logs' / 'driver.log'}."
            )
        jobs = LocalBackend(root=Path(record.get("jobs_root") or self.backend.root))
        status.trials = self._trials(directory, name, tuning.objective, jobs)
        done = [t for t in status.trials if t.status == "Completed" and t.objective is not None]
        for trial in done:
            if status.best is None or tuning.objective.better(trial.objective, status.best.objective):
                status.best = trial
        return status

    def _trials(self, directory: Path, name: str, objective: Objective, jobs: LocalBackend) -> list[Trial]:
        optuna = _optuna()
        try:
            study = optuna.load_study(study_name=name, storage=open_storage(directory))
        except KeyError:
            return []  # launch was interrupted before the study existed
        out = []
        for frozen in study.get_trials(deepcopy=False):
            out.append(trial_record(frozen, objective, jobs))
        return out

    def list_tunings(self, limit: int = 20) -> list[TuningStatus]:
        if not self.root.is_dir():
            return []
        names = [p.name for p in self.root.iterdir() if (p / RECORD).is_file()]
        created = {n: read_json(self.root / n / RECORD).get("created") or 0 for n in names}
        out = []
        for name in sorted(names, key=lambda n: created[n], reverse=True)[:limit]:
            try:
                out.append(self.status(name))
            except TuningNotFoundError:
                continue
        return out

    # ------------------------------------------------------------------ stop
    def stop(self, name: str) -> TuningStatus:
        """Stop the running trials (each checkpoints) and end the tuning as Stopped. Running the
        same tune again resumes it: stopped trials continue from their checkpoints."""
        status = self.status(name)  # raises TuningNotFoundError
        directory = self.tuning_dir(name)
        state = read_json(directory / STATE)
        if state.get("status") in TERMINAL_TUNING_STATUSES:
            return status
        (directory / STOP_FILE).write_text(str(time.time()))
        if self.driver_alive(directory):  # the driver stops its trials, waits for them, records Stopped
            if state.get("status") == "InProgress":
                state["status"] = "Stopping"
                write_json_atomic(directory / STATE, state)
            status.status = "Stopping"
            return status
        # No driver (it was killed): stop what it left running ourselves.
        jobs = LocalBackend(root=Path(read_json(directory / RECORD).get("jobs_root") or self.backend.root))
        for trial in status.trials:
            if trial.status == "InProgress":
                jobs.stop(trial.name)
        state.update(status="Stopped", ended=time.time(), failure_reason=None,
                     message="stopped while no driver ran; its running trials were asked to stop")
        write_json_atomic(directory / STATE, state)
        return self.status(name)


def trial_record(frozen: Any, objective: Objective, jobs: LocalBackend) -> Trial:
    """A :class:`Trial` from the study's record of it (and, while it runs, from its job)."""
    from optuna.trial import TrialState

    attrs = frozen.user_attrs
    trial = Trial(
        name=attrs.get("job") or "", status="Pending", parameters=dict(attrs.get("parameters") or {}),
        steps=attrs.get("steps"), metrics=dict(attrs.get("metrics") or {}), started=attrs.get("started"),
        ended=attrs.get("ended"), failure_reason=attrs.get("failure_reason"), number=frozen.number,
    )
    state = frozen.state
    if state == TrialState.COMPLETE:
        trial.status, trial.objective = "Completed", frozen.value
    elif state == TrialState.PRUNED:
        trial.status = "Pruned"
        if frozen.intermediate_values:
            trial.objective = frozen.intermediate_values[max(frozen.intermediate_values)]
    elif state == TrialState.FAIL:
        trial.status = attrs.get("status") or "Failed"
    elif state == TrialState.RUNNING and trial.name and jobs.has_job(trial.name):
        job = jobs.status(trial.name)  # running, or stopped with the tuning (resuming continues it)
        trial.status = job.status
        trial.metrics = dict(job.metrics)
        trial.steps = int(job.metrics["step"]) if "step" in job.metrics else None
        value = job.metrics.get(objective.metric)
        trial.objective = value if value is not None and math.isfinite(value) else None
        trial.failure_reason = job.failure_reason
    return trial
