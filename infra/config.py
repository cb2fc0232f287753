"""Every knob of the platform stack, read from CDK context and validated at synth time.

The knobs come from ``cdk.json``'s ``context`` block (typed JSON) or from ``cdk synth -c key=value``
(always strings), so every reader here accepts both. A bad value stops synthesis with a
:class:`ConfigError` that names the context key, what was wrong and how to fix it; nothing is
looked up in AWS, so the same context always gives the same template.

This module imports no CDK code on purpose: tests and the README generator can use it cheaply.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ftcloud import __version__
from ftcloud.platform_outputs import DEFAULT_STACK_NAME
from ftcloud.sagemaker_facts import has_local_nvme

REPO_ROOT = Path(__file__).resolve().parent.parent
CDK_JSON = REPO_ROOT / "cdk.json"

IMAGE_SOURCES = ("asset", "ecr", "uri")
VPC_MODES = ("none", "create", "import")

#: Log retention periods CloudWatch Logs accepts (days) that we offer.
LOG_RETENTION_DAYS = (7, 14, 30, 60, 90, 180, 365, 731, 1827, 3653)

#: SageMaker instance families we accept. A typo ("ml.g5.xlargee", "g5.xlarge") is a failed
#: deployment 10 minutes later; a new family is a one-line addition here.
KNOWN_INSTANCE_FAMILIES = frozenset(
    {
        "t2", "t3", "m4", "m5", "m5d", "m6i", "m6id", "m7i", "c4", "c5", "c5d", "c5n", "c6i", "c6id",
        "c7i", "r5", "r5d", "r6i", "r6id", "r7i", "g4dn", "g5", "g6", "g6e", "gr6", "p2", "p3", "p3dn",
        "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200", "g7e", "trn1", "trn1n", "trn2", "inf1", "inf2",
    }
)  # fmt: skip

_INSTANCE_TYPE = re.compile(r"^ml\.(?P<family>[a-z][a-z0-9-]*)\.(?P<size>medium|large|xlarge|[0-9]+xlarge)$")
_PREFIX = re.compile(r"^[a-z][a-z0-9-]{1,18}[a-z0-9]$")
_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
ECR_IMAGE_PATTERN = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*)(?::(?P<tag>[A-Za-z0-9_.-]+)|@(?P<digest>sha256:[a-f0-9]{64}))$"
)
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_MODEL_PACKAGE_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/[A-Za-z0-9/-]+$")
_S3_URL = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$")
_SECRET_ARN = re.compile(
    r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$"
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_ROUTE_TABLE_ID = re.compile(r"^rtb-[0-9a-f]{8,17}$")
_CIDR = re.compile(r"^(\d{1,3}\.){3}\d{1,3}/(1[6-9]|2[0-4])$")


class ConfigError(ValueError):
    """A context value that cannot produce a working stack; the message says how to fix it."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(
            f"cdk context '{key}': {message} (set it in cdk.json 'context' or with -c {key}=...)"
        )


