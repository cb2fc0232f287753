"""Endpoints: deploy a trained model, list, invoke and undeploy it, locally or on SageMaker.

One interface (:class:`~ftcloud.endpoints.base.Endpoints`) with two implementations, each in
its own module and imported only when selected: :mod:`ftcloud.endpoints.local` (the ``serve``
entrypoint as a detached local process) and :mod:`ftcloud.endpoints.sagemaker` (boto3:
CreateModel / CreateEndpointConfig / CreateEndpoint or a blue/green UpdateEndpoint, plus
Application Auto Scaling). Import-light: nothing here imports boto3.
"""

from __future__ import annotations

from ftcloud.endpoints.base import (
    ENDPOINT_FAILED_STATES,
    DeployError,
    DeployTarget,
    EndpointNotFoundError,
    Endpoints,
    EndpointStatus,
    build_payload,
    generated_text,
    parse_params,
    parse_target,
)

__all__ = [
    "ENDPOINT_FAILED_STATES",
    "DeployError",
    "DeployTarget",
    "EndpointNotFoundError",
    "EndpointStatus",
    "Endpoints",
    "build_payload",
    "generated_text",
    "parse_params",
    "parse_target",
]
