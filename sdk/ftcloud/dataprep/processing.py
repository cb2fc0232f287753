"""``data prepare --backend sagemaker``: the same pipeline as a SageMaker Processing job.

:func:`build_request` is a pure function to the exact CreateProcessingJob request (``--dry-run``
prints it). What it encodes:

* the project's image (the platform stack's, or ``image``) started as ``IMAGE prepare ...``: the
  image's entrypoint runs ``python -m ftcloud_train prepare`` with ``--part auto``, so every
  instance writes ``train/<host>.jsonl``, ``validation/<host>.jsonl``, ``cards/<host>.json``;
* every data source as one input with ``S3DataDistributionType=ShardedByS3Key``: each instance
  gets a disjoint share of the objects (so shard over many files; a single file goes to one
  instance), and local glossary / synonym / tokenizer / model files as FullyReplicated inputs;
* one S3 output (``EndOfJob``) under ``ftcloud/prepared/<job>/``, KMS for it and for the volume
  (except on local-NVMe instance types), the execution role, network isolation (then also
  ``HF_HUB_OFFLINE=1``), inter-container encryption, the VPC, tags, a max runtime.

Local inputs are uploaded under content-hash keys like training data (never twice).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ftcloud.contract import DEFAULT_ROOT, PROCESSING_INPUT_DIR, PROCESSING_OUTPUT_DIR
from ftcloud.errors import FtcloudError, LaunchError, PlatformError, UsageError
from ftcloud.sagemaker_facts import PREPARED_PREFIX, has_local_nvme

CONTAINER_INPUT = f"{DEFAULT_ROOT}/{PROCESSING_INPUT_DIR}"
CONTAINER_OUTPUT = f"{DEFAULT_ROOT}/{PROCESSING_OUTPUT_DIR}"
#: Option fields whose value may be a local file or directory that must travel with the job.
FILE_OPTIONS = ("glossary", "synonyms", "tokenizer", "back_translate", "back_translate_return")
TERMINAL = ("Completed", "Failed", "Stopped")


@dataclass
class ProcessingSettings:
    """Compute and network of the Processing job (the platform stack supplies role/image/KMS/VPC)."""

    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    volume_size_gb: int = 30
    max_runtime: int = 24 * 3600
    network_isolation: bool = True
    inter_container_encryption: bool = True
    subnets: list[str] = field(default_factory=list)
    security_group_ids: list[str] = field(default_factory=list)
    role: str | None = None
    image: str | None = None
    kms_key: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        if self.instance_count < 1:
            raise UsageError(f"--instance-count {self.instance_count}: must be at least 1.")
        if bool(self.subnets) != bool(self.security_group_ids):
            missing = "--security-group" if self.subnets else "--subnet"
            raise UsageError(f"a VPC needs both subnets and security groups; add {missing}.")


@dataclass
class ProcessingResult:
    """What ``prepare_data(backend="sagemaker")`` planned or started."""

    name: str
    dry_run: bool
    request: dict[str, Any]
    output_uri: str
    notes: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    status: str | None = None
    failure_reason: str | None = None
    arn: str | None = None

    @property
    def channels(self) -> dict[str, str]:
        """Ready-made training channels (every instance's part under one prefix each)."""
        return {"train": f"{self.output_uri}train/", "validation": f"{self.output_uri}validation/"}

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "channels": self.channels}


def new_processing_name() -> str:
    from ftcloud.job import new_job_name

    return new_job_name("prep")


def _s3_input(name: str, uri: str, local: str, sharded: bool) -> dict[str, Any]:
    return {
        "InputName": name,
        "S3Input": {
            "S3Uri": uri,
            "LocalPath": local,
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
            "S3DataDistributionType": "ShardedByS3Key" if sharded else "FullyReplicated",
        },
    }