def _knob(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class PlatformConfig:
    """The validated platform configuration. Field names are the context keys in snake_case."""

    stack_name: str = _knob(DEFAULT_STACK_NAME, "CloudFormation stack name (the SDK's default --stack).")
    resource_prefix: str = _knob(
        "ftcloud",
        "Prefix of named resources: model package group, endpoint, dashboard, training job names.",
    )
    retain_data: bool = _knob(
        True,
        "Keep the KMS key, buckets, ECR repository, model registry and workflow logs when the stack is "
        "deleted (false: delete them; buckets and the registry must be empty).",
    )
    log_retention_days: int = _knob(365, "Retention of the workflow log group and of S3 access logs.")

    image_source: str = _knob(
        "asset",
        "asset: build training_image/ at deploy (needs Docker); ecr: a project repository you push to; "
        "uri: an existing image such as a Deep Learning Container.",
    )
    image_uri: str = _knob(
        "", "imageSource=uri: the ECR image URI (account.dkr.ecr.region.amazonaws.com/repo:tag)."
    )
    image_tag: str = _knob(__version__, "imageSource=ecr: the tag the platform uses (tags are immutable).")

    vpc_mode: str = _knob(
        "none", "none; create (a new VPC with private subnets); or import (vpcId + vpcSubnetIds)."
    )
    vpc_cidr: str = _knob("10.42.0.0/16", "vpcMode=create: the VPC CIDR block.")
    vpc_max_azs: int = _knob(2, "vpcMode=create: availability zones to spread subnets over.")
    vpc_nat_gateways: int = _knob(
        0, "vpcMode=create: NAT gateways. 0 keeps subnets isolated (S3 through the gateway endpoint only)."
    )
    vpc_id: str = _knob("", "vpcMode=import: the VPC id.")
    vpc_subnet_ids: tuple[str, ...] = _knob((), "vpcMode=import: private subnet ids (comma-separated).")
    vpc_route_table_ids: tuple[str, ...] = _knob(
        (),
        "vpcMode=import: route tables of those subnets, one per subnet; given, an S3 gateway endpoint "
        "is added to them. Leave empty if the VPC already has one.",
    )
    network_isolation: bool = _knob(
        True,
        "Run workflow training jobs and the endpoint without network access (base model then comes "
        "from the 'model' channel).",
    )
    hf_token_secret_arn: str = _knob(
        "", "Full Secrets Manager ARN (with its -XXXXXX suffix) of a Hugging Face token the role may read."
    )

    training_instance_type: str = _knob("ml.g5.2xlarge", "Workflow default training instance type.")
    training_instance_count: int = _knob(1, "Workflow default instance count.")
    training_volume_size_gb: int = _knob(200, "Workflow default EBS volume per instance (GB).")
    training_max_runtime_hours: int = _knob(24, "Workflow default stopping condition (hours).")
    checkpoint_retention_days: int = _knob(
        30, "Checkpoints under s3://<artifact bucket>/ftcloud/checkpoints/ expire after this."
    )

    endpoint_enabled: bool = _knob(
        False, "Deploy the inference endpoint (needs a model package ARN or model data URL)."
    )
    endpoint_model_package_arn: str = _knob("", "Approved model package to serve.")
    endpoint_model_data_url: str = _knob(
        "", "Or: s3:// URL of a model.tar.gz served with the platform image."
    )
    endpoint_instance_type: str = _knob("ml.g5.xlarge", "Endpoint instance type.")
    endpoint_min_capacity: int = _knob(1, "Autoscaling minimum instance count.")
    endpoint_max_capacity: int = _knob(2, "Autoscaling maximum instance count.")
    endpoint_target_invocations: int = _knob(
        5, "Target tracking: invocations per instance per minute that autoscaling keeps."
    )
    endpoint_scale_in_cooldown_seconds: int = _knob(900, "Wait after a scale-in before another scale-in.")
    endpoint_scale_out_cooldown_seconds: int = _knob(300, "Wait after a scale-out before another scale-out.")
    endpoint_data_capture: bool = _knob(
        False, "Capture requests/responses to s3://<artifact bucket>/ftcloud/data-capture/."
    )
    endpoint_data_capture_percent: int = _knob(20, "Share of requests captured (1-100).")

    alarm_email: str = _knob("", "Optional e-mail subscribed to the alarm topic.")

    # ---------------------------------------------------------------- derived
    @property
    def vpc_enabled(self) -> bool:
        return self.vpc_mode != "none"

    @property
    def endpoint_name(self) -> str:
        return f"{self.resource_prefix}-endpoint"

    @property
    def model_package_group_name(self) -> str:
        return f"{self.resource_prefix}-models"

    @property
    def dashboard_name(self) -> str:
        return f"{self.resource_prefix}-platform"

    @property
    def training_job_prefix(self) -> str:
        """Workflow training jobs are named ``<prefix>-<trainingJobName>``; IAM is scoped to it."""
        return f"{self.resource_prefix}-"

    @property
    def endpoint_kms_supported(self) -> bool:
        """False for instance types with local NVMe storage: it is hardware-encrypted and SageMaker
        rejects a KmsKeyId for them (the SDK applies the same rule to training volumes)."""
        return not has_local_nvme(self.endpoint_instance_type)

    # ------------------------------------------------------------- reading
    @classmethod
    def context_keys(cls) -> dict[str, str]:
        """Context key (camelCase) -> field name."""
        return {_camel(f.name): f.name for f in fields(cls)}

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str]]:
        """``(context key, default, help)`` for every knob (used by docs and error messages)."""
        return [(_camel(f.name), f.default, f.metadata["help"]) for f in fields(cls)]

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> PlatformConfig:
        """Build and validate from a context mapping (cdk.json context merged with ``-c`` values).

        Keys that are not ours (feature flags, ``aws:cdk:*``) are ignored, except near-misses of our
        keys, which are errors: a typo must not silently fall back to a default.
        """
        known = cls.context_keys()
        values: dict[str, Any] = {}
        for key, raw in context.items():
            if key in known:
                values[known[key]] = raw
                continue
            if ":" in key or key.startswith("@"):
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
            if close:
                raise ConfigError(key, f"unknown key; did you mean '{close[0]}'?")
        parsed: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in values or values[f.name] is None:
                continue
            parsed[f.name] = _coerce(_camel(f.name), values[f.name], f.default)
        config = cls(**parsed)
        config.validate()
        return config

    # ---------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` for the first value that cannot produce a working stack."""
        if not _STACK_NAME.match(self.stack_name):
            raise ConfigError(
                "stackName", f"{self.stack_name!r} is not a valid stack name (letters, digits, '-')."
            )
        if not _PREFIX.match(self.resource_prefix):
            raise ConfigError(
                "resourcePrefix",
                f"{self.resource_prefix!r} must be 3-20 lower-case letters, digits or '-', starting with a letter.",
            )
        _one_of("logRetentionDays", self.log_retention_days, LOG_RETENTION_DAYS)
        self._validate_image()
        self._validate_network()
        if self.hf_token_secret_arn and not _SECRET_ARN.match(self.hf_token_secret_arn):
            raise ConfigError(
                "hfTokenSecretArn",
                f"{self.hf_token_secret_arn!r} is not a Secrets Manager secret ARN "
                "with its 6-character suffix (arn:aws:secretsmanager:<region>:<account>:secret:<name>-AbCdEf; "
                "see `aws secretsmanager describe-secret --secret-id <name> --query ARN`).",
            )
        validate_instance_type("trainingInstanceType", self.training_instance_type)
        _in_range("trainingInstanceCount", self.training_instance_count, 1, 64)
        _in_range("trainingVolumeSizeGb", self.training_volume_size_gb, 1, 16384)
        # SageMaker's limit for MaxRuntimeInSeconds is 28 days.
        _in_range("trainingMaxRuntimeHours", self.training_max_runtime_hours, 1, 28 * 24)
        _in_range("checkpointRetentionDays", self.checkpoint_retention_days, 1, 3650)
        self._validate_endpoint()
        if self.alarm_email and not _EMAIL.match(self.alarm_email):
            raise ConfigError("alarmEmail", f"{self.alarm_email!r} is not an e-mail address.")

    def _validate_image(self) -> None:
        _one_of("imageSource", self.image_source, IMAGE_SOURCES)
        if self.image_source == "uri":
            if not self.image_uri:
                raise ConfigError("imageUri", "imageSource=uri needs imageUri (an ECR image URI).")
            if not ECR_IMAGE_PATTERN.match(self.image_uri):
                raise ConfigError(
                    "imageUri",
                    f"{self.image_uri!r} is not an ECR image URI "
                    "(<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>); SageMaker pulls from ECR only.",
                )
        elif self.image_uri:
            raise ConfigError(
                "imageUri", f"is set but imageSource={self.image_source!r}; set imageSource=uri to use it."
            )
        if not _IMAGE_TAG.match(self.image_tag):
            raise ConfigError("imageTag", f"{self.image_tag!r} is not a valid image tag.")

    def _validate_network(self) -> None:
        _one_of("vpcMode", self.vpc_mode, VPC_MODES)
        if self.vpc_mode == "create":
            if not _CIDR.match(self.vpc_cidr):
                raise ConfigError(
                    "vpcCidr", f"{self.vpc_cidr!r} must be an IPv4 CIDR block between /16 and /24."
                )
            _in_range("vpcMaxAzs", self.vpc_max_azs, 1, 6)
            _in_range("vpcNatGateways", self.vpc_nat_gateways, 0, self.vpc_max_azs)
        if self.vpc_mode == "import":
            if not _VPC_ID.match(self.vpc_id):
                raise ConfigError(
                    "vpcId", f"vpcMode=import needs a VPC id like vpc-0123abcd, got {self.vpc_id!r}."
                )
            if not self.vpc_subnet_ids:
                raise ConfigError("vpcSubnetIds", "vpcMode=import needs at least one private subnet id.")
            for subnet in self.vpc_subnet_ids:
                if not _SUBNET_ID.match(subnet):
                    raise ConfigError("vpcSubnetIds", f"{subnet!r} is not a subnet id like subnet-0123abcd.")
            for table in self.vpc_route_table_ids:
                if not _ROUTE_TABLE_ID.match(table):
                    raise ConfigError(
                        "vpcRouteTableIds", f"{table!r} is not a route table id like rtb-0123abcd."
                    )
            if self.vpc_route_table_ids and len(self.vpc_route_table_ids) != len(self.vpc_subnet_ids):
                raise ConfigError(
                    "vpcRouteTableIds",
                    f"give one route table per subnet ({len(self.vpc_subnet_ids)}), "
                    f"got {len(self.vpc_route_table_ids)}; or none if the VPC already has an S3 gateway endpoint.",
                )
        elif self.vpc_id or self.vpc_subnet_ids or self.vpc_route_table_ids:
            raise ConfigError(
                "vpcMode",
                f"vpcId/vpcSubnetIds/vpcRouteTableIds are set but vpcMode={self.vpc_mode!r}; set vpcMode=import.",
            )

    def _validate_endpoint(self) -> None:
        if self.endpoint_model_package_arn and self.endpoint_model_data_url:
            raise ConfigError(
                "endpointModelPackageArn",
                "give either endpointModelPackageArn or endpointModelDataUrl, not both.",
            )
        if self.endpoint_model_package_arn and not _MODEL_PACKAGE_ARN.match(self.endpoint_model_package_arn):
            raise ConfigError(
                "endpointModelPackageArn",
                f"{self.endpoint_model_package_arn!r} is not a model package ARN "
                "(arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>).",
            )
        if self.endpoint_model_data_url and not _S3_URL.match(self.endpoint_model_data_url):
            raise ConfigError(
                "endpointModelDataUrl", f"{self.endpoint_model_data_url!r} is not an s3://bucket/key URL."
            )
        if self.endpoint_enabled and not (self.endpoint_model_package_arn or self.endpoint_model_data_url):
            raise ConfigError(
                "endpointEnabled",
                "the endpoint is enabled but no model is given: set endpointModelPackageArn "
                "(an approved package from the model registry) or endpointModelDataUrl (s3://.../model.tar.gz).",
            )
        validate_instance_type("endpointInstanceType", self.endpoint_instance_type)
        _in_range("endpointMinCapacity", self.endpoint_min_capacity, 1, 100)
        _in_range("endpointMaxCapacity", self.endpoint_max_capacity, 1, 100)
        if self.endpoint_min_capacity > self.endpoint_max_capacity:
            raise ConfigError(
                "endpointMinCapacity",
                f"{self.endpoint_min_capacity} is greater than endpointMaxCapacity={self.endpoint_max_capacity}; "
                "autoscaling needs min <= max.",
            )
        _in_range("endpointTargetInvocations", self.endpoint_target_invocations, 1, 100000)
        _in_range("endpointScaleInCooldownSeconds", self.endpoint_scale_in_cooldown_seconds, 0, 86400)
        _in_range("endpointScaleOutCooldownSeconds", self.endpoint_scale_out_cooldown_seconds, 0, 86400)
        _in_range("endpointDataCapturePercent", self.endpoint_data_capture_percent, 1, 100)


