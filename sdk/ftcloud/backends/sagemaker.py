"""The SageMaker backend: plain boto3 CreateTrainingJob / Describe / List / Stop + CloudWatch logs.

:func:`build_request` is a pure function from (job spec, platform, channel URIs) to the exact
CreateTrainingJob request; ``launch --dry-run`` prints it without calling AWS. What it encodes:

* every hyperparameter as a string (:meth:`TrainingSpec.to_hyperparameters`), the metric
  regexes of the container contract as MetricDefinitions;
* managed spot on by default, with CheckpointConfig (the container resumes from
  ``/opt/ml/checkpoints``) and MaxWaitTimeInSeconds >= MaxRuntimeInSeconds;
* KMS for outputs and checkpoints, and for the volume except on instance types with local NVMe
  storage (AWS rejects VolumeKmsKeyId there; NVMe is encrypted by the instance);
* VpcConfig, network isolation (the base model must then arrive through the ``model`` channel),
  inter-container encryption, RetryStrategy, tags, instance count;
* a Hugging Face token only as a Secrets Manager ARN that the container resolves, and never
  with network isolation (an explicit one is refused, the platform's default is not sent).

Local files are uploaded under content-hash keys (``ftcloud/inputs/<sha256>/...``) and never
re-uploaded when unchanged; s3:// URIs pass through.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcloud import platform_outputs as po
from ftcloud.backends.base import Backend, JobStatus, LaunchResult, LogCursor, LogEvent, StatusTransition
from ftcloud.contract import DEFAULT_ROOT, ContainerPaths, metric_definitions
from ftcloud.errors import FtcloudError, JobNotFoundError, LaunchError, PlatformError
from ftcloud.job import JobSpec, new_job_name
from ftcloud.platform import Platform
from ftcloud.sagemaker_facts import (  # noqa: F401 - re-exported for callers of this module
    CHECKPOINT_PREFIX,
    INPUT_PREFIX,
    LOG_GROUP,
    OUTPUT_PREFIX,
    has_local_nvme,
)
from ftcloud.spec import SpecError

#: Where SageMaker syncs CheckpointConfig.S3Uri inside the container (the contract's path).
CONTAINER_CHECKPOINT_DIR = str(ContainerPaths.from_env(DEFAULT_ROOT).checkpoint_dir)


@dataclass
class ResolvedPlatform:
    """Platform values after explicit job-spec settings override the stack's outputs."""

    stack: str
    region: str | None
    source: str  # cloudformation | cache | none
    role: str | None = None
    image: str | None = None
    kms_key: str | None = None
    data_bucket: str | None = None
    artifact_bucket: str | None = None
    subnets: list[str] = field(default_factory=list)
    security_group_ids: list[str] = field(default_factory=list)
    hf_token_secret_arn: str | None = None

    @classmethod
    def resolve(cls, spec: JobSpec, platform: Platform) -> ResolvedPlatform:
        p = spec.platform
        net = spec.networking
        use_vpc = net.use_platform_vpc
        return cls(
            stack=platform.stack,
            region=platform.region,
            source=platform.source,
            role=p.role or platform.role,
            image=p.image or platform.image,
            kms_key=p.kms_key or platform.kms_key,
            data_bucket=p.data_bucket or platform.data_bucket,
            artifact_bucket=p.artifact_bucket or platform.artifact_bucket,
            subnets=list(net.subnets) or (platform.subnets if use_vpc else []),
            security_group_ids=list(net.security_group_ids) or (platform.security_group_ids if use_vpc else []),
            hf_token_secret_arn=platform.hf_token_secret_arn,
        )

    def missing(self, need_data_bucket: bool) -> list[tuple[str, str]]:
        """(spec field, stack output) pairs that are still unknown."""
        wanted = [
            ("role", "platform.role", po.EXECUTION_ROLE_ARN),
            ("image", "platform.image", po.IMAGE_URI),
            ("artifact_bucket", "platform.artifact_bucket", po.ARTIFACT_BUCKET),
        ]
        if need_data_bucket:
            wanted.append(("data_bucket", "platform.data_bucket", po.DATASET_BUCKET))
        out = []
        for attr, spec_field, output in wanted:
            if not getattr(self, attr) and not (attr == "data_bucket" and self.artifact_bucket):
                out.append((spec_field, output))
        return out


