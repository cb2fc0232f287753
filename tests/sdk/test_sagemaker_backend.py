"""The SageMaker flow under moto: upload, create, describe, list, logs, wait; Stubber for stop."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber

from ftcloud import platform_outputs as po
from ftcloud.aws import AwsContext
from ftcloud.backends.base import LogCursor
from ftcloud.backends.sagemaker import (
    CONTAINER_CHECKPOINT_DIR,
    LOG_GROUP,
    SageMakerBackend,
    has_local_nvme,
    host_of_stream,
)
from ftcloud.config import UserConfig
from ftcloud.contract import metric_definitions
from ftcloud.errors import AwsError, JobNotFoundError, LaunchError
from ftcloud.job import build_job_spec
from ftcloud.spec import SpecError

from .conftest import REGION, moto_training_job


def make_backend(sleep=lambda s: None) -> SageMakerBackend:
    return SageMakerBackend(AwsContext(region=REGION), user_config=UserConfig(), sleep=sleep)


def capture_requests(backend: SageMakerBackend) -> list[dict]:
    """Record every CreateTrainingJob request exactly as handed to botocore."""
    sent: list[dict] = []
    backend.sm.meta.events.register(
        "provide-client-params.sagemaker.CreateTrainingJob", lambda params, **_: sent.append(json.loads(json.dumps(params)))
    )
    return sent


def spec_for(train_file, **overrides):
    base = {"technique": "qlora", "model": "meta-llama/Llama-3.2-1B", "data": str(train_file),
            "instance_type": "ml.m5.xlarge"}
    return build_job_spec(overrides={**base, **overrides})


# ---------------------------------------------------------------------- the request
def test_launch_sends_the_full_request(platform_stack, train_file):
    backend = make_backend()
    sent = capture_requests(backend)
    spec = spec_for(train_file, name="req-1", max_runtime="2h", tags=["team=nlp"], lora_r=8)
    result = backend.launch(spec)

    assert len(sent) == 1
    req = sent[0]
    out = platform_stack.outputs
    assert req["TrainingJobName"] == "req-1"
    assert req["RoleArn"] == out[po.EXECUTION_ROLE_ARN]
    assert req["AlgorithmSpecification"]["TrainingImage"] == out[po.IMAGE_URI]
    assert req["AlgorithmSpecification"]["MetricDefinitions"] == metric_definitions()
    # Spot on by default, with checkpoints synced to S3 and MaxWait >= MaxRuntime.
    assert req["EnableManagedSpotTraining"] is True
    assert req["StoppingCondition"]["MaxRuntimeInSeconds"] == 7200
    assert req["StoppingCondition"]["MaxWaitTimeInSeconds"] >= 7200
    assert req["CheckpointConfig"] == {
        "S3Uri": "s3://ftcloud-artifacts/ftcloud/checkpoints/req-1/",
        "LocalPath": CONTAINER_CHECKPOINT_DIR,
    }
    assert CONTAINER_CHECKPOINT_DIR == "/opt/ml/checkpoints"
    # KMS everywhere (m5 has EBS volumes, so the volume key is allowed).
    assert req["OutputDataConfig"]["KmsKeyId"] == platform_stack.kms_key
    assert req["ResourceConfig"]["VolumeKmsKeyId"] == platform_stack.kms_key
    assert req["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
    # The platform's VPC, encryption between instances, retries, tags.
    assert req["VpcConfig"] == {"SecurityGroupIds": ["sg-111"], "Subnets": ["subnet-aaa", "subnet-bbb"]}
    assert req["EnableNetworkIsolation"] is False
    assert req["EnableInterContainerTrafficEncryption"] is True
    assert req["RetryStrategy"] == {"MaximumRetryAttempts": 2}
    assert {"Key": "team", "Value": "nlp"} in req["Tags"]
    # Hyperparameters: every value a string, the spec's values.
    hps = req["HyperParameters"]
    assert all(isinstance(v, str) for v in hps.values())
    assert hps["technique"] == "qlora" and hps["lora_r"] == "8" and hps["bnb_4bit_use_double_quant"] == "true"
    assert hps["model"] == "meta-llama/Llama-3.2-1B"
    # The train channel points at the content-addressed upload.
    (channel,) = req["InputDataConfig"]
    uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
    assert channel["ChannelName"] == "train" and uri.startswith("s3://ftcloud-datasets/ftcloud/inputs/")
    assert result.location.endswith(":training-job/req-1")
    assert result.request == req


def test_hf_token_travels_only_as_a_secret_arn(platform_stack, train_file):
    backend = make_backend()
    sent = capture_requests(backend)
    backend.launch(spec_for(train_file, name="secret-1"))
    req = sent[0]
    assert req["HyperParameters"]["hf_token_secret_arn"] == platform_stack.outputs[po.HF_TOKEN_SECRET_ARN]
    assert platform_stack.secret_value not in json.dumps(req)
    assert "Environment" not in req


def test_token_value_is_refused(train_file):
    with pytest.raises(SpecError, match="never pass the token itself") as info:
        spec_for(train_file, hf_token_secret_arn="hf_abcdef")
    assert info.value.field == "training.hf_token_secret_arn"


def test_no_spot_and_nvme_instance(platform_stack, train_file):
    backend = make_backend()
    sent = capture_requests(backend)
    backend.launch(spec_for(train_file, name="nvme-1", spot=False, instance_type="ml.g5.2xlarge", instance_count=2))
    req = sent[0]
    assert req["EnableManagedSpotTraining"] is False
    assert "MaxWaitTimeInSeconds" not in req["StoppingCondition"]
    assert "VolumeKmsKeyId" not in req["ResourceConfig"]  # AWS rejects it on NVMe instance types
    assert req["OutputDataConfig"]["KmsKeyId"] == platform_stack.kms_key
    assert req["ResourceConfig"]["InstanceCount"] == 2


@pytest.mark.parametrize(
    "instance_type,nvme",
    [("ml.g5.2xlarge", True), ("ml.p4d.24xlarge", True), ("ml.p5.48xlarge", True), ("ml.g4dn.xlarge", True),
     ("ml.m5d.large", True), ("ml.m5.xlarge", False), ("ml.c5.2xlarge", False), ("ml.p3.2xlarge", False),
     ("ml.trn1.32xlarge", True), ("ml.c5n.xlarge", False)],
)
def test_nvme_families(instance_type, nvme):
    assert has_local_nvme(instance_type) is nvme


def test_max_wait_below_max_runtime_is_refused(train_file):
    with pytest.raises(SpecError) as info:
        spec_for(train_file, max_runtime="2h", max_wait="1h")
    assert info.value.field == "compute.max_wait"


def test_network_isolation_needs_the_model_channel(platform_stack, train_file):
    backend = make_backend()
    with pytest.raises(SpecError, match="model channel") as info:
        backend.launch(spec_for(train_file, network_isolation=True))
    assert info.value.field == "training.model"

    sent = capture_requests(backend)
    result = backend.launch(
        spec_for(train_file, name="iso-1", network_isolation=True, model_data="s3://models/llama-3.2-1b/")
    )
    req = sent[0]
    assert req["EnableNetworkIsolation"] is True
    assert req["HyperParameters"]["model"] == ""  # the container reads the model channel
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in req["InputDataConfig"]}
    assert channels["model"] == "s3://models/llama-3.2-1b/"
    assert req["HyperParameters"].get("hf_token_secret_arn", "") == ""  # unreachable without a network
    assert any("model' channel" in n for n in result.notes)


# ---------------------------------------------------------------------- uploads
def test_uploads_are_content_addressed_and_not_repeated(platform_stack, train_file, tmp_path):
    backend = make_backend()
    first = backend.launch(spec_for(train_file, name="up-1", validation_data=str(train_file)))
    assert len(first.uploaded) == 1 and first.reused == []  # train and validation share one object
    s3 = boto3.client("s3", region_name=REGION)
    key = first.uploaded[0].removeprefix("s3://ftcloud-datasets/")
    head = s3.head_object(Bucket="ftcloud-datasets", Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"

    second = backend.launch(spec_for(train_file, name="up-2"))
    assert second.uploaded == [] and second.reused == first.uploaded

    train_file.write_text(train_file.read_text() + '{"text": "one more row"}\n')
    third = backend.launch(spec_for(train_file, name="up-3"))
    assert len(third.uploaded) == 1 and third.uploaded != first.uploaded

    # A local directory uploads each file under one prefix; the channel is that prefix.
    folder = tmp_path / "dataset"
    (folder / "part").mkdir(parents=True)
    (folder / "a.jsonl").write_text('{"text": "a"}\n')
    (folder / "part" / "b.jsonl").write_text('{"text": "b"}\n')
    fourth = backend.launch(spec_for(folder, name="up-4"))
    assert sorted(u.rsplit("/", 2)[-2:][-1] for u in fourth.uploaded) == ["a.jsonl", "b.jsonl"]
    assert fourth.request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"].endswith("/")


def test_failed_create_says_what_was_uploaded(platform_stack, train_file):
    backend = make_backend()
    with Stubber(backend.sm) as stub:
        stub.add_client_error(
            "create_training_job",
            service_error_code="ResourceLimitExceeded",
            service_message="The account-level service limit 'ml.m5.xlarge for spot training job usage' is 0 "
            "Instances, with current utilization of 0 Instances and a request delta of 1 Instances.",
            http_status_code=400,
        )
        with pytest.raises(LaunchError) as info:
            backend.launch(spec_for(train_file, name="quota-1"))
    message = str(info.value)
    assert "'ml.m5.xlarge for spot training job usage'" in message
    assert "request-service-quota-increase" in message and "--no-spot" in message
    assert "Nothing was registered with SageMaker" in message
    assert info.value.created and info.value.created[0] in message
    # Nothing half-registered: no training job exists.
    assert backend.list_jobs() == []


# ---------------------------------------------------------------------- describe / list / wait
def test_status_and_list(platform_stack, train_file):
    backend = make_backend()
    backend.launch(spec_for(train_file, name="list-1"))
    backend.launch(spec_for(train_file, name="list-2"))
    st = backend.status("list-1")
    assert st.name == "list-1" and st.backend == "sagemaker" and st.status == "Completed"
    assert st.spot is True and st.instance_type == "ml.m5.xlarge"
    assert st.artifacts.startswith("s3://ftcloud-artifacts/ftcloud/jobs/")
    assert {j.name for j in backend.list_jobs()} == {"list-1", "list-2"}
    with pytest.raises(JobNotFoundError, match="No SageMaker training job named 'nope'"):
        backend.status("nope")


def test_wait_follows_forced_transitions_to_failure(platform_stack, train_file):
    states = [
        ("InProgress", "Downloading"),
        ("InProgress", "Training"),
        ("Failed", "Failed"),
    ]

    def advance(_seconds):
        status, secondary = states.pop(0)
        job = moto_training_job("wait-1")
        job.training_job_status = status
        job.secondary_status = secondary
        if status == "Failed":
            job.failure_reason = "AlgorithmError: CUDA out of memory at step 12"

    backend = make_backend(sleep=advance)
    backend.launch(spec_for(train_file, name="wait-1"))
    job = moto_training_job("wait-1")
    job.training_job_status, job.secondary_status = "InProgress", "Starting"

    seen = []
    final = backend.wait("wait-1", on_update=lambda st: seen.append((st.status, st.secondary_status)))
    assert seen == [("InProgress", "Starting"), ("InProgress", "Downloading"), ("InProgress", "Training"),
                    ("Failed", "Failed")]
    assert final.status == "Failed"
    assert final.failure_reason == "AlgorithmError: CUDA out of memory at step 12"


def test_spot_savings_from_billable_seconds(platform_stack, train_file):
    backend = make_backend()
    backend.launch(spec_for(train_file, name="spot-1"))
    job = moto_training_job("spot-1")
    job.training_time_in_seconds = 1000
    job.billable_time_in_seconds = 300
    st = backend.status("spot-1")
    assert st.spot_savings_percent == 70.0
    assert st.to_dict()["spot_savings_percent"] == 70.0


# ---------------------------------------------------------------------- logs
def seed_logs(job: str, events: dict[str, list[tuple[int, str]]]) -> None:
    logs = boto3.client("logs", region_name=REGION)
    try:
        logs.create_log_group(logGroupName=LOG_GROUP)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    for stream, items in events.items():
        name = f"{job}/{stream}"
        try:
            logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=name)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        logs.put_log_events(
            logGroupName=LOG_GROUP,
            logStreamName=name,
            logEvents=[{"timestamp": t, "message": m} for t, m in items],
        )


def test_logs_interleave_hosts_and_resume_from_tokens(platform_stack, train_file):
    backend = make_backend()
    backend.launch(spec_for(train_file, name="logs-1"))
    base = int(time.time() * 1000) - 60_000  # CloudWatch drops events older than 14 days
    seed_logs("logs-1", {
        "algo-1-1700000000": [(base + 0, "h1 first"), (base + 20, "h1 second")],
        "algo-2-1700000000": [(base + 10, "h2 first"), (base + 30, "h2 second")],
    })
    seed_logs("logs-10", {"algo-1-1700000000": [(base + 5, "another job with a longer name")]})
    cursor = LogCursor()
    events = backend.read_logs("logs-1", cursor)
    assert [(e.host, e.message) for e in events] == [
        ("algo-1", "h1 first"), ("algo-2", "h2 first"), ("algo-1", "h1 second"), ("algo-2", "h2 second"),
    ]
    assert backend.read_logs("logs-1", cursor) == []  # tokens: nothing repeated
    seed_logs("logs-1", {"algo-2-1700000000": [(base + 40, "h2 third")]})
    assert [e.message for e in backend.read_logs("logs-1", cursor)] == ["h2 third"]
    # A cursor survives a round trip through JSON (a pipeline can persist it).
    restored = LogCursor.from_dict(json.loads(json.dumps(cursor.to_dict())))
    assert backend.read_logs("logs-1", restored) == []
    # Following a finished job prints everything once and returns.
    assert len(list(backend.logs("logs-1", follow=True))) == 5


def test_logs_before_any_log_group_exists(platform_stack, train_file):
    backend = make_backend()
    assert backend.read_logs("nothing-yet", LogCursor()) == []


def test_host_of_stream():
    assert host_of_stream("job", "job/algo-2-1700000000") == "algo-2"
    assert host_of_stream("job", "job/algo-1") == "algo-1"


# ---------------------------------------------------------------------- stop (moto lacks StopTrainingJob)
def describe_response(name: str, status: str, secondary: str) -> dict:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}",
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "img"},
        "ModelArtifacts": {"S3ModelArtifacts": ""},
        "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "CreationTime": datetime(2025, 1, 1, tzinfo=UTC),
        "EnableManagedSpotTraining": True,
    }


def test_stop_calls_stop_training_job(aws_env):
    backend = make_backend()
    with Stubber(backend.sm) as stub:
        stub.add_response("stop_training_job", {}, {"TrainingJobName": "run-1"})
        stub.add_response("describe_training_job", describe_response("run-1", "Stopping", "Stopping"),
                          {"TrainingJobName": "run-1"})
        st = backend.stop("run-1")
        stub.assert_no_pending_responses()
    assert st.status == "Stopping" and st.spot is True


def test_stop_of_a_finished_job_reports_its_state(aws_env):
    backend = make_backend()
    with Stubber(backend.sm) as stub:
        stub.add_client_error("stop_training_job", "ValidationException",
                              "The request was rejected because the training job is in status Completed.")
        stub.add_response("describe_training_job", describe_response("run-2", "Completed", "Completed"))
        assert backend.stop("run-2").status == "Completed"


def test_stop_unknown_job(aws_env):
    backend = make_backend()
    with Stubber(backend.sm) as stub:
        stub.add_client_error("stop_training_job", "ValidationException", "Requested resource not found.")
        with pytest.raises(JobNotFoundError):
            backend.stop("ghost")


def test_access_denied_names_action_and_role(platform_stack, train_file):
    backend = make_backend()
    with Stubber(backend.sm) as stub:
        stub.add_client_error(
            "create_training_job",
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/DataScientist/alice is not authorized to perform: "
            "iam:PassRole on resource: arn:aws:iam::123456789012:role/ftcloud-execution",
        )
        with pytest.raises(AwsError) as info:
            backend.launch(spec_for(train_file, name="denied-1"))
    text = str(info.value)
    assert "iam:PassRole" in text
    assert "arn:aws:sts::123456789012:assumed-role/DataScientist/alice" in text
    assert "arn:aws:iam::123456789012:role/ftcloud-execution" in text


def test_validation_exception_names_the_field(platform_stack, train_file):
    backend = make_backend()
    with Stubber(backend.sm) as stub:
        stub.add_client_error(
            "create_training_job",
            "ValidationException",
            "1 validation error detected: Value 'ml.x9.huge' at 'resourceConfig.instanceType' failed to satisfy "
            "constraint: Member must satisfy enum value set",
        )
        with pytest.raises(AwsError, match=r"compute\.instance_type"):
            backend.launch(spec_for(train_file, name="invalid-1"))


def test_clients_use_adaptive_retries(aws_env):
    client = AwsContext(region=REGION).client("sagemaker")
    assert client.meta.config.retries["mode"] == "adaptive"


# ---------------------------------------------------------------------- platform
def test_missing_platform_stack_is_explained(moto_aws, train_file):
    from ftcloud.errors import PlatformError

    backend = make_backend()
    with pytest.raises(PlatformError, match="Platform stack 'FtcloudPlatform' was not found") as info:
        backend.launch(spec_for(train_file))
    assert "cdk deploy" in info.value.hint


def test_explicit_platform_values_need_no_stack(moto_aws, train_file):
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="my-bucket")
    backend = make_backend()
    sent = capture_requests(backend)
    backend.launch(spec_for(train_file, name="explicit-1", role="arn:aws:iam::123456789012:role/r",
                            image="img:1", artifact_bucket="my-bucket"))
    req = sent[0]
    assert req["RoleArn"] == "arn:aws:iam::123456789012:role/r"
    assert "VpcConfig" not in req and "KmsKeyId" not in req["OutputDataConfig"]


def test_explicit_hf_token_with_network_isolation_is_refused(platform_stack, train_file):
    # The isolated container could only time out calling Secrets Manager; the model channel needs no token.
    backend = make_backend()
    sent = capture_requests(backend)
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:hf-token-AbCdEf"
    spec = spec_for(train_file, network_isolation=True, model_data="s3://models/llama/", hf_token_secret_arn=arn)
    for dry_run in (True, False):
        with pytest.raises(SpecError, match="model channel") as info:
            backend.launch(spec, dry_run=dry_run)
        assert info.value.field == "training.hf_token_secret_arn" and "drop hf_token_secret_arn" in str(info.value)
    assert sent == []
    # Without isolation the same token is sent as given.
    backend.launch(spec_for(train_file, name="tok-1", model_data="s3://models/llama/", hf_token_secret_arn=arn))
    assert sent[0]["HyperParameters"]["hf_token_secret_arn"] == arn


def test_platform_token_is_not_sent_to_an_isolated_job_and_says_so(platform_stack, train_file):
    backend = make_backend()
    sent = capture_requests(backend)
    result = backend.launch(
        spec_for(train_file, name="iso-tok", network_isolation=True, model_data="s3://models/llama/")
    )
    assert platform_stack.outputs[po.HF_TOKEN_SECRET_ARN] not in json.dumps(sent[0])
    assert any("token secret is not passed" in n for n in result.notes)