# ------------------------------------------------------------------- helpers
def validate_instance_type(key: str, value: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` looks like a SageMaker instance type we know."""
    match = _INSTANCE_TYPE.match(value)
    if not match:
        hint = f" Did you mean 'ml.{value}'?" if _INSTANCE_TYPE.match(f"ml.{value}") else ""
        raise ConfigError(key, f"{value!r} is not a SageMaker instance type like ml.g5.2xlarge.{hint}")
    if match["family"] not in KNOWN_INSTANCE_FAMILIES:
        close = difflib.get_close_matches(match["family"], sorted(KNOWN_INSTANCE_FAMILIES), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(key, f"unknown instance family {match['family']!r} in {value!r}.{hint}")


def load_cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """The ``context`` block of ``cdk.json``: what the CDK CLI passes, for plain ``python`` synthesis."""
    return dict(json.loads(path.read_text()).get("context", {}))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _coerce(key: str, raw: Any, default: Any) -> Any:
    """Turn a cdk.json value or a ``-c`` string into the type of the field's default."""
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off", ""):
            return False
        raise ConfigError(key, f"{raw!r} is not a boolean (true/false).")
    if isinstance(default, int):
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ConfigError(key, f"{raw!r} is not a whole number.")
        try:
            return int(str(raw).strip()) if not isinstance(raw, float) else int(raw)
        except ValueError:
            raise ConfigError(key, f"{raw!r} is not a whole number.") from None
    if isinstance(default, tuple):
        items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
        return tuple(str(item).strip() for item in items if str(item).strip())
    if not isinstance(raw, str):
        raise ConfigError(key, f"{raw!r} must be a string.")
    return raw.strip()


def _in_range(key: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(key, f"{value} is out of range; allowed {low}..{high}.")


def _one_of(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(key, f"{value!r} is not one of {', '.join(map(str, allowed))}.")
