"""The backend interface: the few verbs every backend implements, and the records they return.

A backend launches a :class:`~ftcloud.job.JobSpec` and answers ``status``, ``list_jobs``,
``read_logs`` and ``stop`` for job names. Waiting and log following are written once here on
top of those verbs, so both backends behave the same.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

TERMINAL_STATUSES = ("Completed", "Failed", "Stopped")


@dataclass
class StatusTransition:
    """One entry of the secondary status history (SageMaker's SecondaryStatusTransitions)."""

    status: str
    start: float | None = None  # epoch seconds
    end: float | None = None
    message: str = ""


@dataclass
class JobStatus:
    """What ``ftcloud status`` shows. Times are epoch seconds."""

    name: str
    backend: str
    status: str  # InProgress | Completed | Failed | Stopping | Stopped
    secondary_status: str = ""
    failure_reason: str | None = None
    created: float | None = None
    started: float | None = None
    ended: float | None = None
    history: list[StatusTransition] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    training_seconds: int | None = None
    billable_seconds: int | None = None
    spot: bool = False
    artifacts: str | None = None
    checkpoints: str | None = None
    instance_type: str | None = None
    instance_count: int | None = None
    technique: str | None = None
    model: str | None = None
    location: str | None = None  # job directory (local) or ARN (sagemaker)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def spot_savings_percent(self) -> float | None:
        """Managed spot savings: 1 - billable / training seconds (SageMaker's own formula)."""
        if not self.spot or not self.training_seconds or self.billable_seconds is None:
            return None
        return round(100.0 * (1.0 - self.billable_seconds / self.training_seconds), 1)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["terminal"] = self.terminal
        out["spot_savings_percent"] = self.spot_savings_percent
        return out


@dataclass
class LogEvent:
    """One log line: epoch milliseconds, the host/stream it came from, the text."""

    timestamp: int
    host: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LogCursor:
    """Where reading stopped, per stream (CloudWatch forward tokens, or byte offsets locally).

    Pass the same cursor again to resume without repeating lines; ``to_dict`` / ``from_dict``
    let a pipeline persist it between runs.
    """

    tokens: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": dict(self.tokens)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> LogCursor:
        return cls(tokens=dict((data or {}).get("tokens") or {}))


@dataclass
class LaunchResult:
    """What a launch (or dry run) produced."""

    name: str
    backend: str
    dry_run: bool = False
    request: dict[str, Any] | None = None  # the exact CreateTrainingJob request (sagemaker)
    location: str | None = None  # job directory (local) or training job ARN (sagemaker)
    uploaded: list[str] = field(default_factory=list)  # objects this launch uploaded
    reused: list[str] = field(default_factory=list)  # objects already there (same content hash)
    notes: list[str] = field(default_factory=list)  # things the user should know

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backend(abc.ABC):
    """One place jobs run. Subclasses implement the five verbs; wait/logs-follow come for free."""

    #: "local" or "sagemaker"
    name: str = ""
    #: seconds between polls while waiting / following
    poll_seconds: float = 5.0

    def __init__(self, sleep: Callable[[float], None] = time.sleep):
        self._sleep = sleep

    # ---- the verbs --------------------------------------------------------------
    @abc.abstractmethod
    def describe_target(self) -> str:
        """Where this backend points (for the header line every command prints)."""

    @abc.abstractmethod
    def launch(self, spec: Any, *, dry_run: bool = False) -> LaunchResult:
        """Start a job for a validated :class:`~ftcloud.job.JobSpec` (or only plan it)."""

    @abc.abstractmethod
    def status(self, name: str) -> JobStatus:
        """Current state; raises :class:`~ftcloud.errors.JobNotFoundError`."""

    @abc.abstractmethod
    def list_jobs(self, limit: int = 20) -> list[JobStatus]:
        """Most recent jobs first."""

    @abc.abstractmethod
    def read_logs(self, name: str, cursor: LogCursor) -> list[LogEvent]:
        """New log events since ``cursor`` (all hosts, ordered by time); advances ``cursor``."""

    @abc.abstractmethod
    def stop(self, name: str) -> JobStatus:
        """Ask the job to stop (it checkpoints first); returns the status right after asking."""

    def resume(self, name: str) -> JobStatus:
        """Start a stopped or failed job again from its newest complete checkpoint."""
        from ftcloud.errors import UsageError

        raise UsageError(
            f"'{self.name}' jobs cannot be resumed in place.",
            hint="Only the local and sagemaker backends can resume jobs.",
        )

    def has_job(self, name: str) -> bool:
        from ftcloud.errors import JobNotFoundError

        try:
            self.status(name)
        except JobNotFoundError:
            return False
        return True

    # ---- built on the verbs ------------------------------------------------------
    def logs(
        self, name: str, *, follow: bool = False, cursor: LogCursor | None = None, poll: float | None = None
    ) -> Iterator[LogEvent]:
        """Yield log events; with ``follow``, keep polling until the job ends, then drain."""
        cursor = cursor if cursor is not None else LogCursor()
        while True:
            yield from self.read_logs(name, cursor)
            if not follow:
                return
            if self.status(name).terminal:
                yield from self.read_logs(name, cursor)
                return
            self._sleep(poll if poll is not None else self.poll_seconds)

    def wait(
        self,
        name: str,
        *,
        poll: float | None = None,
        timeout: float | None = None,
        on_update: Callable[[JobStatus], None] | None = None,
        on_log: Callable[[LogEvent], None] | None = None,
        cursor: LogCursor | None = None,
    ) -> JobStatus:
        """Poll until the job is Completed, Failed or Stopped.

        ``on_update`` is called on each status / secondary-status change; with ``on_log`` every
        new log line (all hosts, in time order) is passed along too, resuming from ``cursor``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last: tuple[str, str] | None = None
        cursor = cursor if cursor is not None else LogCursor()
        while True:
            if on_log is not None:
                for event in self.read_logs(name, cursor):
                    on_log(event)
            status = self.status(name)
            key = (status.status, status.secondary_status)
            if on_update is not None and key != last:
                on_update(status)
            last = key
            if status.terminal:
                if on_log is not None:  # lines written between the last read and the end
                    for event in self.read_logs(name, cursor):
                        on_log(event)
                return status
            if deadline is not None and time.monotonic() >= deadline:
                from ftcloud.errors import FtcloudError

                raise FtcloudError(
                    f"Timed out after {timeout:.0f} s waiting for job {name} (still {status.status}).",
                    hint=f"It keeps running: 'ftcloud status {name}' or 'ftcloud logs {name} --follow'.",
                )
            self._sleep(poll if poll is not None else self.poll_seconds)
