"""SDK test fixtures: an isolated FTCLOUD_HOME, fake AWS credentials, a moto platform stack."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from ftcloud import platform_outputs as po

REGION = "us-east-1"
ACCOUNT = "123456789012"


@pytest.fixture(autouse=True)
def ftcloud_home(tmp_path, monkeypatch):
    """Every test gets its own user config and local job store."""
    home = tmp_path / "ftcloud-home"
    monkeypatch.setenv("FTCLOUD_HOME", str(home))
    return home


@pytest.fixture()
def aws_env(monkeypatch):
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)


@pytest.fixture()
def moto_aws(aws_env):
    from moto import mock_aws

    with mock_aws():
        yield


@dataclass
class Stack:
    name: str
    outputs: dict[str, str]
    secret_value: str

    @property
    def kms_key(self) -> str:
        return self.outputs[po.KMS_KEY_ARN]


SECRET_VALUE = "hf_SuperSecretTokenValue1234567890"


@pytest.fixture()
def platform_stack(moto_aws) -> Stack:
    """What the infra stack provides, created in moto: buckets, KMS key, secret, stack outputs."""
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    for bucket in ("ftcloud-datasets", "ftcloud-artifacts"):
        s3.create_bucket(Bucket=bucket)
    key_arn = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
    secret_arn = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="hf-token", SecretString=SECRET_VALUE
    )["ARN"]
    outputs = {
        po.EXECUTION_ROLE_ARN: f"arn:aws:iam::{ACCOUNT}:role/ftcloud-execution",
        po.DATASET_BUCKET: "ftcloud-datasets",
        po.ARTIFACT_BUCKET: "ftcloud-artifacts",
        po.KMS_KEY_ARN: key_arn,
        po.IMAGE_URI: f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/ftcloud-train:1",
        po.SUBNET_IDS: "subnet-aaa,subnet-bbb",
        po.SECURITY_GROUP_IDS: "sg-111",
        po.MODEL_PACKAGE_GROUP: "ftcloud-models",
        po.HF_TOKEN_SECRET_ARN: secret_arn,
    }
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {k: {"Value": v} for k, v in outputs.items()},
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName=po.DEFAULT_STACK_NAME, TemplateBody=json.dumps(template)
    )
    return Stack(po.DEFAULT_STACK_NAME, outputs, SECRET_VALUE)


@pytest.fixture()
def train_file(tmp_path):
    path = tmp_path / "inputs" / "train.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def moto_training_job(name: str, region: str = REGION):
    """The moto object behind a training job, to force states moto never reaches on its own."""
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][region].training_jobs[name]
