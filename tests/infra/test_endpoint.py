"""Elastic endpoint: created only with a model; autoscaling, retained variant properties, capture."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match

from ftcloud.endpoints.alarms import rollback_alarm_names
from tests.infra.support import flatten

SLR = (
    "arn:<AWS::Partition>:iam::<AWS::AccountId>:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)


def test_no_endpoint_without_a_model(template, synth):
    for type_ in ("AWS::SageMaker::Model", "AWS::SageMaker::EndpointConfig", "AWS::SageMaker::Endpoint"):
        template("default").resource_count_is(type_, 0)
    assert "EndpointName" not in synth("default").template["Outputs"]


def test_endpoint_serves_the_model_package_and_keeps_scaled_capacity(synth, template):
    t = template("full")
    t.has_resource_properties(
        "AWS::SageMaker::Model",
        {
            "PrimaryContainer": {
                "ModelPackageName": "arn:aws:sagemaker:us-east-1:123456789012:model-package/ftcloud-models/3"
            },
            "EnableNetworkIsolation": True,
            "VpcConfig": {"Subnets": Match.any_value(), "SecurityGroupIds": Match.any_value()},
        },
    )
    t.has_resource_properties(
        "AWS::SageMaker::Endpoint", {"EndpointName": "ftcloud-endpoint", "RetainAllVariantProperties": True}
    )
    config = synth("full").one("AWS::SageMaker::EndpointConfig")
    (variant,) = config["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["InstanceType"] == "ml.g5.xlarge"
    assert variant["InitialInstanceCount"] == 2  # starts at the autoscaling minimum
    assert "KmsKeyId" not in config  # g5: NVMe instance storage, SageMaker rejects a key


def test_model_data_url_uses_the_platform_image_and_volume_key(synth):
    s = synth("imported")
    model = s.one("AWS::SageMaker::Model")
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://models-bucket/llama/model.tar.gz"
    assert model["PrimaryContainer"]["Image"] == s.template["Outputs"]["TrainingImageUri"]["Value"]
    key = next(iter(s.resources("AWS::KMS::Key")))
    assert s.one("AWS::SageMaker::EndpointConfig")["KmsKeyId"] == {"Fn::GetAtt": [key, "Arn"]}
    # The model is created only once the role can pull the image and read the model data.
    (model_res,) = s.resources("AWS::SageMaker::Model").values()
    assert any(dep.startswith("ExecutionRoleDefaultPolicy") for dep in model_res["DependsOn"])
    assert "VpcConfig" not in synth("endpoint_no_vpc").one("AWS::SageMaker::Model")


@pytest.mark.parametrize(("name", "low", "high"), [("full", 2, 6), ("imported", 1, 3)])
def test_scalable_target_uses_the_service_linked_role(synth, name, low, high):
    target = synth(name).one("AWS::ApplicationAutoScaling::ScalableTarget")
    assert target["MinCapacity"] == low and target["MaxCapacity"] == high
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert target["ServiceNamespace"] == "sagemaker"
    assert flatten(target["RoleARN"]) == SLR
    assert flatten(target["ResourceId"]).endswith("/variant/AllTraffic")


def test_target_tracking_on_invocations_per_instance_with_cooldowns(template):
    template("full").has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                },
                "TargetValue": 8,
                "ScaleInCooldown": 900,
                "ScaleOutCooldown": 300,
            },
        },
    )


def test_data_capture_goes_to_the_artifact_bucket_encrypted(synth):
    s = synth("full")
    capture = s.one("AWS::SageMaker::EndpointConfig")["DataCaptureConfig"]
    artifacts = next(k for k in s.resources("AWS::S3::Bucket") if k.startswith("StorageArtifacts"))
    assert flatten(capture["DestinationS3Uri"]) == f"s3://<{artifacts}>/ftcloud/data-capture/"
    assert capture["InitialSamplingPercentage"] == 50 and capture["EnableCapture"] is True
    assert {o["CaptureMode"] for o in capture["CaptureOptions"]} == {"Input", "Output"}
    assert "KmsKeyId" in capture
    assert "DataCaptureConfig" not in synth("imported").one("AWS::SageMaker::EndpointConfig")


@pytest.mark.parametrize("name", ["full", "imported"])
def test_config_updates_are_blue_green_and_roll_back_on_the_platform_alarms(synth, name):
    s = synth(name)
    endpoint = s.one("AWS::SageMaker::Endpoint")
    deployment = endpoint["DeploymentConfig"]
    alarms = [a["AlarmName"] for a in deployment["AutoRollbackConfiguration"]["Alarms"]]
    assert alarms == rollback_alarm_names(endpoint["EndpointName"])
    # Plain names of alarms this stack creates (not references: the alarms watch the endpoint).
    created = {a["Properties"]["AlarmName"] for a in s.resources("AWS::CloudWatch::Alarm").values()}
    assert set(alarms) <= created
    policy = deployment["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 600}
    assert policy["TerminationWaitInSeconds"] == 600
