"""Backends: one interface (:class:`~ftcloud.backends.base.Backend`), two implementations.

``local`` runs the training entrypoint as a local process; ``sagemaker`` uses plain boto3.
Implementations are imported only when selected.
"""

from __future__ import annotations

from ftcloud.backends.base import (
    TERMINAL_STATUSES,
    Backend,
    JobStatus,
    LaunchResult,
    LogCursor,
    LogEvent,
    StatusTransition,
)

__all__ = [
    "TERMINAL_STATUSES",
    "Backend",
    "JobStatus",
    "LaunchResult",
    "LogCursor",
    "LogEvent",
    "StatusTransition",
]
