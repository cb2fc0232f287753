"""Drives one local tuning: ``python -m ftcloud.tuning.local_driver TUNING_DIR [--lock-fd=N]``.

Started detached by :class:`~ftcloud.tuning.local.LocalTuner`. It loads the Optuna study, asks
it for parameters, launches each trial as a normal local job, feeds every new metric line that
carries the objective to the pruner (``trial.report`` at the line's step), stops pruned trials
(they checkpoint, like any ``ftcloud stop``) and tells the study how each trial ended.

Strategy -> Optuna: bayesian TPE, random RandomSampler, grid GridSampler over the categorical
values, hyperband TPE with HyperbandPruner (resource: the optimizer steps of the periodic
evaluation). Early stopping ``auto``: MedianPruner. ``off``: nothing is pruned.

Resuming (the driver of a killed ``tune`` is gone; ``tune`` runs again): finished trials stay as
they are. A trial the study still counts as running is taken up again: its job's result if the
job completed while no driver watched, the job itself if it still runs, and ``resume`` of the job
(from its newest checkpoint) if it was stopped or lost its runner. A trial whose job was never
created runs again with the same parameters (``enqueue_trial``).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcloud.backends.base import TERMINAL_STATUSES, LogCursor
from ftcloud.backends.local import LocalBackend, read_json, write_json_atomic
from ftcloud.contract import parse_metric_line
from ftcloud.errors import FtcloudError
from ftcloud.job import JobSpec
from ftcloud.spec import SpecError
from ftcloud.tuning.base import ParameterRange, TuningSpec
from ftcloud.tuning.local import (
    DEFAULT_POLL_S,
    POLL_ENV,
    RECORD,
    STATE,
    STOP_FILE,
    _optuna,
    detect_gpu_ids,
    open_storage,
    trial_job_name,
    trial_slots,
    trial_spec,
    tuning_from_dict,
)

#: How long a stop waits for running trials to write their checkpoints and exit.
STOP_WAIT_S = 600


# ---------------------------------------------------------------------- search space -> Optuna
def use_log_scale(rng: ParameterRange) -> bool:
    """Log sampling for ``logarithmic``; for ``auto`` when the range is positive and spans two
    decades or more (a learning rate), where linear sampling would almost never try the low end."""
    if rng.scaling == "logarithmic":
        return True
    if rng.scaling != "auto" or rng.low is None or rng.high is None or rng.low <= 0:
        return False
    return rng.high / rng.low >= 100 and (rng.kind == "continuous" or rng.low >= 1)


def _reverse_log(rng: ParameterRange) -> bool:
    # Dense near 1 (e.g. a momentum): sampled as 1 - x on a log scale; needs the range inside [0, 1).
    return rng.kind == "continuous" and rng.scaling == "reverse_logarithmic" and rng.high is not None and rng.high < 1


def distributions(tuning: TuningSpec) -> dict[str, Any]:
    """One Optuna distribution per range (keyed by the training key)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for rng in tuning.parameters:
        if rng.kind == "categorical":
            out[rng.name] = CategoricalDistribution(tuple(rng.values))
        elif rng.kind == "integer":
            out[rng.name] = IntDistribution(int(rng.low), int(rng.high), log=use_log_scale(rng))
        elif _reverse_log(rng):
            out[rng.name] = FloatDistribution(1 - float(rng.high), 1 - float(rng.low), log=True)
        else:
            out[rng.name] = FloatDistribution(float(rng.low), float(rng.high), log=use_log_scale(rng))
    return out


def values_from_params(params: dict[str, Any], tuning: TuningSpec) -> dict[str, Any]:
    """The training keys' values for Optuna's sampled parameters."""
    out = {}
    for rng in tuning.parameters:
        raw = params[rng.name]
        if rng.kind == "integer":
            out[rng.name] = int(raw)
        elif rng.kind == "continuous":
            value = 1 - float(raw) if _reverse_log(rng) else float(raw)
            out[rng.name] = min(max(value, float(rng.low)), float(rng.high))
        else:
            out[rng.name] = raw
    return out


