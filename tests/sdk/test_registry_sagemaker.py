"""The SageMaker registry under moto: exact CreateModelPackage / UpdateModelPackage requests, the
KMS-encrypted ModelMetrics object, metadata limits, versions, references, CLI; Stubber for errors."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest
from botocore.stub import Stubber

import ftcloud
from ftcloud import platform_outputs as po
from ftcloud.aws import AwsContext
from ftcloud.backends.sagemaker import SageMakerBackend
from ftcloud.cli import main
from ftcloud.config import UserConfig
from ftcloud.contract import SERVE_ENV_DEFAULTS
from ftcloud.errors import AwsError, UsageError
from ftcloud.job import build_job_spec
from ftcloud.registry.base import BASE_MODEL_ENV, code_version, spec_hash
from ftcloud.registry.sagemaker import (
    DEFAULT_INFERENCE_INSTANCE_TYPES,
    SageMakerRegistry,
    metadata_properties,
    metadata_safe,
)

from .conftest import ACCOUNT, REGION, moto_training_job

HF_BASE = "meta-llama/Llama-3.2-1B"
JOB_METRICS = {"train_loss": 1.5, "eval_loss": 0.75, "eval_perplexity": 2.117, "epoch": 3.0}


def make_backend() -> SageMakerBackend:
    return SageMakerBackend(AwsContext(region=REGION), user_config=UserConfig(), sleep=lambda s: None)


def completed_job(backend: SageMakerBackend, train_file, name: str, **overrides) -> None:
    """Launch through the real backend (content-addressed upload, real request), then give the moto
    job the final metrics the container's metric lines would have produced."""
    base = {"name": name, "technique": "qlora", "model": HF_BASE, "data": str(train_file),
            "instance_type": "ml.m5.xlarge", "network_isolation": False}
    backend.launch(build_job_spec(overrides={**base, **overrides}))
    moto_training_job(name).final_metric_data_list = [
        {"MetricName": k, "Value": v, "Timestamp": moto_training_job(name).creation_time} for k, v in JOB_METRICS.items()
    ]


def capture(client, operation: str) -> list[dict]:
    sent: list[dict] = []
    client.meta.events.register(
        f"provide-client-params.{client.meta.service_model.service_name}.{operation}",
        lambda params, **_: sent.append(json.loads(json.dumps(params, default=str))),
    )
    return sent


def test_register_sends_the_full_request(platform_stack, train_file):
    backend = make_backend()
    completed_job(backend, train_file, "reg-1", tags=["team=nlp"])
    registry = SageMakerRegistry(backend)
    sm, s3 = backend.aws.client("sagemaker"), backend.aws.client("s3")
    created, groups, puts = capture(sm, "CreateModelPackage"), capture(sm, "CreateModelPackageGroup"), capture(s3, "PutObject")

    version = registry.register(backend.status("reg-1"), description="first try", tags={"owner": "ana"})

    job = boto3.client("sagemaker", region_name=REGION).describe_training_job(TrainingJobName="reg-1")
    artifact = job["ModelArtifacts"]["S3ModelArtifacts"]
    train_uri = job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
    content_hash = train_uri.rstrip("/").rsplit("/", 1)[-1]
    out = platform_stack.outputs
    # The group did not exist: created once, named by the platform's output.
    assert groups == [{
        "ModelPackageGroupName": "ftcloud-models",
        "ModelPackageGroupDescription": "ftcloud fine-tuned models (register -> approve -> deploy)",
        "Tags": [{"Key": "ftcloud:managed-by", "Value": "ftcloud"}],
    }]
    # The metrics JSON: SSE-KMS with the platform key, content-addressed next to the job's outputs.
    (put,) = puts
    assert put["Bucket"] == out[po.ARTIFACT_BUCKET]
    assert put["ServerSideEncryption"] == "aws:kms" and put["SSEKMSKeyId"] == platform_stack.kms_key
    head = boto3.client("s3", region_name=REGION).head_object(Bucket=put["Bucket"], Key=put["Key"])
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == platform_stack.kms_key
    body = boto3.client("s3", region_name=REGION).get_object(Bucket=put["Bucket"], Key=put["Key"])["Body"].read()
    document = json.loads(body)
    assert document["metrics"] == {k: {"value": v} for k, v in JOB_METRICS.items()}
    digest = hashlib.sha256(body).hexdigest()
    assert put["Key"] == f"ftcloud/jobs/reg-1/model-metrics-{digest[:16]}.json"

    lineage = {
        "training_job": "reg-1",
        "base_model": HF_BASE,
        "data": train_uri,
        "data_content_hash": content_hash,
        "spec_hash": spec_hash(job["HyperParameters"]),
        "technique": "qlora",
        "code_version": code_version(),
    }
    assert len(content_hash) == 32 and document["lineage"] == lineage
    environment = {**{k: v for k, v in SERVE_ENV_DEFAULTS.items() if v}, BASE_MODEL_ENV: HF_BASE}
    assert created == [{
        "ModelPackageGroupName": "ftcloud-models",
        "ModelPackageDescription": "first try",
        "ModelApprovalStatus": "PendingManualApproval",
        "InferenceSpecification": {
            "Containers": [{
                "Image": out[po.IMAGE_URI],  # the image that trained it; the platform image serves too
                "ModelDataUrl": artifact,
                "Environment": environment,
            }],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
            "SupportedRealtimeInferenceInstanceTypes": list(DEFAULT_INFERENCE_INSTANCE_TYPES),
        },
        "ModelMetrics": {"ModelQuality": {"Statistics": {
            "ContentType": "application/json",
            "S3Uri": f"s3://{put['Bucket']}/{put['Key']}",
            "ContentDigest": f"sha256:{digest}",
        }}},
        "CustomerMetadataProperties": {
            **{f"ftcloud:{k}": v for k, v in lineage.items()},
            "ftcloud:metric:eval_loss": "0.75",
            "ftcloud:metric:eval_perplexity": "2.117",
            "ftcloud:metric:train_loss": "1.5",
        },
        "Tags": [
            {"Key": "ftcloud:managed-by", "Value": "ftcloud"},
            {"Key": "ftcloud:training-job", "Value": "reg-1"},
            {"Key": "owner", "Value": "ana"},
        ],
    }]
    assert version.arn == f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/ftcloud-models/1"
    assert (version.ref, version.status, version.artifact) == ("ftcloud-models:1", "PendingManualApproval", artifact)
    assert version.lineage == lineage and version.metrics == JOB_METRICS
    assert version.environment == environment

    # A second registration reuses the group and gets the next number.
    completed_job(backend, train_file, "reg-2")
    assert registry.register(backend.status("reg-2")).version == 2
    assert len(groups) == 1


