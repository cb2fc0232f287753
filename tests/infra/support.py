"""Configurations the infra tests synthesize, and helpers to read CloudFormation templates."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Context overrides (on top of cdk.json) of every configuration the tests synthesize.
CONFIGS: dict[str, dict[str, Any]] = {
    # cdk.json as shipped: image built from training_image/, no VPC, no endpoint.
    "default": {},
    # Everything on: project ECR repository, new VPC with NAT, endpoint serving a model package on a
    # GPU type with NVMe storage (no volume KMS), data capture, e-mail alarms, Hugging Face secret.
    "full": {
        "imageSource": "ecr",
        "vpcMode": "create",
        "vpcNatGateways": 1,
        "endpointEnabled": True,
        "endpointModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/ftcloud-models/3",
        "endpointInstanceType": "ml.g5.xlarge",
        "endpointMinCapacity": 2,
        "endpointMaxCapacity": 6,
        "endpointTargetInvocations": 8,
        "endpointDataCapture": True,
        "endpointDataCapturePercent": 50,
        "alarmEmail": "ml-platform@example.com",
        "hfTokenSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ftcloud/hf-token-AbCdEf",
    },
    # An existing Deep Learning Container, an imported VPC, a model.tar.gz on an EBS-backed type.
    # Values are strings, as `cdk synth -c key=value` passes them.
    "imported": {
        "imageSource": "uri",
        "imageUri": "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:2.1.0-transformers4.36.0-gpu-py310-cu121-ubuntu20.04",
        "vpcMode": "import",
        "vpcId": "vpc-0123456789abcdef0",
        "vpcSubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
        "vpcRouteTableIds": "rtb-0123456789abcdef0,rtb-0123456789abcdef1",
        "endpointEnabled": "true",
        "endpointModelDataUrl": "s3://models-bucket/llama/model.tar.gz",
        "endpointInstanceType": "ml.m5.xlarge",
        "endpointMinCapacity": "1",
        "endpointMaxCapacity": "3",
        "networkIsolation": "false",
        "retainData": "false",
    },
    # An endpoint without a VPC (model data URL, platform ECR image).
    "endpoint_no_vpc": {
        "imageSource": "ecr",
        "endpointEnabled": True,
        "endpointModelDataUrl": "s3://models-bucket/llama/model.tar.gz",
        "endpointInstanceType": "ml.c5.2xlarge",
    },
}


@dataclass
class Synth:
    """One synthesized configuration."""

    name: str
    app: Any
    stack: Any
    outdir: Path
    template: dict

    @property
    def template_path(self) -> Path:
        return self.outdir / f"{self.stack.stack_name}.template.json"

    def resources(self, type_: str) -> dict[str, dict]:
        return {k: v for k, v in self.template["Resources"].items() if v["Type"] == type_}

    def one(self, type_: str) -> dict:
        found = self.resources(type_)
        assert len(found) == 1, f"{self.name}: expected one {type_}, found {sorted(found)}"
        return next(iter(found.values()))["Properties"]


def flatten(value: Any) -> str:
    """A CloudFormation value (with Fn::Join/Ref/GetAtt) as one string, intrinsics as ``<...>``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(flatten(p) for p in parts)
    if isinstance(value, dict) and "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
        return re.sub(r"\$\{([^}]+)\}", r"<\1>", value["Fn::Sub"])
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return f"<{'.'.join(value['Fn::GetAtt'])}>"
    if isinstance(value, dict) and len(value) == 1:
        return (
            f"<{next(iter(value))}>"  # e.g. <Fn::Select>; no quotes, so a flattened JSON string still parses
        )
    return json.dumps(value, sort_keys=True)


def policy_statements(synth: Synth) -> list[dict]:
    """Every statement of every IAM policy (inline and managed) in the template."""
    out = []
    for res in synth.template["Resources"].values():
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            out.extend(res["Properties"]["PolicyDocument"]["Statement"])
        if res["Type"] == "AWS::IAM::Role":
            for policy in res["Properties"].get("Policies", []):
                out.extend(policy["PolicyDocument"]["Statement"])
    return out


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]