# ---------------------------------------------------------------------- content-hash uploads
@dataclass
class UploadPlan:
    """A local channel source and the content-addressed S3 objects it maps to."""

    channel: str
    local: Path
    bucket: str
    prefix: str  # ftcloud/inputs/<digest>/
    files: list[tuple[Path, str]]  # (local file, key)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan_upload(channel: str, local: str | os.PathLike, bucket: str) -> UploadPlan:
    """Hash a file or directory; same content (and names) -> same S3 prefix."""
    path = Path(local).expanduser().resolve()
    if path.is_file():
        entries = [(path, path.name)]
    elif path.is_dir():
        entries = [(p, p.relative_to(path).as_posix()) for p in sorted(path.rglob("*")) if p.is_file()]
        if not entries:
            raise SpecError(f"data.{channel}: directory {local} has no files.", f"data.{channel}", "job spec")
    else:
        raise SpecError(f"data.{channel}: no such file or directory: {local}", f"data.{channel}", "job spec")
    tree = hashlib.sha256()
    for file, rel in entries:
        tree.update(rel.encode() + b"\0" + _sha256(file).encode() + b"\n")
    prefix = f"{INPUT_PREFIX}/{tree.hexdigest()[:32]}/"
    return UploadPlan(channel, path, bucket, prefix, [(file, prefix + rel) for file, rel in entries])


def _s3_channel(name: str, uri: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
        },
        "ContentType": "application/octet-stream" if name == "model" else "application/jsonlines",
        "CompressionType": "None",
        "InputMode": "File",
    }


# ---------------------------------------------------------------------- the request
def check_spec(spec: JobSpec) -> list[str]:
    """SageMaker-specific rules; returns notes for the user, raises SpecError on conflicts."""
    notes = []
    if not spec.data.train:
        raise SpecError("no training data: set data.train in the job file or pass --data PATH.", "data.train", "job spec")
    model = spec.training.model
    model_is_local = bool(model) and Path(model).expanduser().exists()
    if not model and not spec.data.model:
        raise SpecError(
            "no base model: set training.model (a Hugging Face id) or data.model (an S3 prefix or local "
            "directory with the weights).",
            "training.model",
            "job spec",
        )
    if spec.networking.network_isolation:
        if not spec.data.model and not model_is_local:
            raise SpecError(
                f"network isolation is on, so the container cannot download '{model}' from the Hugging Face Hub. "
                "Put the weights in S3 and pass them as the model channel (data.model / --model-data s3://...), "
                "or turn isolation off (--no-network-isolation).",
                "training.model",
                "job spec",
            )
        if spec.training.hf_token_secret_arn:
            # The container would call Secrets Manager and time out; and with the model channel no
            # token is needed. Refuse rather than silently drop a setting the user gave.
            raise SpecError(
                "network isolation is on, so the container can reach neither Secrets Manager nor the Hugging "
                "Face Hub: training.hf_token_secret_arn cannot be used. The base model must come through the "
                "model channel (data.model / --model-data s3://...), which needs no token: drop "
                "hf_token_secret_arn, or turn isolation off (--no-network-isolation).",
                "training.hf_token_secret_arn",
                "job spec",
            )
        notes.append("Network isolation: the base model is read from the 'model' channel, not downloaded.")
    n = spec.networking
    if bool(n.subnets) != bool(n.security_group_ids):
        missing = "networking.security_group_ids" if n.subnets else "networking.subnets"
        raise SpecError(f"a VPC needs both subnets and security groups; set {missing}.", missing, "job spec")
    return notes


