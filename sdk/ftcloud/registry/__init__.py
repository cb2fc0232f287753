"""The model registry: register a finished job as a model version, approve or reject it, list versions.

One interface (:class:`~ftcloud.registry.base.Registry`), two implementations: ``local`` keeps
JSON records under ``$FTCLOUD_HOME/registry``; ``sagemaker`` uses SageMaker model package groups.
Both return the same :class:`~ftcloud.registry.base.ModelVersion` records. Implementations are
imported only when selected (boto3 stays out of ``ftcloud --help``).
"""

from __future__ import annotations

from ftcloud.registry.base import (
    APPROVAL_STATUSES,
    DEFAULT_LOCAL_GROUP,
    ApprovalEvent,
    ModelVersion,
    Registry,
    VersionRef,
    parse_ref,
)

__all__ = [
    "APPROVAL_STATUSES",
    "DEFAULT_LOCAL_GROUP",
    "ApprovalEvent",
    "ModelVersion",
    "Registry",
    "VersionRef",
    "parse_ref",
]
