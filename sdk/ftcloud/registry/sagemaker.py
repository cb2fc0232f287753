"""The SageMaker registry: model package groups and versioned model packages (plain boto3).

``register`` turns a Completed training job into a model package, status PendingManualApproval:

* the serving container: the image that trained the job (the platform image serves too), the
  job's ``model.tar.gz``, the contract's serving environment, and for an adapter-only artifact
  whose base weights came from S3 (the ``model`` channel) that S3 prefix attached as the ``base``
  additional model data source, so serving needs no Hugging Face Hub;
* evaluation metrics as a ModelMetrics JSON uploaded to the artifact bucket with SSE-KMS (the
  platform key) and referenced as ``ModelQuality.Statistics`` (with its sha256 digest);
* lineage and the headline metrics in CustomerMetadataProperties (SageMaker's limits applied by
  :func:`metadata_properties`), tags naming the job.

:func:`build_request` is pure: the exact CreateModelPackage request. ``approve``/``reject`` call
UpdateModelPackage with the reason as ApprovalDescription; ``versions`` is ListModelPackages plus
DescribeModelPackage per version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from ftcloud import platform_outputs as po
from ftcloud.contract import BASE_MODEL_DIR
from ftcloud.errors import PlatformError, UsageError
from ftcloud.registry.base import (
    LINEAGE_KEYS,
    PENDING,
    ApprovalEvent,
    ModelVersion,
    ModelVersionNotFoundError,
    Registry,
    VersionRef,
    check_group_name,
    code_version,
    content_hash_from_uri,
    parse_ref,
    serving_environment,
    spec_hash,
)
from ftcloud.sagemaker_facts import OUTPUT_PREFIX

#: What the server accepts and answers (TGI/LMI and OpenAI-style JSON).
SUPPORTED_CONTENT_TYPES = ("application/json",)
#: Instance types a version is declared deployable on unless ``instance_types`` says otherwise:
#: GPU types for real models, m5 for CPU smoke tests of tiny ones.
DEFAULT_INFERENCE_INSTANCE_TYPES = (
    "ml.g5.xlarge", "ml.g5.2xlarge", "ml.g5.12xlarge", "ml.g6.xlarge", "ml.g6.2xlarge",
    "ml.g6e.xlarge", "ml.g6e.2xlarge", "ml.g4dn.xlarge", "ml.m5.xlarge", "ml.m5.2xlarge",
)  # fmt: skip
#: The additional model data source an adapter-only version's base weights are attached as
#: (mounted at /opt/ml/additional-model-data-sources/base/, where the server looks for them).
BASE_MODEL_CHANNEL = BASE_MODEL_DIR
#: Where the ModelMetrics JSON goes in the artifact bucket: next to the job's outputs
#: (``<prefix>/<job>/model-metrics-<digest>.json``).
METRICS_PREFIX = OUTPUT_PREFIX

#: Metrics copied into the package's metadata so ``versions`` shows them without reading S3.
HEADLINE_METRICS = ("eval_loss", "eval_perplexity", "train_loss")
METADATA_PREFIX = "ftcloud:"
METRIC_METADATA_PREFIX = "ftcloud:metric:"
#: SageMaker's CustomerMetadataProperties limits.
MAX_METADATA_ENTRIES = 50
MAX_METADATA_KEY = 128
MAX_METADATA_VALUE = 256
_METADATA_PUNCTUATION = set("_.:/=+-@")


def metadata_safe(text: str, limit: int) -> str:
    """``text`` within SageMaker's metadata alphabet (letters, digits, spaces, ``_.:/=+-@``; other
    characters become ``_``) and at most ``limit`` characters."""
    return "".join(c if c.isalnum() or c == " " or c in _METADATA_PUNCTUATION else "_" for c in text)[:limit]


def metadata_properties(lineage: dict[str, str], metrics: dict[str, float]) -> dict[str, str]:
    """CustomerMetadataProperties for a version: ``ftcloud:<lineage key>`` and ``ftcloud:metric:<name>``.
    Empty values are left out (SageMaker wants 1-256 characters); at most 50 entries."""
    out: dict[str, str] = {}
    for key in [*LINEAGE_KEYS, *sorted(k for k in lineage if k not in LINEAGE_KEYS)]:
        value = metadata_safe(str(lineage.get(key) or ""), MAX_METADATA_VALUE)
        if value:
            out[metadata_safe(METADATA_PREFIX + key, MAX_METADATA_KEY)] = value
    for name in HEADLINE_METRICS:
        if name in metrics:
            out[METRIC_METADATA_PREFIX + name] = f"{metrics[name]:.6g}"
    return dict(list(out.items())[:MAX_METADATA_ENTRIES])


def metrics_document(job: str, metrics: dict[str, float], lineage: dict[str, str]) -> bytes:
    """The ModelMetrics JSON (``ModelQuality.Statistics``): every numeric metric of the job."""
    doc = {
        "version": 0.0,
        "training_job": job,
        "lineage": lineage,
        "metrics": {name: {"value": value} for name, value in sorted(metrics.items())},
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def build_request(
    *,
    group: str,
    image: str,
    model_data_url: str,
    environment: dict[str, str],
    metrics_uri: str,
    metrics_digest: str,
    lineage: dict[str, str],
    metrics: dict[str, float],
    base_model_s3: str | None = None,
    description: str | None = None,
    instance_types: Iterable[str] | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The exact CreateModelPackage request for one version (pending manual approval)."""
    container: dict[str, Any] = {"Image": image, "ModelDataUrl": model_data_url, "Environment": dict(environment)}
    if base_model_s3:
        container["AdditionalModelDataSources"] = [
            {
                "ChannelName": BASE_MODEL_CHANNEL,
                "S3DataSource": {"S3Uri": base_model_s3, "S3DataType": "S3Prefix", "CompressionType": "None"},
            }
        ]
    job = lineage.get("training_job", "")
    all_tags = {"ftcloud:managed-by": "ftcloud", **({"ftcloud:training-job": job} if job else {}), **(tags or {})}
    return {
        "ModelPackageGroupName": group,
        "ModelPackageDescription": (description or f"Fine-tuned by training job {job}")[:1024],
        "ModelApprovalStatus": PENDING,
        "InferenceSpecification": {
            "Containers": [container],
            "SupportedContentTypes": list(SUPPORTED_CONTENT_TYPES),
            "SupportedResponseMIMETypes": list(SUPPORTED_CONTENT_TYPES),
            "SupportedRealtimeInferenceInstanceTypes": list(instance_types or DEFAULT_INFERENCE_INSTANCE_TYPES),
        },
        "ModelMetrics": {
            "ModelQuality": {
                "Statistics": {"ContentType": "application/json", "S3Uri": metrics_uri, "ContentDigest": metrics_digest}
            }
        },
        "CustomerMetadataProperties": metadata_properties(lineage, metrics),
        "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()],
    }


