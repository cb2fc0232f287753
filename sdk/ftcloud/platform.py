"""Platform discovery: what the infra stack created, read from its CloudFormation outputs.

The output names live in :mod:`ftcloud.platform_outputs`, shared with ``infra/``. Values set
explicitly in the job spec (``platform.role``, ``platform.image``, ...) win over the stack's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ftcloud import platform_outputs as po
from ftcloud.errors import PlatformError, translate_aws_error


@dataclass
class Platform:
    """The stack's outputs plus where they came from (``cloudformation``, ``cache`` or ``none``)."""

    stack: str
    region: str | None
    outputs: dict[str, str] = field(default_factory=dict)
    source: str = "cloudformation"

    def get(self, key: str) -> str | None:
        value = self.outputs.get(key)
        return value or None

    def get_list(self, key: str) -> list[str]:
        value = self.get(key)
        return [v.strip() for v in value.split(",") if v.strip()] if value else []

    @property
    def role(self) -> str | None:
        return self.get(po.EXECUTION_ROLE_ARN)

    @property
    def image(self) -> str | None:
        return self.get(po.IMAGE_URI)

    @property
    def kms_key(self) -> str | None:
        return self.get(po.KMS_KEY_ARN)

    @property
    def data_bucket(self) -> str | None:
        return self.get(po.DATASET_BUCKET)

    @property
    def artifact_bucket(self) -> str | None:
        return self.get(po.ARTIFACT_BUCKET)

    @property
    def subnets(self) -> list[str]:
        return self.get_list(po.SUBNET_IDS)

    @property
    def security_group_ids(self) -> list[str]:
        return self.get_list(po.SECURITY_GROUP_IDS)

    @property
    def hf_token_secret_arn(self) -> str | None:
        return self.get(po.HF_TOKEN_SECRET_ARN)

    def rows(self) -> list[dict[str, Any]]:
        """One row per known output (found or not), then any extra outputs the stack has."""
        rows = [
            {"output": key, "value": self.outputs.get(key), "description": desc}
            for key, desc in po.DESCRIPTIONS.items()
        ]
        rows += [
            {"output": key, "value": value, "description": ""}
            for key, value in sorted(self.outputs.items())
            if key not in po.DESCRIPTIONS
        ]
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"stack": self.stack, "region": self.region, "source": self.source, "outputs": dict(self.outputs)}


def discover(aws: Any, stack: str) -> Platform:
    """Read ``stack``'s outputs with DescribeStacks (one call)."""
    from ftcloud.adaptors import botocore_exceptions

    cfn = aws.client("cloudformation")
    try:
        response = cfn.describe_stacks(StackName=stack)
    except botocore_exceptions.ClientError as exc:
        if "does not exist" in exc.response.get("Error", {}).get("Message", ""):
            raise PlatformError(
                f"Platform stack '{stack}' was not found in region {aws.region or '(default)'}"
                f"{' with profile ' + aws.profile if aws.profile else ''}.",
                hint="Deploy it (cd infra && cdk deploy), or pick another with --stack NAME or "
                "'ftcloud platform use NAME', or pass --region.",
            ) from None
        raise translate_aws_error(exc, operation="DescribeStacks", profile=aws.profile, region=aws.region) from None
    except botocore_exceptions.BotoCoreError as exc:
        raise translate_aws_error(exc, operation="DescribeStacks", profile=aws.profile, region=aws.region) from None
    stacks = response.get("Stacks") or []
    if not stacks:
        raise PlatformError(f"Platform stack '{stack}' was not found.")
    status = stacks[0].get("StackStatus", "")
    if status.endswith("_FAILED") or status.startswith("DELETE") or status == "ROLLBACK_COMPLETE":
        raise PlatformError(
            f"Platform stack '{stack}' is in state {status}; its outputs cannot be trusted.",
            hint="Fix the deployment (cdk deploy) and try again.",
        )
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in stacks[0].get("Outputs") or []}
    return Platform(stack=stack, region=aws.region, outputs=outputs, source="cloudformation")


def cache_entry(platform: Platform) -> dict[str, Any]:
    return {**platform.to_dict(), "fetched_at": int(time.time())}