def test_base_weights_from_s3_travel_with_the_version(platform_stack, train_file):
    backend = make_backend()
    completed_job(backend, train_file, "iso-1", model="", model_data="s3://ftcloud-datasets/base/llama/",
                  network_isolation=True)
    sent = capture(backend.aws.client("sagemaker"), "CreateModelPackage")
    version = SageMakerRegistry(backend).register(backend.status("iso-1"), group="isolated")
    (container,) = sent[0]["InferenceSpecification"]["Containers"]
    assert container["AdditionalModelDataSources"] == [{
        "ChannelName": "base",  # mounted at /opt/ml/additional-model-data-sources/base/
        "S3DataSource": {"S3Uri": "s3://ftcloud-datasets/base/llama/", "S3DataType": "S3Prefix",
                         "CompressionType": "None"},
    }]
    assert BASE_MODEL_ENV not in container["Environment"]  # the server finds it at its default path
    assert version.lineage["base_model"] == "s3://ftcloud-datasets/base/llama/"


def test_full_fine_tune_carries_no_base(platform_stack, train_file):
    backend = make_backend()
    completed_job(backend, train_file, "full-1", technique="full", model="", model_data="s3://ftcloud-datasets/b/")
    sent = capture(backend.aws.client("sagemaker"), "CreateModelPackage")
    SageMakerRegistry(backend).register(backend.status("full-1"))
    (container,) = sent[0]["InferenceSpecification"]["Containers"]
    assert "AdditionalModelDataSources" not in container and BASE_MODEL_ENV not in container["Environment"]


@pytest.mark.parametrize("status", ["InProgress", "Failed", "Stopped"])
def test_only_completed_jobs_register(platform_stack, train_file, status):
    backend = make_backend()
    completed_job(backend, train_file, "run-1")
    moto_training_job("run-1").training_job_status = status
    sm, s3 = backend.aws.client("sagemaker"), backend.aws.client("s3")
    created, puts = capture(sm, "CreateModelPackage"), capture(s3, "PutObject")
    with pytest.raises(UsageError, match=f"'run-1' is {status}; only a Completed job"):
        SageMakerRegistry(backend).register(backend.status("run-1"))
    assert created == [] and puts == []  # nothing uploaded, nothing registered