def version_from_describe(d: dict[str, Any]) -> ModelVersion:
    """Map a DescribeModelPackage response onto :class:`ModelVersion`."""
    containers = (d.get("InferenceSpecification") or {}).get("Containers") or [{}]
    container = containers[0]
    props = d.get("CustomerMetadataProperties") or {}
    lineage = {k[len(METADATA_PREFIX):]: v for k, v in props.items()
               if k.startswith(METADATA_PREFIX) and not k.startswith(METRIC_METADATA_PREFIX)}
    metrics = {}
    for key, value in props.items():
        if key.startswith(METRIC_METADATA_PREFIX):
            try:
                metrics[key[len(METRIC_METADATA_PREFIX):]] = float(value)
            except ValueError:
                continue
    created = _ts(d.get("CreationTime"))
    status = d.get("ModelApprovalStatus") or PENDING
    history = [ApprovalEvent(PENDING, "registered", created, _who(d.get("CreatedBy")))]
    if status != PENDING or d.get("ApprovalDescription"):
        history.append(ApprovalEvent(status, d.get("ApprovalDescription"), _ts(d.get("LastModifiedTime")),
                                     _who(d.get("LastModifiedBy"))))
    statistics = ((d.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics") or {}
    return ModelVersion(
        group=d.get("ModelPackageGroupName", ""),
        version=int(d.get("ModelPackageVersion") or 0),
        status=status,
        artifact=container.get("ModelDataUrl", ""),
        backend="sagemaker",
        arn=d.get("ModelPackageArn"),
        image=container.get("Image"),
        environment=dict(container.get("Environment") or {}),
        metrics=metrics,
        metrics_uri=statistics.get("S3Uri"),
        lineage=lineage,
        created=created,
        description=d.get("ModelPackageDescription"),
        approval_reason=d.get("ApprovalDescription"),
        history=history,
    )


class SageMakerRegistry(Registry):
    name = "sagemaker"

    def __init__(self, backend: Any):
        """``backend``: a :class:`~ftcloud.backends.sagemaker.SageMakerBackend` (its AWS context,
        platform discovery and training job describe are reused)."""
        self.backend = backend
        self.aws = backend.aws
        self._platform: Any = None

    @property
    def sm(self) -> Any:
        return self.aws.client("sagemaker")

    def describe_target(self) -> str:
        return self.backend.describe_target()

    def platform(self, *, refresh: bool = False) -> Any:
        """The stack's outputs: the cache from 'platform use' when it has them, else DescribeStacks."""
        if self._platform is None or (refresh and self._platform.source != "cloudformation"):
            found = None if refresh else self.backend.platform(refresh=False)
            if found is None or not found.outputs:
                found = self.backend.platform(refresh=True)
            self._platform = found
        return self._platform

    @property
    def default_group(self) -> str:
        group = self.platform().get(po.MODEL_PACKAGE_GROUP)
        if not group:
            raise PlatformError(
                f"Platform stack '{self.backend.stack}' has no {po.MODEL_PACKAGE_GROUP} output, so there is "
                "no default model group.",
                hint="Pass --group NAME, or deploy the platform stack (it creates the group).",
            )
        return group

    # ------------------------------------------------------------------ register
    def register(
        self,
        job: Any,
        group: str | None = None,
        *,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        image: str | None = None,
        instance_types: Iterable[str] | None = None,
    ) -> ModelVersion:
        group = check_group_name(group or self.default_group)
        d = self.backend._describe(job.name)
        status = d.get("TrainingJobStatus")
        if status != "Completed":
            raise UsageError(
                f"Training job '{job.name}' is {status}; only a Completed job can be registered "
                "(its model.tar.gz exists only then).",
                hint=(f"Follow it with 'ftcloud logs {job.name} --follow', then register it."
                      if status in ("InProgress", "Stopping") else "Register another job, or train again."),
            )
        artifact = (d.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        if not artifact:
            raise UsageError(f"Training job '{job.name}' is Completed but reports no S3ModelArtifacts.")
        platform = self.platform(refresh=True)
        bucket, kms_key = platform.artifact_bucket, platform.kms_key
        missing = [out for out, value in ((po.ARTIFACT_BUCKET, bucket), (po.KMS_KEY_ARN, kms_key)) if not value]
        if missing:
            raise PlatformError(
                f"Platform stack '{platform.stack}' lacks {' and '.join(missing)}: the model metrics are "
                "stored KMS-encrypted in the artifact bucket.",
                hint="Deploy the platform stack (cd infra && cdk deploy) and retry.",
            )
        image = image or (d.get("AlgorithmSpecification") or {}).get("TrainingImage") or platform.image
        if not image:
            raise PlatformError(f"No serving image: the job names none and stack '{platform.stack}' has no "
                                f"{po.IMAGE_URI} output.", hint="Pass image=... (SDK).")

        hyperparameters = d.get("HyperParameters") or {}
        channels = {
            c["ChannelName"]: ((c.get("DataSource") or {}).get("S3DataSource") or {}).get("S3Uri")
            for c in d.get("InputDataConfig") or []
        }
        technique = hyperparameters.get("technique")
        base_s3 = channels.get("model")
        base_model = hyperparameters.get("model") or base_s3
        attach_base = bool(base_s3) and technique != "full"
        lineage = {
            "training_job": job.name,
            "base_model": base_model,
            "data": channels.get("train"),
            "data_content_hash": content_hash_from_uri(channels.get("train")),
            "spec_hash": spec_hash(hyperparameters) if hyperparameters else None,
            "technique": technique,
            "code_version": code_version(),
        }
        lineage = {k: str(v) for k, v in lineage.items() if v}
        from ftcloud.backends.sagemaker import status_from_describe

        metrics = status_from_describe(d).metrics
        body = metrics_document(job.name, metrics, lineage)
        digest = hashlib.sha256(body).hexdigest()
        key = f"{METRICS_PREFIX}/{job.name}/model-metrics-{digest[:16]}.json"
        s3 = self.aws.client("s3")
        self.aws.call(s3.put_object, Bucket=bucket, Key=key, Body=body, ContentType="application/json",
                      ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key)
        request = build_request(
            group=group,
            image=image,
            model_data_url=artifact,
            environment=serving_environment(technique, base_model, base_attached=attach_base),
            metrics_uri=f"s3://{bucket}/{key}",
            metrics_digest=f"sha256:{digest}",
            lineage=lineage,
            metrics=metrics,
            base_model_s3=base_s3 if attach_base else None,
            description=description,
            instance_types=instance_types,
            tags=tags,
        )
        self._ensure_group(group)
        arn = self.aws.call(self.sm.create_model_package, **request)["ModelPackageArn"]
        version = self._describe(arn)
        # Describe returns what SageMaker kept; the full metrics are what was uploaded.
        version.metrics = {**version.metrics, **metrics}
        return version

    def _ensure_group(self, group: str) -> None:
        if self._group_exists(group):
            return
        self.aws.call(
            self.sm.create_model_package_group,
            ModelPackageGroupName=group,
            ModelPackageGroupDescription="ftcloud fine-tuned models (register -> approve -> deploy)",
            Tags=[{"Key": "ftcloud:managed-by", "Value": "ftcloud"}],
        )

    def _group_exists(self, group: str) -> bool:
        from ftcloud.adaptors import botocore_exceptions

        try:
            self.sm.describe_model_package_group(ModelPackageGroupName=group)
        except botocore_exceptions.ClientError as exc:
            message = exc.response.get("Error", {}).get("Message", "").lower()
            if "does not exist" in message or "not found" in message:
                return False
            raise self.aws.translate(exc) from None
        except botocore_exceptions.BotoCoreError as exc:
            raise self.aws.translate(exc) from None
        return True

    # ------------------------------------------------------------------ read
    def _describe(self, arn: str) -> ModelVersion:
        return version_from_describe(self.aws.call(self.sm.describe_model_package, ModelPackageName=arn))

    def _summaries(self, group: str, status: str | None = None) -> list[dict[str, Any]]:
        """Every version's summary in ``group``, oldest first."""
        if not self._group_exists(group):
            raise ModelVersionNotFoundError(
                f"No SageMaker model package group '{group}'{self._where()}.",
                hint=f"Register a job into it: ftcloud register JOB --group {group}",
            )
        kwargs: dict[str, Any] = {"ModelPackageGroupName": group, "ModelPackageType": "Versioned",
                                  "SortBy": "CreationTime", "SortOrder": "Ascending", "MaxResults": 100}
        if status:
            kwargs["ModelApprovalStatus"] = status
        out: list[dict[str, Any]] = []
        while True:
            response = self.aws.call(self.sm.list_model_packages, **kwargs)
            out += response.get("ModelPackageSummaryList") or []
            if not response.get("NextToken"):
                break
            kwargs["NextToken"] = response["NextToken"]
        return sorted(out, key=lambda s: int(s.get("ModelPackageVersion") or 0))

    def _where(self) -> str:
        where = self.aws.describe()
        return f" ({where})" if where else ""

    def versions(self, group: str | None = None) -> list[ModelVersion]:
        group = check_group_name(group or self.default_group)
        return [self._describe(s["ModelPackageArn"]) for s in self._summaries(group)]

    def _resolve(self, ref: VersionRef, status: str | None = None) -> str:
        """The ARN ``ref`` names, from summaries only (no describe per version)."""
        if ref.arn:
            return ref.arn
        summaries = self._summaries(ref.group, None if ref.version is not None else status)
        if ref.version is not None:
            for s in summaries:
                if int(s.get("ModelPackageVersion") or 0) == ref.version:
                    return s["ModelPackageArn"]
            raise ModelVersionNotFoundError(
                f"Model package group '{ref.group}' has no version {ref.version}"
                + (f" (it has {', '.join(str(s.get('ModelPackageVersion')) for s in summaries)})."
                   if summaries else " (it has none)."),
                hint=f"List them with 'ftcloud versions {ref.group}'.",
            )
        if not summaries:
            raise ModelVersionNotFoundError(
                f"Model package group '{ref.group}' has no{' ' + status if status else ''} versions.",
                hint=f"Register one with 'ftcloud register JOB --group {ref.group}'.",
            )
        return summaries[-1]["ModelPackageArn"]

    def get(self, ref: str, *, status: str | None = None) -> ModelVersion:
        parsed = parse_ref(ref)
        version = self._describe(self._resolve(parsed, status))
        if status is not None and version.status != status:
            raise UsageError(
                f"{version.ref} is {version.status}, not {status}.",
                hint=f"Approve it first: ftcloud approve {version.ref} --reason TEXT" if status == "Approved" else None,
            )
        return version

    # ------------------------------------------------------------------ approve / reject
    def _set_status(self, ref: VersionRef, status: str, reason: str | None) -> ModelVersion:
        arn = self._resolve(ref)
        request: dict[str, Any] = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
        if reason:
            request["ApprovalDescription"] = reason
        self.aws.call(self.sm.update_model_package, **request)
        return self._describe(arn)


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def _who(user: Any) -> str | None:
    if not isinstance(user, dict):
        return None
    return user.get("UserProfileName") or user.get("IamIdentity", {}).get("Arn") or None