def build_request(
    spec: JobSpec,
    platform: ResolvedPlatform,
    channels: dict[str, str],
    name: str,
) -> dict[str, Any]:
    """The exact CreateTrainingJob request for ``spec`` (``channels``: name -> s3:// URI)."""
    training = spec.training
    hyperparameters = training.to_hyperparameters()
    if "model" in channels:
        hyperparameters["model"] = ""  # the container loads the 'model' channel
    # The platform's default token only where the container can reach Secrets Manager.
    if not training.hf_token_secret_arn and platform.hf_token_secret_arn and not spec.networking.network_isolation:
        hyperparameters["hf_token_secret_arn"] = platform.hf_token_secret_arn
    compute = spec.compute
    instance_type = compute.instance_type
    if instance_type == "auto":  # callers that did not go through Client.launch's plan (tuning, direct use)
        from ftcloud.planning.plan import resolve_auto_instance

        instance_type, _ = resolve_auto_instance(spec)
    resource_config: dict[str, Any] = {
        "InstanceType": instance_type,
        "InstanceCount": compute.instance_count,
        "VolumeSizeInGB": compute.volume_size_gb,
    }
    if platform.kms_key and not has_local_nvme(instance_type):
        resource_config["VolumeKmsKeyId"] = platform.kms_key
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": compute.max_runtime}
    if compute.spot:
        stopping["MaxWaitTimeInSeconds"] = compute.resolved_max_wait or compute.max_runtime
    output: dict[str, str] = {"S3OutputPath": f"s3://{platform.artifact_bucket}/{OUTPUT_PREFIX}/"}
    if platform.kms_key:
        output["KmsKeyId"] = platform.kms_key
    tags = {"ftcloud:technique": training.technique, "ftcloud:managed-by": "ftcloud", **spec.tags}
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": platform.role,
        "AlgorithmSpecification": {
            "TrainingImage": platform.image,
            "TrainingInputMode": "File",
            "MetricDefinitions": metric_definitions(),
            "EnableSageMakerMetricsTimeSeries": True,
        },
        "HyperParameters": hyperparameters,
        "InputDataConfig": [_s3_channel(ch, channels[ch]) for ch in ("train", "validation", "model") if ch in channels],
        "OutputDataConfig": output,
        "ResourceConfig": resource_config,
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": compute.spot,
        # Checkpoints are synced to S3 continuously: spot interruptions and retries resume, not restart.
        "CheckpointConfig": {
            "S3Uri": f"s3://{platform.artifact_bucket}/{CHECKPOINT_PREFIX}/{name}/",
            "LocalPath": CONTAINER_CHECKPOINT_DIR,
        },
        "EnableNetworkIsolation": spec.networking.network_isolation,
        "EnableInterContainerTrafficEncryption": spec.networking.inter_container_encryption,
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }
    if platform.subnets and platform.security_group_ids:
        request["VpcConfig"] = {"SecurityGroupIds": platform.security_group_ids, "Subnets": platform.subnets}
    if compute.max_retry_attempts > 0:
        request["RetryStrategy"] = {"MaximumRetryAttempts": compute.max_retry_attempts}
    return request


