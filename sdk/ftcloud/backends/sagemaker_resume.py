"""Continue a stopped or failed SageMaker training job from its S3 checkpoints.

A SageMaker job cannot be restarted in place. ``ftcloud resume JOB`` creates a new job from
the old one's DescribeTrainingJob response, field for field, keeping its ``CheckpointConfig``:
SageMaker downloads that S3 prefix into ``/opt/ml/checkpoints`` before the container starts,
and the entrypoint resumes from the newest complete checkpoint there (optimizer, scheduler,
RNG and data position). The new job writes its checkpoints to the same prefix, so it can be
resumed in turn. Import-light: no boto3.
"""

from __future__ import annotations

import re
from typing import Any

#: SageMaker training job names: 1-63 characters, letters, digits and hyphens.
MAX_JOB_NAME = 63
RESUMABLE_STATES = ("Stopped", "Failed")
RESUMED_FROM_TAG = "ftcloud:resumed-from"

#: DescribeTrainingJob fields that CreateTrainingJob takes unchanged.
_COPIED = (
    "RoleArn",
    "AlgorithmSpecification",
    "HyperParameters",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "VpcConfig",
    "StoppingCondition",
    "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption",
    "EnableManagedSpotTraining",
    "CheckpointConfig",
    "RetryStrategy",
    "Environment",
)
#: Describe-only parts of AlgorithmSpecification that CreateTrainingJob rejects.
_ALGORITHM_DESCRIBE_ONLY = ("AlgorithmName",)

_SUFFIX = re.compile(r"^(?P<base>.*)-r(?P<n>\d+)$")


def resumed_name(name: str) -> str:
    """``job`` -> ``job-r2``, ``job-r2`` -> ``job-r3``; cut to SageMaker's 63 characters."""
    match = _SUFFIX.match(name)
    base, n = (match["base"], int(match["n"]) + 1) if match else (name, 2)
    suffix = f"-r{n}"
    return base[: MAX_JOB_NAME - len(suffix)].rstrip("-") + suffix


def resume_request(describe: dict[str, Any], tags: list[dict[str, str]], new_name: str) -> dict[str, Any]:
    """The CreateTrainingJob request that continues ``describe``'s job under ``new_name``.

    Raises ``ValueError`` (with the reason) when the job cannot be continued.
    """
    name = describe["TrainingJobName"]
    status = describe.get("TrainingJobStatus", "")
    if status not in RESUMABLE_STATES:
        raise ValueError(f"job '{name}' is {status}; only Stopped or Failed jobs can be resumed.")
    if not (describe.get("CheckpointConfig") or {}).get("S3Uri"):
        raise ValueError(f"job '{name}' has no CheckpointConfig, so there is nothing to resume from.")
    request: dict[str, Any] = {"TrainingJobName": new_name}
    for key in _COPIED:
        if describe.get(key) not in (None, {}, []):
            request[key] = describe[key]
    request["AlgorithmSpecification"] = {
        k: v for k, v in request["AlgorithmSpecification"].items() if k not in _ALGORITHM_DESCRIBE_ONLY
    }
    kept = [t for t in tags if t["Key"] != RESUMED_FROM_TAG and not t["Key"].startswith("aws:")]
    request["Tags"] = [*kept, {"Key": RESUMED_FROM_TAG, "Value": name}]
    return request
