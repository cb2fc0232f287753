"""Context validation: a bad value stops synthesis with a message naming the key and the fix."""

from __future__ import annotations

import pytest

from infra.config import ConfigError, PlatformConfig, load_cdk_json_context


def config(**overrides) -> PlatformConfig:
    return PlatformConfig.from_context({**load_cdk_json_context(), **overrides})


def error(**overrides) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config(**overrides)
    return info.value


def test_cdk_json_defaults_are_valid_and_match_the_dataclass():
    shipped = config()
    assert shipped == PlatformConfig()  # cdk.json documents the defaults; they must not drift
    assert shipped.image_source == "asset" and not shipped.vpc_enabled and not shipped.endpoint_enabled


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("g5.2xlarge", "Did you mean 'ml.g5.2xlarge'"),
        ("ml.g5.2xlargee", "not a SageMaker instance type"),
        ("ml.g9.2xlarge", "unknown instance family 'g9'"),
        ("ml.p4dd.24xlarge", "Did you mean p4d"),
    ],
)
def test_bad_instance_type_is_rejected_with_a_hint(value, hint):
    err = error(trainingInstanceType=value)
    assert err.key == "trainingInstanceType"
    assert hint in str(err) and "-c trainingInstanceType=" in str(err)


def test_min_capacity_above_max_is_rejected():
    err = error(endpointMinCapacity=3, endpointMaxCapacity=2)
    assert err.key == "endpointMinCapacity"
    assert "greater than endpointMaxCapacity=2" in str(err)


def test_endpoint_enabled_without_a_model_is_rejected():
    err = error(endpointEnabled="true")
    assert err.key == "endpointEnabled"
    assert "endpointModelPackageArn" in str(err) and "endpointModelDataUrl" in str(err)


def test_both_model_sources_are_rejected():
    err = error(
        endpointEnabled=True,
        endpointModelDataUrl="s3://b/model.tar.gz",
        endpointModelPackageArn="arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1",
    )
    assert "not both" in str(err)


def test_a_typo_in_a_key_is_an_error_not_a_silent_default():
    err = error(endpointMincapacity=2)
    assert "did you mean 'endpointMinCapacity'" in str(err)


def test_feature_flags_and_cli_keys_are_ignored():
    assert config(**{"@aws-cdk/core:newStyleStackSynthesis": True, "aws:cdk:enable-path-metadata": True})


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"imageSource": "docker"}, "imageSource"),
        ({"imageSource": "uri"}, "imageUri"),
        ({"imageSource": "uri", "imageUri": "docker.io/library/python:3.11"}, "imageUri"),
        ({"imageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1"}, "imageUri"),
        ({"vpcMode": "import", "vpcId": "vpc-0123456789abcdef0"}, "vpcSubnetIds"),
        ({"vpcMode": "import", "vpcId": "vpc-1", "vpcSubnetIds": "subnet-0123456789abcdef0"}, "vpcId"),
        (
            {
                "vpcMode": "import",
                "vpcId": "vpc-0123456789abcdef0",
                "vpcSubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
                "vpcRouteTableIds": "rtb-0123456789abcdef0",
            },
            "vpcRouteTableIds",
        ),
        ({"vpcId": "vpc-0123456789abcdef0"}, "vpcMode"),
        ({"endpointMaxCapacity": "two"}, "endpointMaxCapacity"),
        ({"retainData": "maybe"}, "retainData"),
        ({"logRetentionDays": 400}, "logRetentionDays"),
        ({"resourcePrefix": "FtCloud"}, "resourcePrefix"),
        ({"alarmEmail": "not-an-address"}, "alarmEmail"),
        ({"hfTokenSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:hf"}, "hfTokenSecretArn"),
        ({"endpointModelDataUrl": "https://bucket/model.tar.gz"}, "endpointModelDataUrl"),
        ({"trainingMaxRuntimeHours": 1000}, "trainingMaxRuntimeHours"),
    ],
)
def test_invalid_values_name_their_key(overrides, key):
    assert error(**overrides).key == key


def test_cli_strings_are_coerced():
    c = config(endpointMinCapacity="2", endpointMaxCapacity="4", networkIsolation="false", vpcMode="none")
    assert (c.endpoint_min_capacity, c.endpoint_max_capacity, c.network_isolation) == (2, 4, False)


def test_volume_kms_is_skipped_only_for_nvme_instance_types():
    assert not config(endpointInstanceType="ml.g5.xlarge").endpoint_kms_supported
    assert not config(endpointInstanceType="ml.p4d.24xlarge").endpoint_kms_supported
    assert not config(endpointInstanceType="ml.m5d.xlarge").endpoint_kms_supported
    assert config(endpointInstanceType="ml.m5.xlarge").endpoint_kms_supported


def test_build_app_raises_the_config_error():
    from infra.app import build_app

    with pytest.raises(ConfigError, match="endpointEnabled"):
        build_app({"endpointEnabled": True}, nag=False, cfn_validation=False)


def test_every_allowed_log_retention_maps_to_a_cloudwatch_value():
    from infra.config import LOG_RETENTION_DAYS
    from infra.training_workflow import LOG_RETENTION

    assert set(LOG_RETENTION) == set(LOG_RETENTION_DAYS)