def build_request(
    *,
    name: str,
    sources: list[str],
    assets: dict[str, str],
    options: Any,
    output_uri: str,
    settings: ProcessingSettings,
    role: str,
    image: str,
    kms_key: str | None,
    subnets: list[str],
    security_group_ids: list[str],
    fmt: str = "auto",
) -> dict[str, Any]:
    """The exact CreateProcessingJob request. ``sources``: S3 URIs of the data (sharded);
    ``assets``: option value -> S3 URI of a local file option (replicated to every instance);
    ``options``: a :class:`~ftcloud_train.prepare.options.PrepareOptions`."""
    inputs = [_s3_input(f"data-{i}", uri, f"{CONTAINER_INPUT}/data-{i}", True) for i, uri in enumerate(sources, 1)]
    container_paths: dict[str, str] = {}
    for i, (value, uri) in enumerate(sorted(assets.items()), 1):
        local = f"{CONTAINER_INPUT}/asset-{i}"
        inputs.append(_s3_input(f"asset-{i}", uri, local, False))
        is_file = not uri.endswith("/")
        container_paths[value] = f"{local}/{Path(value).name}" if is_file else local
    in_container = options
    for opt in FILE_OPTIONS:
        value = getattr(options, opt)
        if isinstance(value, list):
            in_container = replace(in_container, **{opt: [container_paths.get(v, v) for v in value]})
        elif value in container_paths:
            in_container = replace(in_container, **{opt: container_paths[value]})
    arguments = ["prepare", *[f"{CONTAINER_INPUT}/data-{i}" for i in range(1, len(sources) + 1)],
                 "--out", CONTAINER_OUTPUT, "--part", "auto", "--format", fmt, *in_container.to_args()]
    cluster: dict[str, Any] = {"InstanceCount": settings.instance_count, "InstanceType": settings.instance_type,
                               "VolumeSizeInGB": settings.volume_size_gb}
    if kms_key and not has_local_nvme(settings.instance_type):
        cluster["VolumeKmsKeyId"] = kms_key
    output: dict[str, Any] = {"Outputs": [{"OutputName": "prepared", "S3Output": {
        "S3Uri": output_uri, "LocalPath": CONTAINER_OUTPUT, "S3UploadMode": "EndOfJob"}}]}
    if kms_key:
        output["KmsKeyId"] = kms_key
    network: dict[str, Any] = {"EnableNetworkIsolation": settings.network_isolation,
                               "EnableInterContainerTrafficEncryption": settings.inter_container_encryption}
    if subnets and security_group_ids:
        network["VpcConfig"] = {"SecurityGroupIds": list(security_group_ids), "Subnets": list(subnets)}
    tags = {"ftcloud:managed-by": "ftcloud", "ftcloud:purpose": "data-prepare", **settings.tags}
    request: dict[str, Any] = {
        "ProcessingJobName": name,
        "RoleArn": role,
        "AppSpecification": {"ImageUri": image, "ContainerArguments": arguments},
        "ProcessingInputs": inputs,
        "ProcessingOutputConfig": output,
        "ProcessingResources": {"ClusterConfig": cluster},
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_runtime},
        "NetworkConfig": network,
        "Environment": {"PYTHONUNBUFFERED": "1", **({"HF_HUB_OFFLINE": "1"} if settings.network_isolation else {})},
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }
    return request


def local_assets(options: Any) -> list[str]:
    """Option values that name local files or directories (they are uploaded with the job)."""
    from ftcloud_train.prepare.options import BUILTIN_GLOSSARIES

    out = []
    for opt in FILE_OPTIONS:
        value = getattr(options, opt)
        for v in value if isinstance(value, list) else [value]:
            if v and v not in BUILTIN_GLOSSARIES and not v.startswith("s3://") and Path(v).expanduser().exists():
                out.append(v)
    return out