def trial_limit(tuning: TuningSpec) -> int:
    """Trials to run: max_trials, or every grid combination if there are fewer."""
    if tuning.strategy == "grid":
        return min(tuning.max_trials, math.prod(len(p.values) for p in tuning.parameters))
    return tuning.max_trials


def make_sampler(tuning: TuningSpec, finished: int = 0):
    """The sampler of ``tuning.strategy``. A resumed driver offsets the seed by the trials already
    in the study: the same seed again would propose the first trials' parameters once more."""
    optuna = _optuna()
    seed = None if tuning.seed is None else tuning.seed + finished
    if tuning.strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if tuning.strategy == "grid":
        return optuna.samplers.GridSampler({p.name: list(p.values) for p in tuning.parameters}, seed=seed)
    # bayesian and hyperband: TPE, with its random start-up shortened for small budgets.
    startup = min(10, max(2, tuning.max_trials // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def make_pruner(tuning: TuningSpec, job: JobSpec):
    """Hyperband for strategy hyperband, a median pruner for early_stopping auto, else none.
    Steps are optimizer steps: the reports arrive every ``eval_steps`` (the first one is the warm-up,
    so a trial is judged after one evaluation, not before)."""
    optuna = _optuna()
    every = max(1, job.training.eval_steps or job.training.logging_steps)
    if tuning.strategy == "hyperband":
        if tuning.resource == "max_steps" and tuning.max_resource:
            low = max(int(tuning.min_resource or 1), every)
            return optuna.pruners.HyperbandPruner(min_resource=low, max_resource=max(int(tuning.max_resource), low))
        return optuna.pruners.HyperbandPruner(min_resource=every, max_resource="auto")
    if tuning.early_stopping == "auto":
        startup = max(1, min(5, tuning.max_trials // 4))  # completed trials to compare against first
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=every)
    return optuna.pruners.NopPruner()


def describe_engine(tuning: TuningSpec, job: JobSpec) -> dict[str, Any]:
    """What the driver will use, for ``tune --dry-run``."""
    sampler, pruner = make_sampler(tuning), make_pruner(tuning, job)
    return {
        "sampler": type(sampler).__name__,
        "pruner": type(pruner).__name__,
        "trials": trial_limit(tuning),
        "search_space": {name: repr(dist) for name, dist in distributions(tuning).items()},
    }


@contextlib.contextmanager
def _environment(overrides: dict[str, str]):
    """Environment for one trial's runner (its GPU or thread share); the local backend passes ours on."""
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


# ---------------------------------------------------------------------- the driver
@dataclass
class Running:
    """A trial whose job the driver watches."""

    trial: Any  # optuna.trial.Trial
    job: str
    slot: int
    cursor: LogCursor = field(default_factory=LogCursor)
    last_reported: int = -1  # newest step given to the pruner
    steps: int = 0  # newest step in its metric lines
    pruned_at: int | None = None  # pruned: its job is stopping; told PRUNED once it has exited
    stopped: str | None = None  # stopped by the tuning's own end (target reached, max_runtime)
    needs_resume: bool = False  # stopped or orphaned job of a killed driver: resume it


class Driver:
    def __init__(self, directory: Path, poll: float | None = None):
        self.directory = directory
        record = read_json(directory / RECORD)
        self.name = record["name"]
        self.job = JobSpec.from_dict(record["job"], source=str(directory / RECORD)).validate()
        self.tuning = tuning_from_dict(record["tuning"])
        self.jobs = LocalBackend(root=Path(record["jobs_root"]))
        self.poll = poll if poll is not None else float(os.environ.get(POLL_ENV) or DEFAULT_POLL_S)
        self.metric = self.tuning.objective.metric
        self.limit = trial_limit(self.tuning)
        self.slots = trial_slots(self.tuning.max_parallel, os.cpu_count() or 1, detect_gpu_ids())
        self.running: dict[int, Running] = {}
        self.stop_signalled = False
        self.ending: str | None = None  # why the tuning ends before max_trials (target, max_runtime)
        optuna = _optuna()
        storage = open_storage(directory)
        existing = optuna.load_study(study_name=self.name, storage=storage)
        self.study = optuna.load_study(
            study_name=self.name, storage=storage,
            sampler=make_sampler(self.tuning, len(existing.trials)), pruner=make_pruner(self.tuning, self.job),
        )
        self.pruning = not isinstance(self.study.pruner, optuna.pruners.NopPruner)
        self.state = read_json(directory / STATE)
        self.prior_runtime = float(self.state.get("runtime_seconds") or 0.0)
        self.started = time.time()

    # ------------------------------------------------------------------ state
    def save_state(self, **changes: Any) -> None:
        self.state.update(changes)
        self.state["runtime_seconds"] = self.prior_runtime + (time.time() - self.started)
        write_json_atomic(self.directory / STATE, self.state)

    def stop_requested(self) -> bool:
        return self.stop_signalled or (self.directory / STOP_FILE).exists()

    def counted(self) -> int:
        """Trials that count against the limit (a trial re-run after an interruption counts once)."""
        from optuna.trial import TrialState

        return sum(1 for t in self.study.get_trials(deepcopy=False)
                   if t.state != TrialState.WAITING and not t.user_attrs.get("requeued"))

    def _tell(self, trial: Any, value: float | None = None, state: Any = None, **attrs: Any) -> None:
        for key, item in attrs.items():
            trial.set_user_attr(key, item)
        try:
            self.study.tell(trial, value, state=state)
        except RuntimeError:
            # GridSampler calls study.stop() after the last grid point, which raises outside optimize();
            # the trial's state is already stored by then.
            if self.tuning.strategy != "grid":
                raise

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        self.save_state(status="InProgress", driver_pid=os.getpid())
        log(f"tuning {self.name}: {self.tuning.strategy}, {self.limit} trials, {len(self.slots)} at a time, "
            f"objective {self.tuning.objective.goal} {self.metric}, pruner {type(self.study.pruner).__name__}")
        self.recover()
        while True:
            if self.stop_requested():
                self.stop_all()
                return
            self.poll_trials()
            self.check_completion_criteria()
            if not self.ending:
                self.launch_trials()
            if not self.running and (self.ending or self.counted() >= self.limit):
                message = self.ending or f"{self.counted()} trials finished"
                self.save_state(status="Completed", ended=time.time(), message=message)
                log(f"tuning {self.name} completed: {message}")
                return
            self.save_state()
            time.sleep(self.poll)

    def recover(self) -> None:
        """Take up the trials a previous driver left running (see the module docstring)."""
        optuna = _optuna()
        from optuna.trial import TrialState

        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial = optuna.trial.Trial(self.study, frozen._trial_id)  # Optuna's handle on a stored trial
            attrs = frozen.user_attrs
            job = attrs.get("job")
            if not job or not self.jobs.has_job(job):
                self._tell(trial, state=TrialState.FAIL, requeued=True, status="Failed",
                           failure_reason="interrupted before its job started; its parameters run again")
                self.study.enqueue_trial(frozen.params)
                log(f"trial {frozen.number}: never started; its parameters run again")
                continue
            running = Running(trial, job, int(attrs.get("slot", 0)),
                              last_reported=max(frozen.intermediate_values, default=-1),
                              pruned_at=attrs.get("pruned_at"), stopped=attrs.get("stopped"))
            status = self.jobs.status(job)
            recorded = read_json(self.jobs.job_dir(job) / "state.json").get("status")
            if running.pruned_at is None and running.stopped is None and (
                    status.status == "Stopped" or (status.status == "Failed" and recorded not in TERMINAL_STATUSES)):
                running.needs_resume = True  # stopped with the tuning, or its runner died with the driver
            self.running[frozen.number] = running
            log(f"trial {frozen.number} ({job}): taken up again, job {status.status}"
                + (", resuming it" if running.needs_resume else ""))

    def poll_trials(self) -> None:
        for number, run in list(self.running.items()):
            if run.needs_resume and not self.resume(run):
                continue
            self.read_reports(run)
            status = self.jobs.status(run.job)
            if status.terminal:
                self.read_reports(run)  # lines written between the read and the end
                del self.running[number]
                self.settle(run, status)

    def resume(self, run: Running) -> bool:
        try:
            with _environment(self.slots[run.slot % len(self.slots)]):
                self.jobs.resume(run.job)
        except FtcloudError as exc:
            if "still held by a running process" in str(exc):
                return False  # its old trainer is still exiting: try again at the next poll
            log(f"trial {run.trial.number}: cannot resume {run.job}: {exc}")
            del self.running[run.trial.number]
            self._tell(run.trial, state=_state("FAIL"), status="Failed", failure_reason=f"could not resume: {exc}")
            return False
        run.needs_resume = False
        return True

    def read_reports(self, run: Running) -> None:
        for event in self.jobs.read_logs(run.job, run.cursor):
            metrics = parse_metric_line(event.message)
            if not metrics or "step" not in metrics:
                continue
            step = int(metrics["step"])
            run.steps = max(run.steps, step)
            value = metrics.get(self.metric)
            if value is None or step <= run.last_reported or run.pruned_at is not None or run.stopped:
                continue
            run.trial.report(value, step)
            run.last_reported = step
            if self.pruning and run.trial.should_prune():
                run.pruned_at = step
                run.trial.set_user_attr("pruned_at", step)
                log(f"trial {run.trial.number} ({run.job}): pruned at step {step} ({self.metric}={value:.6g})")
                self.jobs.stop(run.job)

    def settle(self, run: Running, status: Any) -> None:
        """Tell the study how a trial ended, once its job has exited."""
        attrs = {"steps": run.steps or int(status.metrics.get("step", 0)), "metrics": dict(status.metrics),
                 "ended": status.ended or time.time()}
        number = run.trial.number
        if run.pruned_at is not None:
            self._tell(run.trial, state=_state("PRUNED"), status="Pruned", **attrs)
            return
        if run.stopped:
            self._tell(run.trial, state=_state("FAIL"), status="Stopped", failure_reason=run.stopped, **attrs)
            return
        if status.status == "Completed":
            value = status.metrics.get(self.metric)
            if value is None:
                reason = (f"the job completed without printing {self.metric}: give it validation data "
                          "(data.validation or validation_split > 0)" if self.metric.startswith("eval_")
                          else f"the job completed without printing {self.metric}")
                self._tell(run.trial, state=_state("FAIL"), status="Failed", failure_reason=reason, **attrs)
            elif not math.isfinite(value):
                self._tell(run.trial, state=_state("FAIL"), status="Failed",
                           failure_reason=f"{self.metric} is {value} (training diverged)", **attrs)
            else:
                self._tell(run.trial, value, **attrs)
                log(f"trial {number} ({run.job}): completed, {self.metric}={value:.6g} at step {attrs['steps']}")
                return
        elif status.status == "Stopped":
            self._tell(run.trial, state=_state("FAIL"), status="Stopped",
                       failure_reason=f"its job was stopped outside the tuning ('ftcloud stop {run.job}')", **attrs)
        else:
            self._tell(run.trial, state=_state("FAIL"), status="Failed",
                       failure_reason=status.failure_reason or "the job failed", **attrs)
        log(f"trial {number} ({run.job}): {status.status}")

    def check_completion_criteria(self) -> None:
        if self.ending:
            return
        runtime = self.prior_runtime + (time.time() - self.started)
        target = self.tuning.target
        if target is not None:
            from optuna.trial import TrialState

            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                if t.value == target or self.tuning.objective.better(t.value, target):
                    self.end_early(f"trial {t.number} reached the target {self.metric}={t.value:.6g}")
                    return
        if self.tuning.max_runtime is not None and runtime >= self.tuning.max_runtime:
            self.end_early(f"max_runtime of {self.tuning.max_runtime} s reached")

    def end_early(self, reason: str) -> None:
        """Completion criteria met: stop the running trials (SageMaker does the same) and finish."""
        self.ending = reason
        log(f"ending: {reason}")
        for run in self.running.values():
            if run.pruned_at is None and not run.stopped:
                run.stopped = f"stopped when the tuning ended: {reason}"
                run.trial.set_user_attr("stopped", run.stopped)
                self.jobs.stop(run.job)

    def launch_trials(self) -> None:
        while len(self.running) < len(self.slots) and self.counted() < self.limit:
            busy = {run.slot for run in self.running.values()}
            slot = next(i for i in range(len(self.slots)) if i not in busy)
            trial = self.study.ask(distributions(self.tuning))
            values = values_from_params(trial.params, self.tuning)
            name = trial_job_name(self.name, trial.number)
            for key, value in (("job", name), ("parameters", values), ("slot", slot), ("started", time.time())):
                trial.set_user_attr(key, value)
            try:
                spec = trial_spec(self.job, name, values)
                with _environment(self.slots[slot]):
                    self.jobs.launch(spec)
            except (FtcloudError, SpecError) as exc:
                log(f"trial {trial.number} ({name}) could not start: {exc}")
                self._tell(trial, state=_state("FAIL"), status="Failed", failure_reason=str(exc))
                continue
            self.running[trial.number] = Running(trial, name, slot)
            log(f"trial {trial.number} ({name}) started: {values}")

    def stop_all(self) -> None:
        """``ftcloud tuning stop``: every running trial checkpoints and exits; the study keeps them
        as running, so running the tune again resumes them from those checkpoints."""
        self.save_state(status="Stopping")
        log(f"stopping tuning {self.name}: {len(self.running)} running trial(s)")
        for run in self.running.values():
            if not run.needs_resume:
                self.jobs.stop(run.job)
        deadline = time.time() + STOP_WAIT_S
        while time.time() < deadline:
            for number, run in list(self.running.items()):
                if run.needs_resume:
                    del self.running[number]  # already stopped; stays as it is for the next resume
                    continue
                self.read_reports(run)
                status = self.jobs.status(run.job)
                if status.terminal:
                    del self.running[number]
                    if status.status != "Stopped" or run.pruned_at is not None or run.stopped:
                        self.settle(run, status)  # finished (or pruned) just before the stop
            if not self.running:
                break
            time.sleep(self.poll)
        self.save_state(status="Stopped", ended=time.time(), message="stopped by request")
        log(f"tuning {self.name} stopped")


def _state(name: str) -> Any:
    from optuna.trial import TrialState

    return TrialState[name]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    lock_fd = None
    for arg in list(args):
        if arg.startswith("--lock-fd="):
            lock_fd = int(arg.split("=", 1)[1])  # inherited: the lock is held as long as we live
            args.remove(arg)
    directory = Path(args[0]).resolve()
    driver = None
    try:
        driver = Driver(directory)

        def on_signal(signum, frame):
            driver.stop_signalled = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        driver.run()
        return 0
    except Exception as exc:  # recorded for 'ftcloud tuning', with the traceback in the driver log
        traceback.print_exc()
        state = read_json(directory / STATE)
        state.update(status="Failed", ended=time.time(),
                     failure_reason=f"the tuning driver failed: {type(exc).__name__}: {exc} "
                                    f"(see {directory / 'logs' / 'driver.log'}); run the same tune again to resume")
        write_json_atomic(directory / STATE, state)
        return 1
    finally:
        if lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock_fd)


if __name__ == "__main__":
    sys.exit(main())
