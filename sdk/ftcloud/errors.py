"""Errors written for the person who hits them, and the translation of AWS errors into them.

Every error a user can cause says what was wrong, where (file:line or field) and how to fix it.
``exit_code`` follows the CLI convention: 2 for a bad flag / file / value, 1 for everything else.
Import-light: botocore is only touched inside :func:`translate_aws_error`.
"""

from __future__ import annotations

import re
from typing import Any

#: Adaptive client-side rate limiting + retries for throttling (applies to every AWS client we build).
RETRY_CONFIG = {"mode": "adaptive", "max_attempts": 10}


class FtcloudError(Exception):
    """Base class: the message is meant to be shown to the user as is."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(f"{message} {hint}" if hint else message)


class UsageError(FtcloudError):
    """Bad flag, file or value (exit code 2)."""

    exit_code = 2


class JobNotFoundError(FtcloudError):
    """No job with that name in the selected backend."""


class PlatformError(FtcloudError):
    """The platform stack cannot be found or lacks something a command needs."""


class AwsError(FtcloudError):
    """An AWS API error, translated. ``code`` and ``operation`` keep the original facts."""

    def __init__(self, message: str, *, code: str = "", operation: str = "", hint: str | None = None):
        self.code = code
        self.operation = operation
        super().__init__(message, hint=hint)


class LaunchError(AwsError):
    """A launch failed after something was created; ``created`` lists it."""

    def __init__(self, cause: FtcloudError, created: list[str]):
        self.cause = cause
        self.created = created
        kept = (
            " Nothing was registered with SageMaker. Already uploaded (content-addressed, reused by the "
            "next launch, safe to keep): " + ", ".join(created) + "."
            if created
            else " Nothing was created."
        )
        super().__init__(
            cause.message + kept,
            code=getattr(cause, "code", ""),
            operation=getattr(cause, "operation", ""),
            hint=cause.hint,
        )


# ---------------------------------------------------------------------- AWS -> user
# CreateTrainingJob request members (as they appear in ValidationException paths) -> job spec fields.
REQUEST_FIELD_TO_SPEC = {
    "trainingjobname": "name",
    "resourceconfig.instancetype": "compute.instance_type",
    "resourceconfig.instancecount": "compute.instance_count",
    "resourceconfig.volumesizeingb": "compute.volume_size_gb",
    "resourceconfig.volumekmskeyid": "platform.kms_key",
    "stoppingcondition.maxruntimeinseconds": "compute.max_runtime",
    "stoppingcondition.maxwaittimeinseconds": "compute.max_wait",
    "retrystrategy.maximumretryattempts": "compute.max_retry_attempts",
    "rolearn": "platform.role",
    "algorithmspecification.trainingimage": "platform.image",
    "vpcconfig.subnets": "networking.subnets",
    "vpcconfig.securitygroupids": "networking.security_group_ids",
    "outputdataconfig.kmskeyid": "platform.kms_key",
    "outputdataconfig.s3outputpath": "platform.artifact_bucket",
    "checkpointconfig.s3uri": "platform.artifact_bucket",
    "hyperparameters": "training",
    "inputdataconfig": "data",
    "tags": "tags",
    "enablemanagedspottraining": "compute.spot",
    "enablenetworkisolation": "networking.network_isolation",
}

_ACCESS_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}
_BAD_CREDENTIALS = {
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
}
_THROTTLED = {"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded", "SlowDown"}


def quota_name(instance_type: str, spot: bool) -> str:
    """The Service Quotas name SageMaker uses for training capacity of one instance type."""
    return f"{instance_type} for {'spot ' if spot else ''}training job usage"


def translate_aws_error(
    exc: BaseException,
    *,
    operation: str | None = None,
    role_arn: str | None = None,
    instance_type: str | None = None,
    spot: bool | None = None,
    profile: str | None = None,
    region: str | None = None,
) -> FtcloudError:
    """Turn a botocore exception into an :class:`FtcloudError` that says what to do.

    Unknown errors keep AWS's own message (prefixed with the operation) rather than being hidden.
    """
    if isinstance(exc, FtcloudError):
        return exc
    from ftcloud.adaptors import botocore_exceptions as bex

    where = _where(profile, region)
    if isinstance(exc, bex.NoCredentialsError):
        return AwsError(
            f"No AWS credentials found{where}.",
            code="NoCredentials",
            hint="Run 'aws configure' or 'aws sso login', or pass --profile NAME.",
        )
    if isinstance(exc, bex.ProfileNotFound):
        return AwsError(
            f"AWS profile '{profile}' does not exist.",
            code="ProfileNotFound",
            hint="List profiles with 'aws configure list-profiles'.",
        )
    if isinstance(exc, bex.NoRegionError):
        return AwsError(
            "No AWS region is configured.",
            code="NoRegion",
            hint="Pass --region (e.g. --region us-east-1), set AWS_REGION, or add a region to your profile.",
        )
    if isinstance(exc, bex.EndpointConnectionError):
        return AwsError(f"Cannot reach AWS{where}: {exc}.", code="EndpointConnection",
                        hint="Check the network connection and the region name.")
    if not isinstance(exc, bex.ClientError):
        return AwsError(f"{operation or 'AWS call'} failed{where}: {exc}", code=type(exc).__name__)

    err = exc.response.get("Error", {})
    code = str(err.get("Code", ""))
    message = str(err.get("Message", "")).strip()
    op = operation or getattr(exc, "operation_name", "") or "AWS call"

    if code in _ACCESS_DENIED:
        principal, action, resource = _parse_access_denied(message)
        action = action or f"{_service_of(op)}:{op}"
        who = principal or f"the credentials in use{where}"
        text = f"Access denied: {who} is not allowed to call {action}"
        if resource:
            text += f" on {resource}"
        text += "."
        if action.lower() == "iam:passrole":
            hint = (
                f"Allow iam:PassRole on the execution role {resource or role_arn or '(see platform.role)'} "
                f"for {who}; the platform stack grants it to its launcher group."
            )
        else:
            hint = f"Ask an administrator to allow {action} for {who}."
            if role_arn:
                hint += f" Execution role in use: {role_arn}."
        return AwsError(text, code=code, operation=op, hint=hint)

    if code == "ResourceLimitExceeded":
        quoted = re.search(r"limit '([^']+)'", message)
        name = quoted.group(1) if quoted else (quota_name(instance_type, bool(spot)) if instance_type else None)
        if name:
            text = f"Service quota reached: '{name}'{where}. AWS says: {message}"
            hint = (
                f"Raise it in the Service Quotas console (Amazon SageMaker -> '{name}' -> Request increase), or: "
                f"aws service-quotas list-service-quotas --service-code sagemaker "
                f"--query \"Quotas[?QuotaName=='{name}'].QuotaCode\" then "
                "aws service-quotas request-service-quota-increase --service-code sagemaker "
                "--quota-code CODE --desired-value N."
            )
            if spot:
                hint += " On-demand capacity has its own quota: --no-spot uses it."
        else:
            text = f"Service quota reached{where}: {message}"
            hint = "Raise the quota in the Service Quotas console (service: Amazon SageMaker)."
        return AwsError(text, code=code, operation=op, hint=hint)

    if code in ("ValidationException", "ValidationError", "InvalidParameterValue"):
        fields = _validation_fields(message)
        if fields:
            return AwsError(
                f"AWS rejected {', '.join(fields)} in {op}: {message}",
                code=code,
                operation=op,
                hint="Fix that field in the job spec (YAML or flags) and launch again.",
            )
        return AwsError(f"AWS rejected the {op} request: {message}", code=code, operation=op)

    if code in _BAD_CREDENTIALS:
        return AwsError(
            f"AWS did not accept the credentials{where} ({code}): {message}",
            code=code,
            operation=op,
            hint="Refresh them ('aws sso login --profile NAME' or new access keys) and retry.",
        )

    if code in _THROTTLED:
        return AwsError(
            f"AWS kept throttling {op}{where} after {RETRY_CONFIG['max_attempts']} adaptive retries.",
            code=code,
            operation=op,
            hint="Wait a minute and retry, or reduce concurrent launches.",
        )

    return AwsError(f"{op} failed{where} ({code}): {message}", code=code, operation=op)


def _where(profile: str | None, region: str | None) -> str:
    parts = [p for p in (f"profile {profile}" if profile else "", f"region {region}" if region else "") if p]
    return f" ({', '.join(parts)})" if parts else ""


def _service_of(operation: str) -> str:
    if operation in ("DescribeStacks",):
        return "cloudformation"
    if operation in ("PutObject", "HeadObject", "GetObject", "ListObjectsV2"):
        return "s3"
    if operation in ("GetLogEvents", "DescribeLogStreams", "FilterLogEvents"):
        return "logs"
    return "sagemaker"


_DENIED_RE = re.compile(
    r"(?:User|Principal):?\s+(?P<principal>arn:\S+)\s+is not authorized to perform:?\s+(?P<action>[\w-]+:[\w*]+)"
    r"(?:\s+on resource:?\s+(?P<resource>[^\s,]+))?",
    re.IGNORECASE,
)


def _parse_access_denied(message: str) -> tuple[str | None, str | None, str | None]:
    match = _DENIED_RE.search(message)
    if not match:
        action = re.search(r"\b([a-z0-9-]+:[A-Z][A-Za-z]+)\b", message)
        return None, action.group(1) if action else None, None
    resource = match.group("resource")
    if resource:
        resource = resource.rstrip(".")
    return match.group("principal"), match.group("action"), resource


def _validation_fields(message: str) -> list[str]:
    """Job spec fields named by a ValidationException message (``at 'resourceConfig.instanceType'``)."""
    found: list[str] = []
    for path in re.findall(r"at '([^']+)'", message):
        found.append(_spec_field_for(path))
    if not found:
        lowered = message.lower()
        for aws_path, spec_field in REQUEST_FIELD_TO_SPEC.items():
            leaf = aws_path.rsplit(".", 1)[-1]
            if len(leaf) > 6 and leaf in lowered.replace(" ", "") and spec_field not in found:
                found.append(spec_field)
    return found


def _spec_field_for(path: str) -> str:
    normalized = re.sub(r"\.\d+", "", re.sub(r"\[\d+\]", "", path)).lower()
    normalized = re.sub(r"\.member", "", normalized)
    while normalized:
        if normalized in REQUEST_FIELD_TO_SPEC:
            return f"{REQUEST_FIELD_TO_SPEC[normalized]} ({path})"
        if "." not in normalized:
            break
        normalized = normalized.rsplit(".", 1)[0]
    return path


def describe_exception(exc: BaseException) -> dict[str, Any]:
    """A JSON-friendly description of an error (for ``--json`` output)."""
    return {
        "error": type(exc).__name__,
        "message": str(exc),
        "code": getattr(exc, "code", None),
        "field": getattr(exc, "field", None),
    }
