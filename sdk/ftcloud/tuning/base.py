"""The tuning interface: the search space, the records every tuner returns, and the verbs.

A *tuning* runs many training jobs (trials) of one :class:`~ftcloud.job.JobSpec`, each with some
training keys drawn from a :class:`TuningSpec`, and keeps the one with the best objective.
SageMaker Automatic Model Tuning (:mod:`ftcloud.tuning.sagemaker`) and Optuna over the local
backend (:mod:`ftcloud.tuning.local`) implement the same :class:`Tuner`, so ``ftcloud tunings``
and ``ftcloud tuning TUNE`` read the same everywhere. Every trial is a normal training job of
its backend (``ftcloud status TRIAL`` works on it).

The ``tune:`` section of a job file, flags and SDK keyword arguments all become one
:class:`TuningSpec` through :func:`ftcloud.tuning.space.parse_tuning` (the only parser).
Import-light: nothing heavy at import time.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any

from ftcloud.errors import FtcloudError

#: Search strategies, named as users know them; each tuner maps them to its engine.
STRATEGIES = ("bayesian", "random", "grid", "hyperband")
#: Range kinds (SageMaker's ContinuousParameterRanges / IntegerParameterRanges / CategoricalParameterRanges).
KINDS = ("continuous", "integer", "categorical")
#: Scaling of numeric ranges (SageMaker's ScalingType values, lower-cased).
SCALINGS = ("auto", "linear", "logarithmic", "reverse_logarithmic")
GOALS = ("minimize", "maximize")
#: "auto": stop trials that are clearly worse than the others at the same step (SageMaker's
#: TrainingJobEarlyStoppingType=Auto; locally a median pruner, or hyperband's with that strategy).
EARLY_STOPPING = ("off", "auto")
WARM_START_TYPES = ("IdenticalDataAndAlgorithm", "TransferLearning")

#: Trial states, shared by both tuners (SageMaker's TrainingJobStatus plus "Pruned": stopped early
#: by the tuner because its objective was worse than the others' at the same step).
TRIAL_STATUSES = ("Pending", "InProgress", "Completed", "Failed", "Stopping", "Stopped", "Pruned")
TERMINAL_TUNING_STATUSES = ("Completed", "Failed", "Stopped")


@dataclass
class ParameterRange:
    """One searched training key: a numeric interval or a list of values."""

    name: str  # a TrainingSpec field (e.g. learning_rate, lora_r, technique)
    kind: str  # continuous | integer | categorical
    low: float | None = None
    high: float | None = None
    scaling: str = "auto"
    values: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Objective:
    """The metric to optimise: any name the container prints in its metric lines."""

    metric: str = "eval_loss"
    goal: str = "minimize"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def better(self, a: float, b: float) -> bool:
        """True when objective value ``a`` is better than ``b``."""
        return a < b if self.goal == "minimize" else a > b


@dataclass
class TuningSpec:
    """How to search: ranges, objective, strategy and limits (the job file's ``tune:`` section)."""

    parameters: list[ParameterRange] = field(default_factory=list)
    objective: Objective = field(default_factory=Objective)
    strategy: str = "bayesian"
    max_trials: int = 10
    max_parallel: int = 1
    early_stopping: str = "off"
    seed: int | None = None
    #: Completion criteria: stop the whole tuning after this many seconds, or once a trial reaches
    #: ``target`` (SageMaker's TuningJobCompletionCriteria / MaxRuntimeInSeconds).
    max_runtime: int | None = None
    target: float | None = None
    #: Warm start: earlier tuning names whose trials seed this search.
    warm_start_from: list[str] = field(default_factory=list)
    warm_start_type: str = "IdenticalDataAndAlgorithm"
    #: Hyperband: the training key that is its resource (num_train_epochs or max_steps) and bounds.
    resource: str | None = None
    min_resource: int | None = None
    max_resource: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Trial:
    """One training job of a tuning, with the values it tried and what it reached."""

    name: str  # the training job name (a normal job of its backend)
    status: str  # one of TRIAL_STATUSES
    parameters: dict[str, Any] = field(default_factory=dict)
    objective: float | None = None  # final (or, when pruned, last reported) objective value
    steps: int | None = None  # optimizer steps it ran (pruned trials run fewer)
    metrics: dict[str, float] = field(default_factory=dict)
    started: float | None = None  # epoch seconds
    ended: float | None = None
    failure_reason: str | None = None
    number: int | None = None  # order of creation, from 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TuningStatus:
    """What ``ftcloud tuning TUNE`` shows."""

    name: str
    backend: str  # local | sagemaker
    status: str  # InProgress | Completed | Failed | Stopping | Stopped
    strategy: str
    objective: Objective
    trials: list[Trial] = field(default_factory=list)
    best: Trial | None = None
    max_trials: int | None = None
    max_parallel: int | None = None
    created: float | None = None
    ended: float | None = None
    failure_reason: str | None = None
    location: str | None = None  # study directory (local) or tuning job ARN (sagemaker)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_TUNING_STATUSES

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for trial in self.trials:
            out[trial.status] = out.get(trial.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["terminal"] = self.terminal
        out["counts"] = self.counts()
        return out


@dataclass
class TuningLaunchResult:
    """What ``tune`` (or its dry run) produced."""

    name: str
    backend: str
    dry_run: bool = False
    request: dict[str, Any] | None = None  # the exact CreateHyperParameterTuningJob request (sagemaker)
    location: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Tuner(abc.ABC):
    """One place tunings run. Both implementations return the records above."""

    #: "local" or "sagemaker"
    name: str = ""

    @abc.abstractmethod
    def launch(self, job: Any, tuning: TuningSpec, *, dry_run: bool = False) -> TuningLaunchResult:
        """Start a tuning of the validated :class:`~ftcloud.job.JobSpec` ``job`` (its name names the
        tuning) over ``tuning``, or only plan it. Locally this returns once the study is created and
        its driver process started; :meth:`wait` follows it."""

    @abc.abstractmethod
    def status(self, name: str) -> TuningStatus:
        """Current state with every trial; raises :class:`TuningNotFoundError`."""

    @abc.abstractmethod
    def list_tunings(self, limit: int = 20) -> list[TuningStatus]:
        """Most recent first (trials may be left empty for speed)."""

    @abc.abstractmethod
    def stop(self, name: str) -> TuningStatus:
        """Stop the tuning and its running trials (they checkpoint first)."""

    def wait(self, name: str, *, poll: float = 5.0, timeout: float | None = None,
             on_update: Any = None, sleep: Any = None) -> TuningStatus:
        """Poll until the tuning ends; ``on_update(status)`` after every poll (for a live table)."""
        import time

        sleep = sleep or time.sleep
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(name)
            if on_update is not None:
                on_update(status)
            if status.terminal:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise FtcloudError(
                    f"Timed out after {timeout:.0f} s waiting for tuning {name} (still {status.status}).",
                    hint=f"It keeps running: 'ftcloud tuning {name}'.",
                )
            sleep(poll)


class TuningNotFoundError(FtcloudError):
    """No tuning of that name on this backend."""
