"""Stack outputs: exactly the keys of ftcloud.platform_outputs, which the SDK discovers."""

from __future__ import annotations

import pytest

from ftcloud import platform_outputs as po
from ftcloud.platform import Platform
from tests.infra.support import CONFIGS

ALWAYS = {
    po.EXECUTION_ROLE_ARN,
    po.DATASET_BUCKET,
    po.ARTIFACT_BUCKET,
    po.KMS_KEY_ARN,
    po.IMAGE_URI,
    po.MODEL_PACKAGE_GROUP,
    po.TRAINING_STATE_MACHINE_ARN,
    po.ALARM_TOPIC_ARN,
    po.DASHBOARD_NAME,
}
EXPECTED = {
    "default": ALWAYS,
    "full": ALWAYS | {po.SUBNET_IDS, po.SECURITY_GROUP_IDS, po.HF_TOKEN_SECRET_ARN, po.ENDPOINT_NAME},
    "imported": ALWAYS | {po.SUBNET_IDS, po.SECURITY_GROUP_IDS, po.ENDPOINT_NAME},
    "endpoint_no_vpc": ALWAYS | {po.ENDPOINT_NAME},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_output_keys_are_the_shared_constants(synth, name):
    outputs = synth(name).template["Outputs"]
    assert set(outputs) == EXPECTED[name]
    for key, output in outputs.items():
        assert output["Description"] == po.DESCRIPTIONS[key]
        assert "Export" not in output  # read by DescribeStacks, not imported by other stacks


def test_the_sdk_reads_the_outputs(synth):
    outputs = synth("imported").template["Outputs"]
    platform = Platform(
        stack=po.DEFAULT_STACK_NAME,
        region="us-east-1",
        outputs={k: v["Value"] for k, v in outputs.items() if isinstance(v["Value"], str)},
    )
    assert platform.subnets == ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    assert platform.image == CONFIGS["imported"]["imageUri"]
    assert outputs[po.MODEL_PACKAGE_GROUP]["Value"] == "ftcloud-models"
    assert outputs[po.ENDPOINT_NAME]["Value"] == {"Fn::GetAtt": [_endpoint(synth), "EndpointName"]}
    assert (
        synth("full").template["Outputs"][po.HF_TOKEN_SECRET_ARN]["Value"]
        == CONFIGS["full"]["hfTokenSecretArn"]
    )


def _endpoint(synth) -> str:
    return next(iter(synth("imported").resources("AWS::SageMaker::Endpoint")))


def test_stack_is_named_as_the_sdk_expects(synth):
    assert synth("default").stack.stack_name == po.DEFAULT_STACK_NAME
