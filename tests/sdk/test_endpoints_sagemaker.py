"""SageMaker endpoints under moto (CreateModel / CreateEndpointConfig / CreateEndpoint, Application
Auto Scaling, CloudWatch alarms, deletes) and botocore's Stubber for what moto lacks (UpdateEndpoint,
failure states of the waiter, the runtime's CustomAttributes)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from ftcloud import platform_outputs as po
from ftcloud.aws import AwsContext
from ftcloud.backends.sagemaker import SageMakerBackend
from ftcloud.config import UserConfig
from ftcloud.endpoints.alarms import rollback_alarm_names
from ftcloud.endpoints.base import DeployError, build_payload, iter_stream_text
from ftcloud.endpoints.sagemaker import (
    SCALABLE_DIMENSION,
    Current,
    DeployOptions,
    ModelSource,
    PlatformValues,
    SageMakerEndpoints,
    plan_deploy,
)
from ftcloud.errors import UsageError
from ftcloud.job import build_job_spec

from .conftest import ACCOUNT, REGION

STAMP = "20260101-120000"
READS = ("Describe", "List", "GetPaginator")


def make_endpoints() -> SageMakerEndpoints:
    backend = SageMakerBackend(AwsContext(region=REGION), user_config=UserConfig(), sleep=lambda s: None)
    return SageMakerEndpoints(backend.aws, jobs=backend, sleep=lambda s: None, clock=lambda: STAMP)


def capture(ep: SageMakerEndpoints) -> list[tuple[str, dict]]:
    """Every request the endpoints backend sends, as (operation, params), in order."""
    sent: list[tuple[str, dict]] = []

    def record(params, model, **_):
        sent.append((model.name, json.loads(json.dumps(params, default=str))))

    for service in ("sagemaker", "application-autoscaling", "cloudwatch", "sagemaker-runtime"):
        ep.aws.client(service).meta.events.register(f"provide-client-params.{ep.aws.client(service).meta.service_model.service_id.hyphenize()}", record)
    return sent


def writes(sent: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    return [(op, req) for op, req in sent if not op.startswith(READS)]


@pytest.fixture()
def trained_job(platform_stack, train_file):
    """A Completed SageMaker training job (moto completes jobs at once)."""
    backend = SageMakerBackend(AwsContext(region=REGION), user_config=UserConfig())
    spec = build_job_spec(overrides={"name": "job-1", "technique": "lora", "model": "meta-llama/Llama-3.2-1B",
                                     "data": str(train_file), "instance_type": "ml.m5.xlarge"})
    backend.launch(spec)
    return "job-1"


def approved_package(status: str = "Approved") -> str:
    sm = boto3.client("sagemaker", region_name=REGION)
    sm.create_model_package_group(ModelPackageGroupName="chat")
    arn = sm.create_model_package(
        ModelPackageGroupName="chat",
        ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [{"Image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/ftcloud-train:1",
                            "ModelDataUrl": "s3://ftcloud-artifacts/ftcloud/jobs/job-1/output/model.tar.gz",
                            "Environment": {"FTCLOUD_MAX_BATCH_SIZE": "8"}}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]
    if status != "PendingManualApproval":
        sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)
    return arn


# ---------------------------------------------------------------------- create (moto)
def test_job_deploy_sends_the_exact_requests_and_the_endpoint_scales(platform_stack, trained_job):
    ep = make_endpoints()
    sent = capture(ep)
    status = ep.deploy("job-1", "chat-ep", instance_type="ml.m5.xlarge", max_capacity=4, target_invocations=20)

    name = f"chat-ep-{STAMP}"
    out = platform_stack.outputs
    tags = [{"Key": "ftcloud:managed-by", "Value": "ftcloud"}, {"Key": "ftcloud:endpoint", "Value": "chat-ep"}]
    ops = [op for op, _ in writes(sent)]
    assert ops == ["CreateModel", "CreateEndpointConfig", "PutMetricAlarm", "PutMetricAlarm", "CreateEndpoint",
                   "RegisterScalableTarget", "PutScalingPolicy"]
    requests = dict(writes(sent))
    env = requests["CreateModel"]["PrimaryContainer"].pop("Environment")
    assert requests["CreateModel"] == {
        "ModelName": name,
        "ExecutionRoleArn": out[po.EXECUTION_ROLE_ARN],
        "PrimaryContainer": {
            "Image": out[po.IMAGE_URI],  # the platform image serves a job's artifact
            "ModelDataUrl": "s3://ftcloud-artifacts/ftcloud/jobs/job-1/output/model.tar.gz",
            "Mode": "SingleModel",
        },
        "EnableNetworkIsolation": False,  # as the job ran
        "VpcConfig": {"Subnets": ["subnet-aaa", "subnet-bbb"], "SecurityGroupIds": ["sg-111"]},
        "Tags": tags,
    }
    # An adapter-only artifact names its base model; the serving knobs are explicit.
    assert env["FTCLOUD_BASE_MODEL"] == "meta-llama/Llama-3.2-1B" and env["FTCLOUD_MAX_BATCH_SIZE"] == "8"
    assert requests["CreateEndpointConfig"] == {
        "EndpointConfigName": name,
        "ProductionVariants": [{
            "VariantName": "AllTraffic", "ModelName": name, "InstanceType": "ml.m5.xlarge",
            "InitialInstanceCount": 1, "InitialVariantWeight": 1.0,
            "ModelDataDownloadTimeoutInSeconds": 1800, "ContainerStartupHealthCheckTimeoutInSeconds": 1800,
        }],
        "KmsKeyId": platform_stack.kms_key,  # m5 has EBS volumes
        "Tags": tags,
    }
    assert requests["CreateEndpoint"] == {"EndpointName": "chat-ep", "EndpointConfigName": name, "Tags": tags}
    assert requests["RegisterScalableTarget"] == {
        "ServiceNamespace": "sagemaker", "ResourceId": "endpoint/chat-ep/variant/AllTraffic",
        "ScalableDimension": SCALABLE_DIMENSION, "MinCapacity": 1, "MaxCapacity": 4,
    }
    assert requests["PutScalingPolicy"] == {
        "PolicyName": "chat-ep-invocations-per-instance", "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/chat-ep/variant/AllTraffic", "ScalableDimension": SCALABLE_DIMENSION,
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": 20.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": 900, "ScaleOutCooldown": 300,
        },
    }
    # What AWS (moto) now holds.
    assert status.status == "InService" and status.url.endswith(":endpoint/chat-ep")
    assert status.min_capacity == 1 and status.max_capacity == 4
    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.describe_endpoint(EndpointName="chat-ep")["EndpointConfigName"] == name
    aas = boto3.client("application-autoscaling", region_name=REGION)
    [target] = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    [policy] = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 20.0
    alarms = boto3.client("cloudwatch", region_name=REGION).describe_alarms()["MetricAlarms"]
    assert sorted(a["AlarmName"] for a in alarms) == sorted(rollback_alarm_names("chat-ep"))
    latency = next(a for a in alarms if a["AlarmName"] == "chat-ep-latency-p99")
    assert latency["Threshold"] == 2_000_000 and latency["ExtendedStatistic"] == "p99"


def test_nvme_instances_get_no_kms_key(platform_stack, trained_job):
    ep = make_endpoints()
    sent = capture(ep)
    status = ep.deploy("job-1", "gpu-ep", instance_type="ml.g4dn.xlarge")
    config = dict(writes(sent))["CreateEndpointConfig"]
    assert "KmsKeyId" not in config  # AWS rejects a KmsKeyId on instance types with local NVMe storage
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.g4dn.xlarge"
    assert any("NVMe" in note for note in status.notes)


def test_dry_run_prints_the_requests_and_creates_nothing(platform_stack, trained_job, capsys):
    from ftcloud.cli import main

    assert main(["deploy", "job-1", "--name", "dry-ep", "--backend", "sagemaker", "--dry-run",
                 "--instance-type", "ml.g4dn.xlarge", "--env", "FTCLOUD_LOAD_IN=4bit"]) == 0
    requests = json.loads(capsys.readouterr().out)
    assert [r["operation"] for r in requests] == ["CreateModel", "CreateEndpointConfig", "PutMetricAlarm",
                                                  "PutMetricAlarm", "CreateEndpoint", "RegisterScalableTarget",
                                                  "PutScalingPolicy"]
    assert requests[0]["request"]["PrimaryContainer"]["Environment"]["FTCLOUD_LOAD_IN"] == "4bit"
    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.list_models()["Models"] == [] and sm.list_endpoints()["Endpoints"] == []
    assert boto3.client("cloudwatch", region_name=REGION).describe_alarms()["MetricAlarms"] == []


# ---------------------------------------------------------------------- serverless
@pytest.mark.parametrize(
    "options,message",
    [
        ({"serverless_memory": 1000, "serverless_concurrency": 5}, "1024-6144 MB in 1024 MB steps"),
        ({"serverless_memory": 7168, "serverless_concurrency": 5}, "1024-6144 MB"),
        ({"serverless_memory": 2048, "serverless_concurrency": 0}, "must be 1-200"),
        ({"serverless_memory": 2048, "serverless_concurrency": 201}, "must be 1-200"),
        ({"serverless_memory": 2048}, "--serverless-concurrency is missing"),
        ({"serverless_memory": 2048, "serverless_concurrency": 5, "instance_type": "ml.g4dn.xlarge"}, "no GPU"),
        ({"serverless_memory": 2048, "serverless_concurrency": 5, "max_capacity": 3}, "serverless scales itself"),
        ({"serverless_memory": 2048, "serverless_concurrency": 5, "data_capture_percent": 20}, "cannot capture"),
        ({"serverless_memory": 2048, "serverless_concurrency": 5, "network_isolation": True}, "network-isolation"),
    ],
)
def test_serverless_limits_are_checked_before_any_aws_call(aws_env, options, message):
    ep = make_endpoints()
    with pytest.raises(UsageError, match=message):
        ep.deploy("job-1", "sl-ep", **options)
    assert ep.aws._clients == {}  # not one client was built, so not one request went out


def test_serverless_deploy_outside_the_vpc(platform_stack, trained_job):
    ep = make_endpoints()
    sent = capture(ep)
    with pytest.raises(UsageError, match="cannot run in a VPC"):
        ep.deploy("job-1", "sl-ep", serverless_memory=4096, serverless_concurrency=10)
    assert writes(sent) == []  # refused after reading the platform, before creating anything

    status = ep.deploy("job-1", "sl-ep", serverless_memory=4096, serverless_concurrency=10, vpc=False)
    requests = dict(writes(sent))
    assert [op for op, _ in writes(sent)] == ["CreateModel", "CreateEndpointConfig", "PutMetricAlarm",
                                              "PutMetricAlarm", "CreateEndpoint"]  # no autoscaling
    assert "VpcConfig" not in requests["CreateModel"] and requests["CreateModel"]["EnableNetworkIsolation"] is False
    config = requests["CreateEndpointConfig"]
    assert config["ProductionVariants"] == [{"VariantName": "AllTraffic", "ModelName": f"sl-ep-{STAMP}",
                                              "ServerlessConfig": {"MemorySizeInMB": 4096, "MaxConcurrency": 10}}]
    assert "KmsKeyId" not in config and "DataCaptureConfig" not in config
    assert status.serverless == {"MemorySizeInMB": 4096, "MaxConcurrency": 10}


# ---------------------------------------------------------------------- registry versions
def test_only_approved_packages_deploy(platform_stack):
    arn = approved_package("PendingManualApproval")
    ep = make_endpoints()
    sent = capture(ep)
    with pytest.raises(UsageError, match="PendingManualApproval, not Approved"):
        ep.deploy("chat:1", "pkg-ep")
    with pytest.raises(UsageError, match="not Approved"):
        ep.deploy(arn, "pkg-ep")
    assert writes(sent) == []

    boto3.client("sagemaker", region_name=REGION).update_model_package(ModelPackageArn=arn,
                                                                       ModelApprovalStatus="Approved")
    status = ep.deploy("chat:1", "pkg-ep", instance_type="ml.m5.large")
    model = dict(writes(sent))["CreateModel"]
    assert model["PrimaryContainer"] == {"ModelPackageName": arn}
    assert model["EnableNetworkIsolation"] is True  # the platform's default for packages
    assert status.status == "InService" and status.model == arn


def test_an_image_override_serves_the_package_artifact_with_lmi(platform_stack):
    arn = approved_package()
    ep = make_endpoints()
    sent = capture(ep)
    lmi = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128"
    ep.deploy(arn, "lmi-ep", instance_type="ml.g4dn.xlarge", image=lmi, env={"OPTION_ENABLE_LORA": "true"},
              dry_run=True)
    ep.deploy(arn, "lmi-ep", instance_type="ml.g4dn.xlarge", image=lmi, env={"OPTION_ENABLE_LORA": "true"})
    model = dict(writes(sent))["CreateModel"]
    assert model["PrimaryContainer"] == {
        "Image": lmi, "ModelDataUrl": "s3://ftcloud-artifacts/ftcloud/jobs/job-1/output/model.tar.gz",
        "Mode": "SingleModel", "Environment": {"FTCLOUD_MAX_BATCH_SIZE": "8", "OPTION_ENABLE_LORA": "true"},
    }


# ---------------------------------------------------------------------- update (Stubber)
def _endpoint(status: str, config: str, reason: str | None = None) -> dict:
    d = {"EndpointName": "chat-ep", "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/chat-ep",
         "EndpointConfigName": config, "EndpointStatus": status, "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
         "LastModifiedTime": datetime(2026, 1, 1, tzinfo=UTC),
         "ProductionVariants": [{"VariantName": "AllTraffic", "CurrentInstanceCount": 2}]}
    if reason:
        d["FailureReason"] = reason
    return d


def _config(name: str, instance_type: str, model: str) -> dict:
    return {"EndpointConfigName": name, "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{name}",
            "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model, "InstanceType": instance_type,
                                    "InitialInstanceCount": 1}]}


def test_update_changing_the_instance_type_is_blue_green_and_reregisters_scaling(platform_stack, trained_job):
    ep = make_endpoints()
    sm, aas, cw = ep.sm, ep.scaling, ep.cloudwatch
    old, new = "chat-ep-20250101-000000", f"chat-ep-{STAMP}"
    resource = "endpoint/chat-ep/variant/AllTraffic"
    alarms = rollback_alarm_names("chat-ep")
    job = boto3.client("sagemaker", region_name=REGION).describe_training_job(TrainingJobName="job-1")
    with Stubber(sm) as s, Stubber(aas) as a, Stubber(cw) as c:
        s.add_response("describe_training_job", job, {"TrainingJobName": "job-1"})
        s.add_response("describe_endpoint", _endpoint("InService", old), {"EndpointName": "chat-ep"})
        s.add_response("describe_endpoint_config", _config(old, "ml.m5.xlarge", old), {"EndpointConfigName": old})
        a.add_response("describe_scalable_targets", {"ScalableTargets": [{
            "ServiceNamespace": "sagemaker", "ResourceId": resource, "ScalableDimension": SCALABLE_DIMENSION,
            "MinCapacity": 1, "MaxCapacity": 4, "RoleARN": f"arn:aws:iam::{ACCOUNT}:role/autoscaling",
            "CreationTime": datetime(2026, 1, 1, tzinfo=UTC)}]},
            {"ServiceNamespace": "sagemaker", "ResourceIds": [resource], "ScalableDimension": SCALABLE_DIMENSION})
        c.add_response("describe_alarms", {"MetricAlarms": [{"AlarmName": n} for n in alarms]},
                       {"AlarmNames": alarms})
        s.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{new}"}, ANY_MODEL(new))
        s.add_response("create_endpoint_config", {"EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{new}"}, ANY_CONFIG(new))
        a.add_response("deregister_scalable_target", {},
                       {"ServiceNamespace": "sagemaker", "ResourceId": resource, "ScalableDimension": SCALABLE_DIMENSION})
        s.add_response("update_endpoint", {"EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/chat-ep"}, {
            "EndpointName": "chat-ep",
            "EndpointConfigName": new,
            "DeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 600,
                                                    "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}},
                    "TerminationWaitInSeconds": 600,
                },
                "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "chat-ep-latency-p99"},
                                                         {"AlarmName": "chat-ep-5xx-rate"}]},
            },
        })
        for state in ("Updating", "InService"):
            s.add_response("describe_endpoint", _endpoint(state, new), {"EndpointName": "chat-ep"})
            s.add_response("describe_endpoint_config", _config(new, "ml.g4dn.xlarge", new), {"EndpointConfigName": new})
        a.add_response("register_scalable_target", {}, {
            "ServiceNamespace": "sagemaker", "ResourceId": resource, "ScalableDimension": SCALABLE_DIMENSION,
            "MinCapacity": 1, "MaxCapacity": 3})
        a.add_response("put_scaling_policy", {"PolicyARN": f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:scalingPolicy:x"}, ANY_POLICY())
        s.add_response("delete_endpoint_config", {}, {"EndpointConfigName": old})  # the replaced ones
        s.add_response("delete_model", {}, {"ModelName": old})
        status = ep.deploy("job-1", "chat-ep", instance_type="ml.g4dn.xlarge", max_capacity=3)
        for stub in (s, a, c):
            stub.assert_no_pending_responses()
    assert status.status == "InService" and status.config_name == new


def ANY_MODEL(name):  # noqa: N802 - reads like botocore's ANY
    return {"ModelName": name, "ExecutionRoleArn": ANY, "PrimaryContainer": ANY, "EnableNetworkIsolation": ANY,
            "VpcConfig": ANY, "Tags": ANY}


def ANY_CONFIG(name):  # noqa: N802
    return {"EndpointConfigName": name, "ProductionVariants": ANY, "Tags": ANY}


def ANY_POLICY():  # noqa: N802
    return {"PolicyName": "chat-ep-invocations-per-instance", "ServiceNamespace": "sagemaker", "ResourceId": ANY,
            "ScalableDimension": SCALABLE_DIMENSION, "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": ANY}


def test_an_update_that_changes_the_instance_type_cannot_skip_waiting(platform_stack, trained_job):
    ep = make_endpoints()
    ep.deploy("job-1", "chat-ep", instance_type="ml.m5.xlarge")
    sent = capture(ep)
    with pytest.raises(UsageError, match="--no-wait cannot be used"):
        ep.deploy("job-1", "chat-ep", instance_type="ml.g4dn.xlarge", wait=False)
    assert writes(sent) == []


def _plan(strategy: str, current: Current, **options):
    source = ModelSource("job-1", image="img", model_data_url="s3://b/model.tar.gz")
    platform = PlatformValues(role="arn:role", kms_key="arn:key")
    return plan_deploy("ep", source, platform, DeployOptions(strategy=strategy, **options), current, STAMP)


@pytest.mark.parametrize(
    "strategy,routing",
    [
        ("canary", {"Type": "CANARY", "WaitIntervalInSeconds": 300, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20}}),
        ("linear", {"Type": "LINEAR", "WaitIntervalInSeconds": 300,
                    "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25}}),
        ("all-at-once", {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 300}),
    ],
)
def test_update_strategies_and_kept_instance_count(strategy, routing):
    current = Current(status="InService", config_name="ep-old", instance_type="ml.m5.xlarge",
                      scaling_registered=True, existing_alarms=["ep-latency-p99", "ep-5xx-rate"])
    plan = _plan(strategy, current, instance_type="ml.m5.xlarge", canary_percent=20, bake_seconds=300,
                 rollback_alarms=["team-p99", "team-errors"])
    assert plan.action == "update" and plan.deregister is None and plan.alarms == []
    assert plan.endpoint_request == {
        "EndpointName": "ep", "EndpointConfigName": f"ep-{STAMP}",
        "DeploymentConfig": {
            "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing, "TerminationWaitInSeconds": 300},
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "team-p99"}, {"AlarmName": "team-errors"}]},
        },
        # Same instance type: the instance count autoscaling chose survives the update.
        "RetainAllVariantProperties": True,
        "ExcludeRetainedVariantProperties": [{"VariantPropertyType": "DataCaptureConfig"}],
    }


def test_an_instance_endpoint_cannot_become_serverless():
    current = Current(status="InService", config_name="ep-old", instance_type="ml.m5.xlarge")
    with pytest.raises(UsageError, match="cannot turn it into a serverless endpoint"):
        _plan("canary", current, serverless_memory=2048, serverless_concurrency=2)
    with pytest.raises(UsageError, match="SageMaker updates only InService endpoints"):
        _plan("canary", Current(status="Updating", config_name="x", instance_type="ml.m5.xlarge"))


# ---------------------------------------------------------------------- waiting (Stubber)
@pytest.mark.parametrize("state", ["Failed", "RollingBack", "UpdateRollbackFailed"])
def test_wait_fails_on_failure_states_with_the_reason(aws_env, state):
    ep = make_endpoints()
    with Stubber(ep.sm) as s:
        s.add_response("describe_endpoint", _endpoint("Updating", "cfg"), {"EndpointName": "chat-ep"})
        s.add_response("describe_endpoint_config", _config("cfg", "ml.m5.xlarge", "m"), {"EndpointConfigName": "cfg"})
        s.add_response("describe_endpoint", _endpoint(state, "cfg", reason="Alarm chat-ep-5xx-rate fired"),
                       {"EndpointName": "chat-ep"})
        s.add_response("describe_endpoint_config", _config("cfg", "ml.m5.xlarge", "m"), {"EndpointConfigName": "cfg"})
        seen: list[str] = []
        with pytest.raises(DeployError) as err:
            ep.wait("chat-ep", progress=seen.append)
    assert f"endpoint chat-ep is {state}: Alarm chat-ep-5xx-rate fired" in err.value.message
    assert [line.split(":")[1].split()[0] for line in seen] == ["Updating", state]


# ---------------------------------------------------------------------- undeploy (moto)
def test_undeploy_deletes_endpoint_config_model_scaling_and_own_alarms_only(platform_stack, trained_job):
    cw = boto3.client("cloudwatch", region_name=REGION)
    # The platform's own alarm for this endpoint exists already (no ftcloud tag): reused, never deleted.
    cw.put_metric_alarm(AlarmName="chat-ep-latency-p99", Namespace="AWS/SageMaker", MetricName="ModelLatency",
                        ExtendedStatistic="p99", Period=60, EvaluationPeriods=5, Threshold=2e6,
                        ComparisonOperator="GreaterThanOrEqualToThreshold")
    arn = approved_package()
    ep = make_endpoints()
    sent = capture(ep)
    ep.deploy(arn, "chat-ep", instance_type="ml.m5.large")
    assert [r["AlarmName"] for op, r in writes(sent) if op == "PutMetricAlarm"] == ["chat-ep-5xx-rate"]
    ep.undeploy("chat-ep")

    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []
    aas = boto3.client("application-autoscaling", region_name=REGION)
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert [a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]] == ["chat-ep-latency-p99"]
    # The registry entry and the training job stay.
    assert sm.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Approved"
    assert sm.describe_training_job(TrainingJobName="job-1")["TrainingJobStatus"] == "Completed"


# ---------------------------------------------------------------------- invoke
def test_invoke_sends_the_adapter_as_custom_attributes(aws_env):
    ep = make_endpoints()
    runtime = ep.aws.client("sagemaker-runtime")
    payload = build_payload("hello", parameters={"max_new_tokens": 8})
    answer = json.dumps([{"generated_text": "bonjour"}]).encode()
    with Stubber(runtime) as s:
        s.add_response(
            "invoke_endpoint",
            {"Body": StreamingBody(io.BytesIO(answer), len(answer)), "ContentType": "application/json"},
            {"EndpointName": "chat-ep", "Body": json.dumps(payload).encode(), "ContentType": "application/json",
             "Accept": "application/json", "CustomAttributes": "adapter=fr"},
        )
        assert ep.invoke("chat-ep", payload, adapter="fr") == [{"generated_text": "bonjour"}]


def test_stream_text_survives_any_chunk_boundary():
    events = (b'data: {"token": {"text": "Hel"}}\n\n'
              b'data: {"token": {"text": "lo", "special": false}}\n\n'
              b'data: {"choices": [{"delta": {"content": " world"}}]}\n\n'
              b"data: [DONE]\n\n"
              b'data: {"token": {"text": "after done"}}\n\n')
    for size in (1, 3, 7, len(events)):
        chunks = [events[i:i + size] for i in range(0, len(events), size)]
        assert "".join(iter_stream_text(chunks)) == "Hello world"