def test_approve_reject_versions_and_references(platform_stack, train_file):
    backend = make_backend()
    registry = SageMakerRegistry(backend)
    for name in ("v-1", "v-2", "v-3"):
        completed_job(backend, train_file, name)
        registry.register(backend.status(name), group="team-x")
    listed = registry.versions("team-x")
    assert [(v.version, v.status, v.lineage["training_job"]) for v in listed] == [
        (1, "PendingManualApproval", "v-1"), (2, "PendingManualApproval", "v-2"), (3, "PendingManualApproval", "v-3")
    ]
    assert listed[0].metrics == {"eval_loss": 0.75, "eval_perplexity": 2.117, "train_loss": 1.5}
    assert listed[0].metrics_uri.startswith("s3://ftcloud-artifacts/ftcloud/jobs/v-1/")

    updates = capture(backend.aws.client("sagemaker"), "UpdateModelPackage")
    approved = registry.approve("team-x:2", reason="beats v1")
    rejected = registry.reject(f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/team-x/3", reason="regressed")
    # moto wipes CustomerMetadataProperties on update; what matters is what we sent.
    assert updates == [
        {"ModelPackageArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/team-x/2",
         "ModelApprovalStatus": "Approved", "ApprovalDescription": "beats v1"},
        {"ModelPackageArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/team-x/3",
         "ModelApprovalStatus": "Rejected", "ApprovalDescription": "regressed"},
    ]
    assert (approved.status, approved.approval_reason) == ("Approved", "beats v1")
    assert [h.status for h in approved.history] == ["PendingManualApproval", "Approved"]
    assert rejected.status == "Rejected"
    assert registry.get("team-x").version == 3
    assert registry.get("team-x", status="Approved").version == 2
    with pytest.raises(UsageError, match="team-x:3 is Rejected, not Approved"):
        registry.get("team-x:3", status="Approved")
    with pytest.raises(ftcloud.FtcloudError, match=r"has no version 9 \(it has 1, 2, 3\)"):
        registry.approve("team-x:9")
    with pytest.raises(ftcloud.FtcloudError, match="No SageMaker model package group 'nope'"):
        registry.versions("nope")


def test_denied_approval_is_translated(platform_stack, train_file):
    backend = make_backend()
    completed_job(backend, train_file, "d-1")
    registry = SageMakerRegistry(backend)
    registry.register(backend.status("d-1"))
    sm = backend.aws.client("sagemaker")
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/ftcloud-models/1"
    with Stubber(sm) as stub:
        stub.add_client_error(
            "update_model_package", service_error_code="AccessDeniedException",
            service_message=f"User: arn:aws:iam::{ACCOUNT}:user/dev is not authorized to perform: "
                            f"sagemaker:UpdateModelPackage on resource: {arn}",
            expected_params={"ModelPackageArn": arn, "ModelApprovalStatus": "Approved",
                             "ApprovalDescription": "ok"},
        )
        with pytest.raises(AwsError, match="not allowed to call sagemaker:UpdateModelPackage") as info:
            registry._set_status(registry_ref(arn), "Approved", "ok")
        stub.assert_no_pending_responses()
    assert "Ask an administrator" in info.value.hint


def registry_ref(arn: str):
    from ftcloud.registry.base import parse_ref

    return parse_ref(arn)


@pytest.mark.parametrize(
    "lineage, expected",
    [
        ({"base_model": "org/model (v2), «beta»"}, {"ftcloud:base_model": "org/model _v2__ _beta_"}),
        ({"data": "s3://b/" + "k" * 300}, {"ftcloud:data": ("s3://b/" + "k" * 300)[:256]}),
        ({"technique": "", "spec_hash": None}, {}),  # SageMaker wants 1-256 characters: left out
        ({"extra_key": "x@y=z+1:2.3-_/"}, {"ftcloud:extra_key": "x@y=z+1:2.3-_/"}),
    ],
)
def test_metadata_properties_follow_sagemakers_limits(lineage, expected):
    assert metadata_properties(lineage, {}) == expected


def test_metadata_caps_entries_and_key_length():
    many = {f"k{i}": "v" for i in range(80)}
    props = metadata_properties(many, {"eval_loss": 0.5})
    assert len(props) == 50
    assert len(metadata_safe("x" * 200, 128)) == 128


def test_sdk_and_cli_route_to_sagemaker(platform_stack, train_file, capsys):
    backend = make_backend()
    completed_job(backend, train_file, "cli-1")
    # The job is not in the local store, so register looks it up on the sagemaker backend.
    version = ftcloud.register("cli-1", backend="sagemaker")
    assert version.backend == "sagemaker" and version.ref == "ftcloud-models:1"
    # An ARN names a SageMaker package even when the default backend is local.
    assert main(["approve", version.arn, "--reason", "ship it", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["status"] == "Approved"
    assert main(["versions", "--backend", "sagemaker", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["ref"], r["status"], r["approval_reason"]) for r in rows] == [("ftcloud-models:1", "Approved", "ship it")]
    assert main(["reject", "ftcloud-models:2", "--reason", "x", "--backend", "sagemaker"]) == 1
    assert "has no version 2" in capsys.readouterr().err