# ---------------------------------------------------------------------- the backend
class SageMakerBackend(Backend):
    name = "sagemaker"
    poll_seconds = 15.0

    def __init__(self, aws: Any, stack: str | None = None, user_config: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.aws = aws
        self.stack = stack or po.DEFAULT_STACK_NAME
        self.user_config = user_config

    @property
    def sm(self) -> Any:
        return self.aws.client("sagemaker")

    def describe_target(self) -> str:
        where = self.aws.describe()
        return f"stack {self.stack}" + (f" ({where})" if where else "")

    # ------------------------------------------------------------------ platform
    def platform(self, *, refresh: bool = True) -> Platform:
        """The stack's outputs: from CloudFormation (``refresh``) or the user config cache."""
        if not refresh:
            region = self.aws._region
            cached = self.user_config.cached_outputs(self.stack, region) if self.user_config else None
            if cached is not None:
                return Platform(self.stack, region or (self.user_config.platform_cache or {}).get("region"),
                                cached, source="cache")
            return Platform(self.stack, region, {}, source="none")
        from ftcloud.platform import cache_entry, discover

        found = discover(self.aws, self.stack)
        if self.user_config is not None and self.user_config.platform_cache.get("outputs") != found.outputs:
            self.user_config.platform_cache = cache_entry(found)
            try:
                self.user_config.save()
            except OSError:
                pass  # a read-only home must not break launching
        return found

    # ------------------------------------------------------------------ launch
    def launch(self, spec: JobSpec, *, dry_run: bool = False) -> LaunchResult:
        result, plans, resolved = self.plan_launch(spec, dry_run=dry_run)
        if dry_run:
            return result
        self.upload_inputs(plans, resolved, result)
        try:
            response = self.aws.call(
                self.sm.create_training_job,
                **result.request,
                error_context={
                    "role_arn": resolved.role,
                    "instance_type": spec.compute.instance_type,
                    "spot": spec.compute.spot,
                },
            )
        except FtcloudError as exc:
            raise LaunchError(exc, result.uploaded) from None
        result.location = response.get("TrainingJobArn")
        return result

    def plan_launch(
        self, spec: JobSpec, *, dry_run: bool = False
    ) -> tuple[LaunchResult, list[UploadPlan], ResolvedPlatform]:
        """Everything a launch decides before touching AWS: the exact CreateTrainingJob request
        (in the result), the content-hash uploads it needs and the resolved platform. Shared with
        the SageMaker tuner, so a tuning's trials get the very same request."""
        notes = check_spec(spec)
        name = spec.name or new_job_name(spec.training.technique)
        local_sources = {
            ch: v
            for ch, v in (("train", spec.data.train), ("validation", spec.data.validation), ("model", spec.data.model))
            if v and not v.startswith("s3://")
        }
        model = spec.training.model
        if model and not spec.data.model and Path(model).expanduser().exists():
            local_sources["model"] = model  # a local base model travels as the model channel
            notes.append(f"The local base model {model} is uploaded as the 'model' channel.")

        if dry_run:
            platform = self.platform(refresh=False)
        else:
            try:
                platform = self.platform(refresh=True)
            except PlatformError:
                explicit = ResolvedPlatform.resolve(spec, Platform(self.stack, self.aws.region, {}, "none"))
                if explicit.missing(bool(local_sources)):
                    raise
                platform = Platform(self.stack, self.aws.region, {}, source="none")
                notes.append(f"No platform stack '{self.stack}' found; using the explicit platform settings only.")
        resolved = ResolvedPlatform.resolve(spec, platform)
        missing = resolved.missing(bool(local_sources))
        if missing:
            if not dry_run:
                fields_ = ", ".join(f for f, _ in missing)
                raise PlatformError(
                    f"The platform stack '{self.stack}' does not provide {', '.join(o for _, o in missing)}.",
                    hint=f"Set {fields_} in the job file (or flags), or deploy the infra stack.",
                )
            for spec_field, output in missing:
                placeholder = f"<{output} of stack {self.stack}>"
                setattr(resolved, spec_field.split(".", 1)[1], placeholder)
            notes.append(
                f"Stack outputs of '{self.stack}' are not cached, so placeholders stand in for "
                f"{', '.join(o for _, o in missing)}. Run 'ftcloud platform' once to cache them."
            )
        if spec.networking.network_isolation and not (resolved.subnets and resolved.security_group_ids):
            notes.append("Network isolation without a VPC: the container has no network at all.")
        if spec.networking.network_isolation and resolved.hf_token_secret_arn:
            notes.append(
                "Network isolation: the platform's Hugging Face token secret is not passed to the job "
                "(the container has no network and reads the model channel)."
            )
        bucket = resolved.data_bucket or resolved.artifact_bucket or ""
        plans = [plan_upload(ch, src, bucket) for ch, src in local_sources.items()]
        channels = {ch: v for ch, v in (("train", spec.data.train), ("validation", spec.data.validation),
                                         ("model", spec.data.model)) if v and v.startswith("s3://")}
        channels.update({p.channel: p.uri for p in plans})
        request = build_request(spec, resolved, channels, name)
        result = LaunchResult(name=name, backend=self.name, dry_run=dry_run, request=request, notes=notes)
        return result, plans, resolved

    def upload_inputs(self, plans: list[UploadPlan], resolved: ResolvedPlatform, result: LaunchResult) -> None:
        """Upload the planned local inputs (skipping unchanged ones); failures list what was uploaded."""
        try:
            self._upload(plans, resolved.kms_key, result)
        except FtcloudError as exc:
            raise LaunchError(exc, result.uploaded) from None

    def _upload(self, plans: list[UploadPlan], kms_key: str | None, result: LaunchResult) -> None:
        from ftcloud.adaptors import botocore_exceptions

        s3 = self.aws.client("s3")
        done: set[str] = set()
        for plan in plans:
            for local, key in plan.files:
                uri = f"s3://{plan.bucket}/{key}"
                if uri in done:  # the same file feeds two channels
                    continue
                done.add(uri)
                try:
                    s3.head_object(Bucket=plan.bucket, Key=key)
                    result.reused.append(uri)
                    continue
                except botocore_exceptions.ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                        raise self.aws.translate(exc) from None
                except botocore_exceptions.BotoCoreError as exc:  # no credentials, no network, ...
                    raise self.aws.translate(exc) from None
                extra: dict[str, Any] = {"Metadata": {"ftcloud-source": local.name}}
                if kms_key:
                    extra.update({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key})
                self.aws.call(s3.upload_file, str(local), plan.bucket, key, ExtraArgs=extra)
                result.uploaded.append(uri)

    # ------------------------------------------------------------------ status
    def _describe(self, name: str) -> dict[str, Any]:
        from ftcloud.adaptors import botocore_exceptions

        try:
            return self.sm.describe_training_job(TrainingJobName=name)
        except botocore_exceptions.ClientError as exc:
            if _is_not_found(exc):
                raise JobNotFoundError(
                    f"No SageMaker training job named '{name}'{self._where()}.",
                    hint="List jobs with 'ftcloud jobs --backend sagemaker' (check --region / --profile).",
                ) from None
            raise self.aws.translate(exc) from None
        except botocore_exceptions.BotoCoreError as exc:  # no credentials, no network, ...
            raise self.aws.translate(exc) from None

    def _where(self) -> str:
        where = self.aws.describe()
        return f" ({where})" if where else ""

    def status(self, name: str) -> JobStatus:
        return status_from_describe(self._describe(name))

    def list_jobs(self, limit: int = 20) -> list[JobStatus]:
        response = self.aws.call(
            self.sm.list_training_jobs, SortBy="CreationTime", SortOrder="Descending", MaxResults=max(1, min(limit, 100))
        )
        out = []
        for item in response.get("TrainingJobSummaries", [])[:limit]:
            out.append(
                JobStatus(
                    name=item["TrainingJobName"],
                    backend=self.name,
                    status=item.get("TrainingJobStatus", ""),
                    secondary_status=item.get("SecondaryStatus", ""),
                    created=_ts(item.get("CreationTime")),
                    ended=_ts(item.get("TrainingEndTime")),
                    location=item.get("TrainingJobArn"),
                )
            )
        return out

    # ------------------------------------------------------------------ logs
    def read_logs(self, name: str, cursor: LogCursor) -> list[LogEvent]:
        from ftcloud.adaptors import botocore_exceptions

        logs = self.aws.client("logs")
        streams: list[str] = []
        kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{name}/"}
        try:
            while True:
                response = logs.describe_log_streams(**kwargs)
                streams += [s["logStreamName"] for s in response.get("logStreams", [])]
                if not response.get("nextToken"):
                    break
                kwargs["nextToken"] = response["nextToken"]
        except botocore_exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return []  # no job has logged in this region yet
            raise self.aws.translate(exc) from None
        except botocore_exceptions.BotoCoreError as exc:  # no credentials, no network, ...
            raise self.aws.translate(exc) from None
        events: list[LogEvent] = []
        for stream in sorted(streams):
            host = host_of_stream(name, stream)
            token = cursor.tokens.get(stream)
            while True:
                args: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
                if token:
                    args["nextToken"] = token
                response = self.aws.call(logs.get_log_events, **args)
                batch = response.get("events", [])
                events += [LogEvent(int(e["timestamp"]), host, e["message"].rstrip("\n")) for e in batch]
                new_token = response.get("nextForwardToken")
                if not batch or not new_token or new_token == token:
                    token = new_token or token
                    break
                token = new_token
            cursor.tokens[stream] = token
        events.sort(key=lambda e: e.timestamp)  # stable: keeps each host's own order on ties
        return events

    # ------------------------------------------------------------------ stop
    def stop(self, name: str) -> JobStatus:
        from ftcloud.adaptors import botocore_exceptions

        try:
            self.sm.stop_training_job(TrainingJobName=name)
        except botocore_exceptions.ClientError as exc:
            if _is_not_found(exc):
                raise JobNotFoundError(f"No SageMaker training job named '{name}'{self._where()}.") from None
            message = exc.response.get("Error", {}).get("Message", "")
            if "status" not in message.lower():  # "... is in status Completed" means: nothing to stop
                raise self.aws.translate(exc) from None
        except botocore_exceptions.BotoCoreError as exc:  # no credentials, no network, ...
            raise self.aws.translate(exc) from None
        return self.status(name)

    # ------------------------------------------------------------------ resume
    def resume(self, name: str) -> JobStatus:
        """A new job ``NAME-rN`` that continues from ``name``'s S3 checkpoints (same request otherwise)."""
        from ftcloud.backends.sagemaker_resume import resume_request, resumed_name
        from ftcloud.errors import UsageError

        old = self._describe(name)
        tags = self.aws.call(self.sm.list_tags, ResourceArn=old["TrainingJobArn"]).get("Tags", [])
        try:
            request = resume_request(old, tags, resumed_name(name))
        except ValueError as exc:
            raise UsageError(str(exc), hint="Check it with 'ftcloud status JOB'.") from None
        resources = request.get("ResourceConfig", {})
        self.aws.call(
            self.sm.create_training_job,
            **request,
            error_context={
                "role_arn": request.get("RoleArn"),
                "instance_type": resources.get("InstanceType"),
                "spot": bool(request.get("EnableManagedSpotTraining")),
            },
        )
        return self.status(request["TrainingJobName"])


# ---------------------------------------------------------------------- helpers
def status_from_describe(d: dict[str, Any]) -> JobStatus:
    """Map a DescribeTrainingJob response onto :class:`JobStatus`."""
    hps = d.get("HyperParameters", {}) or {}
    resources = d.get("ResourceConfig", {}) or {}
    history = [
        StatusTransition(
            status=t.get("Status", ""),
            start=_ts(t.get("StartTime")),
            end=_ts(t.get("EndTime")),
            message=t.get("StatusMessage", ""),
        )
        for t in d.get("SecondaryStatusTransitions", []) or []
    ]
    metrics = {m["MetricName"]: float(m["Value"]) for m in d.get("FinalMetricDataList", []) or [] if "Value" in m}
    return JobStatus(
        name=d["TrainingJobName"],
        backend="sagemaker",
        status=d.get("TrainingJobStatus", ""),
        secondary_status=d.get("SecondaryStatus", ""),
        failure_reason=d.get("FailureReason"),
        created=_ts(d.get("CreationTime")),
        started=_ts(d.get("TrainingStartTime")),
        ended=_ts(d.get("TrainingEndTime")),
        history=history,
        metrics=metrics,
        training_seconds=d.get("TrainingTimeInSeconds"),
        billable_seconds=d.get("BillableTimeInSeconds"),
        spot=bool(d.get("EnableManagedSpotTraining")),
        artifacts=(d.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
        checkpoints=(d.get("CheckpointConfig") or {}).get("S3Uri"),
        instance_type=resources.get("InstanceType"),
        instance_count=resources.get("InstanceCount"),
        technique=hps.get("technique"),
        model=hps.get("model") or None,
        location=d.get("TrainingJobArn"),
    )


def host_of_stream(job: str, stream: str) -> str:
    """``job/algo-2-1700000000`` -> ``algo-2``."""
    rest = stream[len(job) + 1 :] if stream.startswith(job + "/") else stream
    head, _, tail = rest.rpartition("-")
    return head if head and tail.isdigit() and len(tail) >= 9 else rest  # strip the epoch suffix


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return value.timestamp()
    return float(value)


def _is_not_found(exc: Any) -> bool:
    err = exc.response.get("Error", {})
    return err.get("Code") in ("ResourceNotFound", "ResourceNotFoundException") or (
        err.get("Code") == "ValidationException"
        and any(text in err.get("Message", "").lower() for text in ("not found", "could not find"))
    )
