"""ftcloud: fine-tune LLMs with LoRA, QLoRA, DoRA or full fine-tuning, locally or on SageMaker.

The public API (see docs/sdk.md)::

    import ftcloud

    job = ftcloud.launch(config="job.yaml", lora_r=8)     # or technique=..., model=..., data=...
    print(job.wait().status)
    for event in job.logs():
        print(event.message)
    ftcloud.status(job.name); ftcloud.jobs(); ftcloud.stop(job.name); ftcloud.resume(job.name)

Import-light: heavy packages (boto3, torch, transformers) load only inside the calls that
need them, and the SDK modules themselves load on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it; loaded on first access (PEP 562).
_LAZY = {
    "TrainingSpec": "ftcloud.spec",
    "SpecError": "ftcloud.spec",
    "launch": "ftcloud.sdk",
    "plan": "ftcloud.sdk",
    "PlanError": "ftcloud.planning.plan",
    "prepare_data": "ftcloud.sdk",
    "status": "ftcloud.sdk",
    "jobs": "ftcloud.sdk",
    "logs": "ftcloud.sdk",
    "stop": "ftcloud.sdk",
    "resume": "ftcloud.sdk",
    "get_job": "ftcloud.sdk",
    "load_job": "ftcloud.sdk",
    "spec_from": "ftcloud.sdk",
    "Client": "ftcloud.sdk",
    "Job": "ftcloud.sdk",
    "JobSpec": "ftcloud.job",
    "DataSpec": "ftcloud.job",
    "ComputeSpec": "ftcloud.job",
    "NetworkSpec": "ftcloud.job",
    "PlatformSpec": "ftcloud.job",
    "JobStatus": "ftcloud.backends.base",
    "LogEvent": "ftcloud.backends.base",
    "LogCursor": "ftcloud.backends.base",
    "LaunchResult": "ftcloud.backends.base",
    "Platform": "ftcloud.platform",
    "FtcloudError": "ftcloud.errors",
    "UsageError": "ftcloud.errors",
    "AwsError": "ftcloud.errors",
    "JobNotFoundError": "ftcloud.errors",
    "PlatformError": "ftcloud.errors",
    "register": "ftcloud.sdk",
    "approve": "ftcloud.sdk",
    "reject": "ftcloud.sdk",
    "versions": "ftcloud.sdk",
    "model_version": "ftcloud.sdk",
    "ModelVersion": "ftcloud.registry.base",
    "deploy": "ftcloud.sdk",
    "undeploy": "ftcloud.sdk",
    "invoke": "ftcloud.sdk",
    "list_endpoints": "ftcloud.sdk",
    "EndpointStatus": "ftcloud.endpoints.base",
    "validate_data": "ftcloud.sdk",
    "data_stats": "ftcloud.sdk",
    "DataError": "ftcloud_train.datasource",
    "tune": "ftcloud.sdk",
    "tunings": "ftcloud.sdk",
    "tuning_status": "ftcloud.sdk",
    "get_tuning": "ftcloud.sdk",
    "stop_tuning": "ftcloud.sdk",
    "Tuning": "ftcloud.sdk",
    "TuningSpec": "ftcloud.tuning.base",
    "TuningStatus": "ftcloud.tuning.base",
    "Trial": "ftcloud.tuning.base",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from ftcloud.backends.base import JobStatus, LaunchResult, LogCursor, LogEvent  # noqa: F401
    from ftcloud.endpoints.base import EndpointStatus  # noqa: F401
    from ftcloud.errors import AwsError, FtcloudError, JobNotFoundError, PlatformError, UsageError  # noqa: F401
    from ftcloud.job import ComputeSpec, DataSpec, JobSpec, NetworkSpec, PlatformSpec  # noqa: F401
    from ftcloud.planning.plan import PlanError  # noqa: F401
    from ftcloud.platform import Platform  # noqa: F401
    from ftcloud.registry.base import ModelVersion  # noqa: F401
    from ftcloud.sdk import (  # noqa: F401
        Client,
        Job,
        Tuning,
        approve,
        data_stats,
        deploy,
        get_job,
        get_tuning,
        invoke,
        jobs,
        launch,
        list_endpoints,
        load_job,
        logs,
        model_version,
        plan,
        prepare_data,
        register,
        reject,
        resume,
        spec_from,
        status,
        stop,
        stop_tuning,
        tune,
        tuning_status,
        tunings,
        undeploy,
        validate_data,
        versions,
    )
    from ftcloud.spec import SpecError, TrainingSpec  # noqa: F401
    from ftcloud.tuning.base import Trial, TuningSpec, TuningStatus  # noqa: F401
    from ftcloud_train.datasource import DataError  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ftcloud' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
