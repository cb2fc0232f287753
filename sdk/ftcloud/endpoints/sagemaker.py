"""SageMaker endpoints: plain boto3 CreateModel / CreateEndpointConfig / CreateEndpoint, blue/green
UpdateEndpoint, Application Auto Scaling, sagemaker-runtime InvokeEndpoint.

What ``deploy`` does, in order (``deploy --dry-run`` prints the same requests, sends none):

1. Validate the options (:meth:`DeployOptions.validate`): serverless limits (MemorySizeInMB
   1024-6144 in 1 GB steps, MaxConcurrency 1-200; no instance type / GPU, no VPC, no network
   isolation, no data capture, no autoscaling), capacities, strategy. All before any AWS call.
2. Resolve the target. A registry version (GROUP:VERSION, GROUP = its newest Approved version,
   or a package ARN) must be Approved and deploys as ``PrimaryContainer.ModelPackageName``. A
   training job name is the explicit shortcut: the job's ``S3ModelArtifacts`` served by the
   platform image (``Image`` + ``ModelDataUrl`` + ``Environment``), with the job's network
   isolation and, for an adapter-only artifact whose base came through the ``model`` channel, that
   S3 base attached as the additional model data source ``base``.
3. ``CreateModel`` (ExecutionRoleArn, VpcConfig and EnableNetworkIsolation as the platform sets
   them), ``CreateEndpointConfig`` (one variant ``AllTraffic``; KmsKeyId except on NVMe instance
   types and serverless), then ``CreateEndpoint``, or for an existing endpoint ``UpdateEndpoint``
   with a blue/green ``DeploymentConfig`` (CANARY by default, LINEAR, ALL_AT_ONCE) whose
   ``AutoRollbackConfiguration`` names the endpoint's latency and 5XX alarms
   (:mod:`ftcloud.endpoints.alarms`; created with the endpoint unless they exist).
4. Wait for InService (Failed, RollingBack, UpdateRollbackFailed are failures, with
   DescribeEndpoint's FailureReason), then ``RegisterScalableTarget`` + ``PutScalingPolicy``
   (target tracking on ``SageMakerVariantInvocationsPerInstance`` with cooldowns). An update
   that changes the instance type of an autoscaled variant deregisters the target first (AWS
   refuses the update otherwise) and registers it again after.

``undeploy`` deletes the scaling target, the endpoint, its config and model (older ftcloud-made
configs and models of the endpoint too) and the alarms ftcloud created; never a registry entry.

Models too large for this container: ``image=`` (``--image``) swaps the serving image for an AWS
LLM inference container (LMI / vLLM, e.g. a ``djl-inference:...-lmi...`` URI) and ``env=``
(``--env K=V``) passes its settings (``OPTION_ENABLE_LORA=true``, ``OPTION_MAX_LORAS``, ...); the
artifact is unchanged and the request shape (``inputs``/``parameters``, adapter per request
through ``CustomAttributes: adapter=NAME``) is LMI's own.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ftcloud import platform_outputs as po
from ftcloud.contract import MAX_REQUEST_BYTES, SERVE_ENV_DEFAULTS
from ftcloud.endpoints.alarms import CREATED_BY_TAG, rollback_alarm_names, rollback_alarm_requests
from ftcloud.endpoints.base import (
    ENDPOINT_FAILED_STATES,
    DeployError,
    EndpointNotFoundError,
    Endpoints,
    EndpointStatus,
    Progress,
    adapter_attribute,
    check_endpoint_name,
    default_endpoint_name,
    iter_stream_text,
    parse_target,
)
from ftcloud.errors import FtcloudError, UsageError
from ftcloud.sagemaker_facts import has_local_nvme

VARIANT_NAME = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
SCALING_METRIC = "SageMakerVariantInvocationsPerInstance"
#: Defaults shared with the platform's own endpoint (infra/config.py).
DEFAULT_INSTANCE_TYPE = "ml.g5.xlarge"
DEFAULT_MAX_CAPACITY = 2
DEFAULT_TARGET_INVOCATIONS = 5  # invocations per instance per minute
DEFAULT_SCALE_IN_COOLDOWN_S = 900
DEFAULT_SCALE_OUT_COOLDOWN_S = 300
#: LLM weights take minutes to download and load, far beyond SageMaker's 60 s defaults.
MODEL_DOWNLOAD_TIMEOUT_S = 1800
CONTAINER_STARTUP_TIMEOUT_S = 1800
#: Serverless limits (AWS): memory in 1 GB steps, concurrency per endpoint.
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
SERVERLESS_MAX_CONCURRENCY = 200
STRATEGIES = ("canary", "linear", "all-at-once")
DATA_CAPTURE_PREFIX = "ftcloud/data-capture/"
DEFAULT_WAIT_TIMEOUT_S = 3600.0
#: Names ftcloud gives the models and configs of an endpoint: <endpoint>-<UTC stamp>.
_STAMP_RE = r"\d{8}-\d{6}"


@dataclass
class DeployOptions:
    """How to deploy on SageMaker. Every field has a CLI flag of the same name."""

    instance_type: str | None = None  # default ml.g5.xlarge (serverless: none)
    instance_count: int = 1
    serverless_memory: int | None = None  # MB; with serverless_concurrency: a serverless endpoint
    serverless_concurrency: int | None = None
    min_capacity: int | None = None  # autoscaling; default instance_count
    max_capacity: int | None = None  # default max(min_capacity, 2)
    target_invocations: int = DEFAULT_TARGET_INVOCATIONS
    scale_in_cooldown: int = DEFAULT_SCALE_IN_COOLDOWN_S
    scale_out_cooldown: int = DEFAULT_SCALE_OUT_COOLDOWN_S
    strategy: str = "canary"  # traffic shifting of updates: canary | linear | all-at-once
    canary_percent: int = 10  # canary: share of capacity that gets traffic first
    linear_step_percent: int = 25  # linear: share shifted per step
    bake_seconds: int = 600  # wait between traffic steps (and before the old fleet is removed)
    rollback_alarms: list[str] | None = None  # default: <endpoint>-latency-p99, <endpoint>-5xx-rate
    image: str | None = None  # another serving image (e.g. an AWS LMI / vLLM container)
    env: dict[str, str] = field(default_factory=dict)  # container environment (added to the defaults)
    network_isolation: bool | None = None  # default: the job's setting, else True (the platform default)
    vpc: bool = True  # use the platform's subnets and security groups when it has them
    data_capture_percent: int | None = None  # capture requests/responses to the artifact bucket
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def serverless(self) -> bool:
        return self.serverless_memory is not None or self.serverless_concurrency is not None

    def validate(self) -> DeployOptions:
        """Check everything that needs no AWS call; errors name the flag and say how to fix it."""
        if self.serverless:
            if self.serverless_memory is None or self.serverless_concurrency is None:
                missing = "--serverless-memory" if self.serverless_memory is None else "--serverless-concurrency"
                raise UsageError(f"a serverless endpoint needs both --serverless-memory and --serverless-concurrency; "
                                 f"{missing} is missing.", hint="e.g. --serverless-memory 4096 --serverless-concurrency 5")
            if self.serverless_memory not in SERVERLESS_MEMORY_MB:
                raise UsageError(
                    f"--serverless-memory {self.serverless_memory}: serverless endpoints take 1024-6144 MB in "
                    f"1024 MB steps ({', '.join(map(str, SERVERLESS_MEMORY_MB))}).")
            if not 1 <= self.serverless_concurrency <= SERVERLESS_MAX_CONCURRENCY:
                raise UsageError(f"--serverless-concurrency {self.serverless_concurrency}: must be 1-"
                                 f"{SERVERLESS_MAX_CONCURRENCY}.")
            conflicts = [flag for flag, given in (
                ("--instance-type (serverless endpoints have no instances and no GPU)", self.instance_type),
                ("--instance-count", self.instance_count != 1),
                ("--min-capacity/--max-capacity (serverless scales itself)",
                 self.min_capacity is not None or self.max_capacity is not None),
                ("--data-capture (serverless endpoints cannot capture data)", self.data_capture_percent),
                ("--network-isolation (not supported by serverless endpoints)", self.network_isolation),
            ) if given]
            if conflicts:
                raise UsageError(
                    "serverless endpoints cannot use " + "; ".join(conflicts) + ".",
                    hint="Drop those flags, or drop --serverless-* for an instance endpoint (GPU, VPC, scaling).",
                )
        else:
            if self.instance_count < 1:
                raise UsageError(f"--instance-count {self.instance_count}: must be at least 1.")
            lo, hi = self.capacity
            if lo < 1 or hi < lo:
                raise UsageError(f"--min-capacity {lo} / --max-capacity {hi}: need 1 <= min <= max.")
            if not lo <= self.instance_count <= hi:
                raise UsageError(
                    f"--instance-count {self.instance_count} is outside --min-capacity {lo} .. --max-capacity {hi}.")
            if self.target_invocations < 1:
                raise UsageError("--target-invocations must be at least 1 (invocations per instance per minute).")
            if self.data_capture_percent is not None and not 1 <= self.data_capture_percent <= 100:
                raise UsageError(f"--data-capture {self.data_capture_percent}: a percentage, 1-100.")
        if self.strategy not in STRATEGIES:
            raise UsageError(f"--strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}.")
        if not 1 <= self.canary_percent <= 50:
            raise UsageError(f"canary_percent {self.canary_percent}: 1-50 (% of capacity that takes traffic first).")
        if not 1 <= self.linear_step_percent <= 50:
            raise UsageError(f"linear_step_percent {self.linear_step_percent}: 1-50 (% shifted per step).")
        if not 0 <= self.bake_seconds <= 3600:
            raise UsageError(f"bake_seconds {self.bake_seconds}: 0-3600 (SageMaker's WaitIntervalInSeconds).")
        for cooldown in (self.scale_in_cooldown, self.scale_out_cooldown):
            if cooldown < 0:
                raise UsageError("scaling cooldowns must be >= 0 seconds.")
        if self.rollback_alarms is not None and not 1 <= len(self.rollback_alarms) <= 10:
            raise UsageError(f"--rollback-alarm: 1-10 alarms (SageMaker's limit), got {len(self.rollback_alarms)}.")
        bad_env = [k for k in self.env if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(k))]
        if bad_env:
            raise UsageError(f"--env {bad_env[0]!r}: environment variable names use letters, digits and '_'.")
        if self.image is not None and not re.fullmatch(r"[\w.\-/:@]+", self.image):
            raise UsageError(f"--image {self.image!r} is not an image URI (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG).")
        return self

    @property
    def capacity(self) -> tuple[int, int]:
        lo = self.min_capacity if self.min_capacity is not None else self.instance_count
        hi = self.max_capacity if self.max_capacity is not None else max(lo, DEFAULT_MAX_CAPACITY)
        return lo, hi

    @property
    def effective_instance_type(self) -> str | None:
        return None if self.serverless else (self.instance_type or DEFAULT_INSTANCE_TYPE)


@dataclass
class ModelSource:
    """What the model serves: a package, or an image + artifact (+ environment, base model)."""

    target: str
    package_arn: str | None = None
    image: str | None = None
    model_data_url: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    base_model_s3: str | None = None  # attached as additional model data source "base"
    network_isolation: bool | None = None  # the training job's, for a job deploy
    vpc: dict[str, list[str]] | None = None  # the training job's, for a job deploy
    fallback_image: str | None = None  # the image that trained the job, when the platform exports none


@dataclass
class PlatformValues:
    role: str | None = None
    image: str | None = None
    kms_key: str | None = None
    artifact_bucket: str | None = None
    subnets: list[str] = field(default_factory=list)
    security_group_ids: list[str] = field(default_factory=list)
    alarm_topic: str | None = None

    @classmethod
    def from_platform(cls, platform: Any) -> PlatformValues:
        return cls(role=platform.role, image=platform.image, kms_key=platform.kms_key,
                   artifact_bucket=platform.artifact_bucket, subnets=platform.subnets,
                   security_group_ids=platform.security_group_ids, alarm_topic=platform.get(po.ALARM_TOPIC_ARN))


@dataclass
class Current:
    """The endpoint as it is now (None fields: it does not exist)."""

    status: str | None = None
    config_name: str | None = None
    instance_type: str | None = None
    serverless: bool = False
    model_names: list[str] = field(default_factory=list)
    scaling_registered: bool = False
    existing_alarms: list[str] = field(default_factory=list)


@dataclass
class DeployPlan:
    """Every request of one deploy, in the order they are sent."""

    endpoint: str
    model: dict[str, Any]
    config: dict[str, Any]
    action: str  # create | update
    endpoint_request: dict[str, Any]
    alarms: list[dict[str, Any]] = field(default_factory=list)  # PutMetricAlarm, before the endpoint
    deregister: dict[str, Any] | None = None  # before UpdateEndpoint when the instance type changes
    scaling_target: dict[str, Any] | None = None  # after InService
    scaling_policy: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def requests(self) -> list[dict[str, Any]]:
        """``[{"service", "operation", "request"}]`` in sending order (``deploy --dry-run``)."""
        steps: list[tuple[str, str, dict | None]] = [
            ("sagemaker", "CreateModel", self.model),
            ("sagemaker", "CreateEndpointConfig", self.config),
            *(("cloudwatch", "PutMetricAlarm", a) for a in self.alarms),
            ("application-autoscaling", "DeregisterScalableTarget", self.deregister),
            ("sagemaker", "CreateEndpoint" if self.action == "create" else "UpdateEndpoint", self.endpoint_request),
            ("application-autoscaling", "RegisterScalableTarget", self.scaling_target),
            ("application-autoscaling", "PutScalingPolicy", self.scaling_policy),
        ]
        return [{"service": s, "operation": o, "request": r} for s, o, r in steps if r is not None]


def resource_id(endpoint: str) -> str:
    return f"endpoint/{endpoint}/variant/{VARIANT_NAME}"


def plan_deploy(
    endpoint: str,
    source: ModelSource,
    platform: PlatformValues,
    options: DeployOptions,
    current: Current,
    stamp: str,
) -> DeployPlan:
    """The exact requests for one deploy: a pure function (no AWS call), tested request by request."""
    options.validate()
    notes: list[str] = []
    if not platform.role:
        raise UsageError(
            "no SageMaker execution role: the platform stack exports none.",
            hint=f"Deploy the platform (cd infra && cdk deploy) or check --stack; it exports {po.EXECUTION_ROLE_ARN}.",
        )
    serverless = options.serverless
    if current.status and not current.serverless and serverless:
        raise UsageError(
            f"endpoint {endpoint} runs on instances; SageMaker cannot turn it into a serverless endpoint.",
            hint=f"Deploy serverless under another --name, or 'ftcloud undeploy {endpoint}' first.",
        )
    name = f"{endpoint[: 63 - len(stamp) - 1]}-{stamp}"

    # ---- CreateModel
    if source.package_arn and not options.image and not options.env:
        container: dict[str, Any] = {"ModelPackageName": source.package_arn}
    else:
        image = options.image or source.image or platform.image or source.fallback_image
        if not image:
            raise UsageError("no serving image: the platform stack exports none and --image was not given.",
                             hint=f"Pass --image URI, or deploy the platform (output {po.IMAGE_URI}).")
        if not source.model_data_url:
            raise UsageError(f"{source.target}: no model artifact (ModelDataUrl) to serve.")
        container = {"Image": image, "ModelDataUrl": source.model_data_url, "Mode": "SingleModel"}
        env = {**source.environment, **options.env}
        if env:
            container["Environment"] = {str(k): str(v) for k, v in env.items()}
        if source.base_model_s3:
            container["AdditionalModelDataSources"] = [{
                "ChannelName": "base",
                "S3DataSource": {"S3Uri": source.base_model_s3.rstrip("/") + "/", "S3DataType": "S3Prefix",
                                 "CompressionType": "None"},
            }]
        if source.package_arn:
            notes.append(f"serving {source.package_arn}'s artifact with image {image} (an image or environment "
                         "override replaces the package's container definition).")
    if serverless:
        isolation = False  # serverless endpoints do not support network isolation
    elif options.network_isolation is not None:
        isolation = options.network_isolation
    elif source.network_isolation is not None:
        isolation = source.network_isolation
    else:
        isolation = True  # the platform's default (infra networkIsolation)
    model: dict[str, Any] = {
        "ModelName": name,
        "ExecutionRoleArn": platform.role,
        "PrimaryContainer": container,
        "EnableNetworkIsolation": isolation,
    }
    subnets, groups = (source.vpc or {}).get("Subnets") or platform.subnets, \
        (source.vpc or {}).get("SecurityGroupIds") or platform.security_group_ids
    if subnets and groups and options.vpc:
        if serverless:
            raise UsageError(
                "serverless endpoints cannot run in a VPC, and the platform (or the job) uses one.",
                hint="Pass --no-vpc to deploy serverless outside the VPC, or use an instance endpoint.",
            )
        model["VpcConfig"] = {"Subnets": list(subnets), "SecurityGroupIds": list(groups)}
    tags = [{"Key": "ftcloud:managed-by", "Value": "ftcloud"}, {"Key": "ftcloud:endpoint", "Value": endpoint},
            *({"Key": k, "Value": v} for k, v in sorted(options.tags.items()))]
    model["Tags"] = tags

    # ---- CreateEndpointConfig
    variant: dict[str, Any] = {"VariantName": VARIANT_NAME, "ModelName": name}
    instance_type = options.effective_instance_type
    if serverless:
        variant["ServerlessConfig"] = {"MemorySizeInMB": options.serverless_memory,
                                       "MaxConcurrency": options.serverless_concurrency}
    else:
        variant.update({
            "InstanceType": instance_type,
            "InitialInstanceCount": options.instance_count,
            "InitialVariantWeight": 1.0,
            "ModelDataDownloadTimeoutInSeconds": MODEL_DOWNLOAD_TIMEOUT_S,
            "ContainerStartupHealthCheckTimeoutInSeconds": CONTAINER_STARTUP_TIMEOUT_S,
        })
    config: dict[str, Any] = {"EndpointConfigName": name, "ProductionVariants": [variant]}
    if platform.kms_key and not serverless:
        if has_local_nvme(str(instance_type)):
            notes.append(f"{instance_type} has local NVMe storage (encrypted by the instance): no KmsKeyId sent.")
        else:
            config["KmsKeyId"] = platform.kms_key
    if options.data_capture_percent:
        if not platform.artifact_bucket:
            raise UsageError("--data-capture needs the platform's artifact bucket; the stack exports none.")
        capture: dict[str, Any] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": options.data_capture_percent,
            "DestinationS3Uri": f"s3://{platform.artifact_bucket}/{DATA_CAPTURE_PREFIX}",
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
        }
        if platform.kms_key:
            capture["KmsKeyId"] = platform.kms_key
        config["DataCaptureConfig"] = capture
    config["Tags"] = tags

    # ---- alarms, CreateEndpoint / UpdateEndpoint
    alarm_names = list(options.rollback_alarms) if options.rollback_alarms else rollback_alarm_names(endpoint)
    alarms = []
    if not options.rollback_alarms:
        alarms = [a for a in rollback_alarm_requests(endpoint, VARIANT_NAME, platform.alarm_topic)
                  if a["AlarmName"] not in current.existing_alarms]
    deregister = None
    if current.status is None:
        action = "create"
        endpoint_request: dict[str, Any] = {"EndpointName": endpoint, "EndpointConfigName": name, "Tags": tags}
    else:
        action = "update"
        if current.status != "InService":
            raise UsageError(
                f"endpoint {endpoint} is {current.status}; SageMaker updates only InService endpoints.",
                hint=(f"Wait for it ('ftcloud endpoints'), or remove it with 'ftcloud undeploy {endpoint}'."
                      if current.status not in ENDPOINT_FAILED_STATES else
                      f"Remove it with 'ftcloud undeploy {endpoint}' and deploy again."),
            )
        type_changed = current.instance_type != instance_type
        if current.scaling_registered and (type_changed or serverless):
            # AWS refuses an update that changes the instance type of an autoscaled variant.
            deregister = {"ServiceNamespace": "sagemaker", "ResourceId": resource_id(endpoint),
                          "ScalableDimension": SCALABLE_DIMENSION}
        endpoint_request = {
            "EndpointName": endpoint,
            "EndpointConfigName": name,
            "DeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": _traffic_routing(options),
                    "TerminationWaitInSeconds": options.bake_seconds,
                },
                "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in alarm_names]},
            },
        }
        if current.scaling_registered and not type_changed and not serverless:
            # Keep the instance count autoscaling chose; take the new data capture settings.
            endpoint_request["RetainAllVariantProperties"] = True
            endpoint_request["ExcludeRetainedVariantProperties"] = [{"VariantPropertyType": "DataCaptureConfig"}]

    # ---- autoscaling (after InService)
    scaling_target = scaling_policy = None
    if not serverless:
        lo, hi = options.capacity
        scaling_target = {"ServiceNamespace": "sagemaker", "ResourceId": resource_id(endpoint),
                          "ScalableDimension": SCALABLE_DIMENSION, "MinCapacity": lo, "MaxCapacity": hi}
        scaling_policy = {
            "PolicyName": f"{endpoint}-invocations-per-instance",
            "ServiceNamespace": "sagemaker",
            "ResourceId": resource_id(endpoint),
            "ScalableDimension": SCALABLE_DIMENSION,
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": float(options.target_invocations),
                "PredefinedMetricSpecification": {"PredefinedMetricType": SCALING_METRIC},
                "ScaleInCooldown": options.scale_in_cooldown,
                "ScaleOutCooldown": options.scale_out_cooldown,
            },
        }
    return DeployPlan(endpoint, model, config, action, endpoint_request, alarms, deregister, scaling_target,
                      scaling_policy, notes)


def _traffic_routing(options: DeployOptions) -> dict[str, Any]:
    if options.strategy == "all-at-once":
        return {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": options.bake_seconds}
    if options.strategy == "linear":
        return {"Type": "LINEAR", "WaitIntervalInSeconds": options.bake_seconds,
                "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": options.linear_step_percent}}
    return {"Type": "CANARY", "WaitIntervalInSeconds": options.bake_seconds,
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": options.canary_percent}}


def job_serving_environment(hyperparameters: dict[str, str], base_attached: bool) -> dict[str, str]:
    """The serving knobs (contract defaults), plus the base model id for an adapter-only artifact
    whose base is not attached from S3."""
    env = {k: v for k, v in SERVE_ENV_DEFAULTS.items() if v != ""}
    technique = hyperparameters.get("technique")
    base = hyperparameters.get("model") or ""
    if technique != "full" and not base_attached and base and not base.startswith(("s3://", "/")):
        env["FTCLOUD_BASE_MODEL"] = base
    return env


# ---------------------------------------------------------------------- the backend
class SageMakerEndpoints(Endpoints):
    name = "sagemaker"
    poll_seconds = 30.0

    def __init__(self, aws: Any, stack: str | None = None, user_config: Any = None, *, jobs: Any = None,
                 registry: Any = None, sleep: Any = time.sleep, clock: Any = None):
        self.aws = aws
        self.stack = stack or po.DEFAULT_STACK_NAME
        self.user_config = user_config
        self._jobs = jobs  # the SageMakerBackend: platform outputs, training jobs
        self._registry = registry
        self._sleep = sleep
        self._clock = clock or (lambda: time.strftime("%Y%m%d-%H%M%S", time.gmtime()))

    def describe_target(self) -> str:
        where = self.aws.describe()
        return f"stack {self.stack}" + (f" ({where})" if where else "")

    @property
    def sm(self) -> Any:
        return self.aws.client("sagemaker")

    @property
    def scaling(self) -> Any:
        return self.aws.client("application-autoscaling")

    @property
    def cloudwatch(self) -> Any:
        return self.aws.client("cloudwatch")

    @property
    def jobs(self) -> Any:
        if self._jobs is None:
            from ftcloud.backends.sagemaker import SageMakerBackend

            self._jobs = SageMakerBackend(self.aws, self.stack, self.user_config)
        return self._jobs

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from ftcloud.endpoints.registry_link import sagemaker_registry

            self._registry = sagemaker_registry(self.jobs)
        return self._registry

    # ------------------------------------------------------------------ resolve
    def resolve(self, target: str) -> ModelSource:
        """Approved registry version -> package; training job name -> its artifact (the shortcut)."""
        parsed = parse_target(target)
        if parsed.kind == "name":
            described = self._training_job(parsed.ref)
            if described is not None:
                return self._job_source(parsed.ref, described)
        from ftcloud.endpoints.registry_link import approved_version

        version = approved_version(self.registry, target, job_checked=parsed.kind == "name")
        if not version.arn:
            raise UsageError(f"{version.ref} is a local registry version; deploy it with --backend local.")
        return ModelSource(target=target, package_arn=version.arn, image=version.image,
                           model_data_url=version.artifact, environment=dict(version.environment or {}))

    def _training_job(self, name: str) -> dict[str, Any] | None:
        from ftcloud.adaptors import botocore_exceptions

        try:
            return self.sm.describe_training_job(TrainingJobName=name)
        except botocore_exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "ValidationException" and "not found" in str(error.get("Message", "")).lower():
                return None
            raise self.aws.translate(exc, operation="DescribeTrainingJob") from None
        except botocore_exceptions.BotoCoreError as exc:
            raise self.aws.translate(exc, operation="DescribeTrainingJob") from None

    def _job_source(self, name: str, d: dict[str, Any]) -> ModelSource:
        if d.get("TrainingJobStatus") != "Completed":
            raise UsageError(
                f"training job {name} is {d.get('TrainingJobStatus')}; only a Completed job has a model to serve.",
                hint=f"Check it with 'ftcloud status {name}'.",
            )
        artifact = (d.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        hps = d.get("HyperParameters") or {}
        channels = {c.get("ChannelName"): c for c in d.get("InputDataConfig") or []}
        base_s3 = None
        if hps.get("technique") != "full" and "model" in channels:
            base_s3 = channels["model"]["DataSource"]["S3DataSource"]["S3Uri"]
        return ModelSource(
            target=name,
            fallback_image=(d.get("AlgorithmSpecification") or {}).get("TrainingImage"),
            model_data_url=artifact,
            environment=job_serving_environment(hps, base_attached=bool(base_s3)),
            base_model_s3=base_s3,
            network_isolation=d.get("EnableNetworkIsolation"),
            vpc=d.get("VpcConfig"),
        )

    def current(self, endpoint: str) -> Current:
        described = self._describe_endpoint(endpoint)
        current = Current()
        if described is not None:
            current.status = described.get("EndpointStatus")
            current.config_name = described.get("EndpointConfigName")
            config = self.aws.call(self.sm.describe_endpoint_config, EndpointConfigName=current.config_name)
            variant = (config.get("ProductionVariants") or [{}])[0]
            current.instance_type = variant.get("InstanceType")
            current.serverless = "ServerlessConfig" in variant
            current.model_names = [v.get("ModelName") for v in config.get("ProductionVariants") or [] if v.get("ModelName")]
            targets = self.aws.call(self.scaling.describe_scalable_targets, ServiceNamespace="sagemaker",
                                    ResourceIds=[resource_id(endpoint)], ScalableDimension=SCALABLE_DIMENSION)
            current.scaling_registered = bool(targets.get("ScalableTargets"))
        alarms = self.aws.call(self.cloudwatch.describe_alarms, AlarmNames=rollback_alarm_names(endpoint))
        current.existing_alarms = [a["AlarmName"] for a in alarms.get("MetricAlarms") or []]
        return current

    def _describe_endpoint(self, endpoint: str) -> dict[str, Any] | None:
        from ftcloud.adaptors import botocore_exceptions

        try:
            return self.sm.describe_endpoint(EndpointName=endpoint)
        except botocore_exceptions.ClientError as exc:
            if "could not find" in str(exc.response.get("Error", {}).get("Message", "")).lower():
                return None
            raise self.aws.translate(exc, operation="DescribeEndpoint") from None
        except botocore_exceptions.BotoCoreError as exc:
            raise self.aws.translate(exc, operation="DescribeEndpoint") from None

    # ------------------------------------------------------------------ deploy
    def deploy(
        self,
        target: str,
        name: str | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
        progress: Progress | None = None,
        dry_run: bool = False,
        options: DeployOptions | None = None,
        **flat: Any,
    ) -> EndpointStatus:
        """Create or blue/green-update endpoint ``name`` serving ``target``; see the module docstring.

        ``options`` or flat keyword arguments (the :class:`DeployOptions` field names)."""
        options = options or DeployOptions(**{k: v for k, v in flat.items() if v is not None})
        options.validate()  # before any AWS call
        endpoint = check_endpoint_name(name or default_endpoint_name(parse_target(target)))
        source = self.resolve(target)
        platform = PlatformValues.from_platform(self.jobs.platform(refresh=True))
        current = self.current(endpoint)
        plan = plan_deploy(endpoint, source, platform, options, current, self._clock())
        if plan.action == "update" and plan.deregister is not None and not wait:
            raise UsageError(
                f"this update changes the instance type of autoscaled endpoint {endpoint}: autoscaling must be "
                "registered again once the update is InService, so --no-wait cannot be used.",
                hint="Deploy with --wait (the default).",
            )
        status = EndpointStatus(
            name=endpoint, backend=self.name, status="DryRun" if dry_run else "Creating", target=target,
            model=source.package_arn or source.model_data_url, instance_type=options.effective_instance_type,
            instance_count=None if options.serverless else options.instance_count,
            serverless=plan.config["ProductionVariants"][0].get("ServerlessConfig"),
            min_capacity=(plan.scaling_target or {}).get("MinCapacity"),
            max_capacity=(plan.scaling_target or {}).get("MaxCapacity"),
            model_name=plan.model["ModelName"], config_name=plan.config["EndpointConfigName"],
            image=plan.model["PrimaryContainer"].get("Image"), notes=list(plan.notes),
        )
        if dry_run:
            status.requests = plan.requests()
            return status
        self._execute(plan, current, wait, timeout, progress, status)
        return status

    def _execute(self, plan: DeployPlan, current: Current, wait: bool, timeout: float | None,
                 progress: Progress | None, status: EndpointStatus) -> None:
        say = progress or (lambda message: None)
        sm, call = self.sm, self.aws.call
        call(sm.create_model, **plan.model)
        say(f"created model {plan.model['ModelName']}")
        try:
            call(sm.create_endpoint_config, **plan.config)
        except Exception:
            call(sm.delete_model, ModelName=plan.model["ModelName"])  # nothing references it
            raise
        say(f"created endpoint config {plan.config['EndpointConfigName']}")
        for alarm in plan.alarms:
            call(self.cloudwatch.put_metric_alarm, **alarm)
            say(f"created rollback alarm {alarm['AlarmName']}")
        if plan.deregister is not None:
            call(self.scaling.deregister_scalable_target, **plan.deregister)
            say("deregistered autoscaling (the instance type changes; registered again after the update)")
        if plan.action == "create":
            created = call(sm.create_endpoint, **plan.endpoint_request)
            status.url = created.get("EndpointArn")
            say(f"creating endpoint {plan.endpoint}")
        else:
            strategy = plan.endpoint_request["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
            call(sm.update_endpoint, **plan.endpoint_request)
            say(f"updating endpoint {plan.endpoint} (blue/green, {strategy['Type']})")
        if not wait:
            status.status = "Creating" if plan.action == "create" else "Updating"
            if plan.scaling_target is not None and not (plan.action == "update" and current.scaling_registered):
                status.notes.append(
                    "autoscaling is not registered yet: it needs an InService endpoint. Deploy with --wait to have "
                    f"ftcloud register it (min {plan.scaling_target['MinCapacity']}, max "
                    f"{plan.scaling_target['MaxCapacity']}).")
            return
        try:
            final = self.wait(plan.endpoint, timeout=timeout, progress=progress)
        except DeployError as exc:
            leftovers = (f" The new model and config {plan.model['ModelName']} are unused now; "
                         f"'ftcloud undeploy {plan.endpoint}' removes them with the endpoint."
                         if plan.action == "update" else "")
            if plan.deregister is not None:
                leftovers += (" Autoscaling was deregistered for this update: deploy again once the endpoint is "
                              "InService to register it.")
            raise DeployError(exc.message + leftovers, hint=exc.hint) from None
        if plan.scaling_target is not None:
            call(self.scaling.register_scalable_target, **plan.scaling_target)
            call(self.scaling.put_scaling_policy, **plan.scaling_policy)
            say(f"autoscaling {plan.scaling_target['MinCapacity']}-{plan.scaling_target['MaxCapacity']} instances "
                f"on {plan.scaling_policy['TargetTrackingScalingPolicyConfiguration']['TargetValue']:g} "
                "invocations per instance")
        if plan.action == "update" and current.config_name:
            self._delete_config_and_models(current.config_name, current.model_names)  # the replaced ones
        for key in ("status", "url", "created", "updated", "failure_reason"):
            setattr(status, key, getattr(final, key))

    def wait(self, name: str, *, timeout: float | None = None, progress: Progress | None = None,
             poll: float | None = None) -> EndpointStatus:
        """Poll DescribeEndpoint until InService; Failed / RollingBack / UpdateRollbackFailed raise
        :class:`DeployError` with SageMaker's FailureReason."""
        deadline = time.monotonic() + (timeout or DEFAULT_WAIT_TIMEOUT_S)
        started = time.monotonic()
        last = None
        while True:
            st = self.describe(name)
            if progress and st.status != last:
                progress(f"{name}: {st.status} ({time.monotonic() - started:.0f} s)")
            last = st.status
            if st.status in ENDPOINT_FAILED_STATES:
                raise DeployError(
                    f"endpoint {name} is {st.status}: {st.failure_reason or 'SageMaker gave no reason'}",
                    hint=("The update rolled back to the previous model (a rollback alarm fired or the new fleet "
                          "failed its health checks); the endpoint keeps serving it." if st.status != "Failed" else
                          f"Check the container logs in CloudWatch (/aws/sagemaker/Endpoints/{name}); remove it with "
                          f"'ftcloud undeploy {name}'."),
                )
            if st.status == "InService":
                return st
            if time.monotonic() >= deadline:
                raise DeployError(
                    f"timed out waiting for endpoint {name} (still {st.status}).",
                    hint="It keeps going: check 'ftcloud endpoints' later.",
                )
            self._sleep(poll if poll is not None else self.poll_seconds)

    # ------------------------------------------------------------------ state
    def describe(self, name: str) -> EndpointStatus:
        d = self._describe_endpoint(name)
        if d is None:
            raise EndpointNotFoundError(
                f"No SageMaker endpoint named '{name}'{self._where()}.",
                hint="List them with 'ftcloud endpoints --backend sagemaker' (check --region / --profile).",
            )
        variant = (d.get("ProductionVariants") or [{}])[0]
        status = EndpointStatus(
            name=d["EndpointName"], backend=self.name, status=d.get("EndpointStatus", ""),
            url=d.get("EndpointArn"), created=_ts(d.get("CreationTime")), updated=_ts(d.get("LastModifiedTime")),
            failure_reason=d.get("FailureReason"), config_name=d.get("EndpointConfigName"),
            instance_count=variant.get("CurrentInstanceCount"), serverless=variant.get("CurrentServerlessConfig"),
        )
        # DescribeEndpoint has no instance type or model: they live in the endpoint config.
        config = self._ignore_missing(self.sm.describe_endpoint_config, EndpointConfigName=status.config_name) or {}
        configured = (config.get("ProductionVariants") or [{}])[0]
        status.instance_type = configured.get("InstanceType")
        status.model_name = configured.get("ModelName")
        if status.serverless is None and configured.get("ServerlessConfig"):
            status.serverless = configured["ServerlessConfig"]
        return status

    def list(self) -> list[EndpointStatus]:
        rows = []
        paginator = self.sm.get_paginator("list_endpoints")
        for page in self.aws.call(lambda: list(paginator.paginate(SortBy="CreationTime", SortOrder="Descending"))):
            for e in page.get("Endpoints") or []:
                rows.append(EndpointStatus(name=e["EndpointName"], backend=self.name,
                                           status=e.get("EndpointStatus", ""), url=e.get("EndpointArn"),
                                           created=_ts(e.get("CreationTime")),
                                           updated=_ts(e.get("LastModifiedTime"))))
        return rows

    def _where(self) -> str:
        where = self.aws.describe()
        return f" ({where})" if where else ""

    # ------------------------------------------------------------------ undeploy
    def undeploy(self, name: str) -> EndpointStatus:
        """Scaling target, endpoint, its config and models (older ftcloud-made ones too), and the
        rollback alarms ftcloud created. Never the registry entry or the training job."""
        from ftcloud.adaptors import botocore_exceptions

        status = self.describe(name)
        current = self.current(name)
        if current.scaling_registered:
            self.aws.call(self.scaling.deregister_scalable_target, ServiceNamespace="sagemaker",
                          ResourceId=resource_id(name), ScalableDimension=SCALABLE_DIMENSION)
        self.aws.call(self.sm.delete_endpoint, EndpointName=name)
        self._delete_config_and_models(current.config_name, current.model_names)
        # Configs and models of earlier deploys to this endpoint (named <endpoint>-<stamp>).
        pattern = re.compile(rf"^{re.escape(name[: 63 - 16])}-{_STAMP_RE}$")
        try:
            for config in self.sm.list_endpoint_configs(NameContains=name, MaxResults=100).get("EndpointConfigs", []):
                if pattern.match(config["EndpointConfigName"]) and config["EndpointConfigName"] != current.config_name:
                    self._delete_config_and_models(config["EndpointConfigName"], [])
            for model in self.sm.list_models(NameContains=name, MaxResults=100).get("Models", []):
                if pattern.match(model["ModelName"]):
                    self._ignore_missing(self.sm.delete_model, ModelName=model["ModelName"])
        except botocore_exceptions.ClientError:
            pass  # leftovers of older deploys are best effort; the endpoint itself is gone
        owned = []
        for alarm_name in current.existing_alarms:
            arn = self.aws.call(self.cloudwatch.describe_alarms, AlarmNames=[alarm_name])["MetricAlarms"][0]["AlarmArn"]
            tags = self.aws.call(self.cloudwatch.list_tags_for_resource, ResourceARN=arn).get("Tags") or []
            if {"Key": CREATED_BY_TAG[0], "Value": CREATED_BY_TAG[1]} in tags:
                owned.append(alarm_name)  # alarms of the platform's own endpoint stay
        if owned:
            self.aws.call(self.cloudwatch.delete_alarms, AlarmNames=owned)
        status.status = "Deleted"
        return status

    def _delete_config_and_models(self, config_name: str | None, model_names: list[str]) -> None:
        if config_name:
            if not model_names:
                config = self._ignore_missing(self.sm.describe_endpoint_config, EndpointConfigName=config_name) or {}
                model_names = [v["ModelName"] for v in config.get("ProductionVariants") or [] if v.get("ModelName")]
            self._ignore_missing(self.sm.delete_endpoint_config, EndpointConfigName=config_name)
        for model in model_names:
            self._ignore_missing(self.sm.delete_model, ModelName=model)

    def _ignore_missing(self, fn: Any, **kwargs: Any) -> Any:
        from ftcloud.adaptors import botocore_exceptions

        try:
            return fn(**kwargs)
        except botocore_exceptions.ClientError as exc:
            if "could not find" in str(exc.response.get("Error", {}).get("Message", "")).lower():
                return None
            raise self.aws.translate(exc) from None

    # ------------------------------------------------------------------ invoke
    def invoke(self, name: str, payload: dict[str, Any], *, adapter: str | None = None, stream: bool = False) -> Any:
        """InvokeEndpoint (or InvokeEndpointWithResponseStream); the adapter as CustomAttributes."""
        body = json.dumps(payload).encode("utf-8")
        if len(body) > MAX_REQUEST_BYTES:
            raise UsageError(f"the request is {len(body)} bytes; endpoints accept at most {MAX_REQUEST_BYTES}.")
        runtime = self.aws.client("sagemaker-runtime")
        request: dict[str, Any] = {"EndpointName": name, "Body": body, "ContentType": "application/json"}
        attribute = adapter_attribute(adapter)
        if attribute:
            request["CustomAttributes"] = attribute
        if stream:
            response = self.aws.call(runtime.invoke_endpoint_with_response_stream, **request)
            return iter_stream_text(
                event["PayloadPart"]["Bytes"] for event in response["Body"] if "PayloadPart" in event
            )
        response = self.aws.call(runtime.invoke_endpoint, Accept="application/json", **request)
        raw = response["Body"].read().decode("utf-8")
        try:
            return json.loads(raw)
        except ValueError:
            raise FtcloudError(f"endpoint {name} answered with non-JSON: {raw[:300]}") from None


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)