def run(
    backend: Any,
    sources: list[str],
    options: Any,
    *,
    settings: ProcessingSettings | None = None,
    fmt: str = "auto",
    output_uri: str | None = None,
    name: str | None = None,
    dry_run: bool = False,
    wait: bool = True,
    poll: float = 15.0,
    timeout: float | None = None,
) -> ProcessingResult:
    """Plan (``dry_run``) or start a Processing job on ``backend`` (a SageMakerBackend); with ``wait``
    follow it to its end. Local sources and file options are uploaded first (content-addressed)."""
    from ftcloud.backends.sagemaker import plan_upload

    settings = settings or ProcessingSettings()
    settings.check()
    options.validate()
    if options.token_cache:  # refused before a job is created only to fail on its first instance
        raise UsageError("--token-cache runs with the local backend only: the instances of a Processing "
                         "job each see a share of the channel, and the cache is keyed by all of it.")
    if not sources:
        raise UsageError("no data: pass at least one file, directory or s3:// URI.")
    for src in sources:
        if "://" in src and not src.startswith("s3://"):
            raise UsageError(f"{src}: a Processing job reads S3 (or local files, which are uploaded); "
                             "HTTP and SQL sources work with --backend local.")
    name = name or new_processing_name()
    notes: list[str] = []
    try:
        platform = backend.platform(refresh=not dry_run)
    except PlatformError:
        if not (settings.role and settings.image):
            raise
        from ftcloud.platform import Platform

        platform = Platform(backend.stack, backend.aws.region, {}, source="none")
        notes.append(f"No platform stack '{backend.stack}' found; using the explicit settings only.")
    role = settings.role or platform.role
    image = settings.image or platform.image
    kms_key = settings.kms_key or platform.kms_key
    bucket = platform.data_bucket or platform.artifact_bucket
    subnets = settings.subnets or platform.subnets
    groups = settings.security_group_ids or platform.security_group_ids
    missing = [(f, o) for f, o, v in (("--role", "ExecutionRoleArn", role), ("--image", "ImageUri", image),
                                      ("a bucket", "DatasetBucket/ArtifactBucket", bucket)) if not v]
    if missing and not dry_run:
        raise PlatformError(
            f"The platform stack '{backend.stack}' does not provide {', '.join(o for _, o in missing)}.",
            hint=f"Pass {', '.join(f for f, _ in missing)}, or deploy the infra stack.",
        )
    if missing:
        notes.append("Stack outputs are not cached, so placeholders stand in for "
                     f"{', '.join(o for _, o in missing)}. Run 'ftcloud platform' once to cache them.")
    role = role or f"<ExecutionRoleArn of stack {backend.stack}>"
    image = image or f"<ImageUri of stack {backend.stack}>"
    bucket = bucket or f"<bucket of stack {backend.stack}>"
    output_uri = output_uri or f"s3://{platform.artifact_bucket or bucket}/{PREPARED_PREFIX}/{name}/"
    if not output_uri.startswith("s3://"):
        raise UsageError(f"--out {output_uri}: with --backend sagemaker the output is an s3:// URI.")
    output_uri = output_uri.rstrip("/") + "/"

    plans = [plan_upload("data", src, bucket) for src in sources if not src.startswith("s3://")]
    uris = iter(p.uri for p in plans)
    data_uris = [src if src.startswith("s3://") else next(uris) for src in sources]
    asset_plans = {value: plan_upload("asset", value, bucket) for value in local_assets(options)}
    assets = {value: (p.uri + Path(value).name if Path(value).expanduser().is_file() else p.uri)
              for value, p in asset_plans.items()}
    few = [p for p in plans if len(p.files) < settings.instance_count]
    if settings.instance_count > 1 and few:
        notes.append(f"{few[0].local} has {len(few[0].files)} input file(s) for {settings.instance_count} instances: "
                     "ShardedByS3Key gives each instance whole files, so instances without a file have nothing "
                     "to do. Split the data into at least as many files as instances.")
    request = build_request(name=name, sources=data_uris, assets=assets, options=options, output_uri=output_uri,
                            settings=settings, role=role, image=image, kms_key=kms_key, subnets=subnets,
                            security_group_ids=groups, fmt=fmt)
    result = ProcessingResult(name=name, dry_run=dry_run, request=request, output_uri=output_uri, notes=notes)
    if dry_run:
        return result
    try:
        backend._upload([*plans, *asset_plans.values()], kms_key, result)
        response = backend.aws.call(backend.sm.create_processing_job, **request,
                                    error_context={"role_arn": role, "instance_type": settings.instance_type})
    except FtcloudError as exc:
        raise LaunchError(exc, result.uploaded) from None
    result.arn = response.get("ProcessingJobArn")
    result.status = "InProgress"
    if wait:
        wait_for(backend, result, poll=poll, timeout=timeout)
    return result


def wait_for(backend: Any, result: ProcessingResult, *, poll: float = 15.0, timeout: float | None = None) -> None:
    """Poll DescribeProcessingJob until the job ends (or ``timeout`` seconds pass)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        d = backend.aws.call(backend.sm.describe_processing_job, ProcessingJobName=result.name)
        result.status = d.get("ProcessingJobStatus")
        # FailureReason says what SageMaker saw (exit code); ExitMessage what the container said (file:line).
        reasons = [d.get("FailureReason"), d.get("ExitMessage")]
        result.failure_reason = " | ".join(r for r in reasons if r) or None
        if result.status in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
            return
        time.sleep(poll)
