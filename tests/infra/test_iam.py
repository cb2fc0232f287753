"""Least privilege: no managed FullAccess policy, no wildcard actions, wildcard resources only
where AWS offers no resource-level permission (or for object keys chosen at run time)."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest

from ftcloud.endpoints.alarms import rollback_alarm_names
from tests.infra.support import CONFIGS, as_list, flatten, policy_statements

#: Actions without resource-level permissions: the only ones allowed on Resource "*".
NO_RESOURCE_LEVEL = {
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeVpcs",
    "ec2:DescribeDhcpOptions",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_no_managed_policies_and_no_wildcard_actions(synth, name):
    s = synth(name)
    for role in s.resources("AWS::IAM::Role").values():
        assert "ManagedPolicyArns" not in role["Properties"]
    for st in policy_statements(s):
        assert st["Effect"] == "Allow"
        for action in as_list(st["Action"]):
            assert "*" not in action, f"wildcard action {action}"
        if "*" in as_list(st["Resource"]):
            assert set(as_list(st["Action"])) <= NO_RESOURCE_LEVEL, st
            if "cloudwatch:PutMetricData" in as_list(st["Action"]):
                assert st["Condition"]["StringLike"]["cloudwatch:namespace"]


def _role_statements(s, prefix: str) -> list[dict]:
    (policy,) = [p for k, p in s.resources("AWS::IAM::Policy").items() if k.startswith(prefix)]
    return policy["Properties"]["PolicyDocument"]["Statement"]


def _grants(statements) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for st in statements:
        for action in as_list(st["Action"]):
            out.setdefault(action, set()).update(flatten(r) for r in as_list(st["Resource"]))
    return out


def test_execution_role_is_assumed_by_sagemaker_of_this_account_only(template):
    template("default").has_resource_properties(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": {
                "Statement": [
                    {
                        "Action": "sts:AssumeRole",
                        "Effect": "Allow",
                        "Principal": {"Service": "sagemaker.amazonaws.com"},
                        "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}},
                    }
                ]
            }
        },
    )


def test_execution_role_reads_datasets_and_writes_artifacts_only(synth):
    s = synth("default")
    grants = _grants(_role_statements(s, "ExecutionRole"))
    datasets = next(k for k in s.resources("AWS::S3::Bucket") if k.startswith("StorageDatasets"))
    artifacts = next(k for k in s.resources("AWS::S3::Bucket") if k.startswith("StorageArtifacts"))
    assert grants["s3:GetObject"] == {f"<{datasets}.Arn>/*", f"<{artifacts}.Arn>/*"}
    assert grants["s3:PutObject"] == {f"<{artifacts}.Arn>/*"}
    assert grants["s3:ListBucket"] == {f"<{datasets}.Arn>", f"<{artifacts}.Arn>"}
    key = next(iter(s.resources("AWS::KMS::Key")))
    assert grants["kms:Decrypt"] == {f"<{key}.Arn>"}
    assert grants["kms:CreateGrant"] == {f"<{key}.Arn>"}
    assert "secretsmanager:GetSecretValue" not in grants
    assert "ec2:CreateNetworkInterface" not in grants  # no VPC configured
    assert grants["logs:PutLogEvents"] == {
        "arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/TrainingJobs:*",
        "arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/Endpoints/*:*",
        "arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/ProcessingJobs:*",
    }


def test_execution_role_reads_the_configured_secret_and_attaches_to_the_vpc(synth):
    s = synth("full")
    grants = _grants(_role_statements(s, "ExecutionRole"))
    assert grants["secretsmanager:GetSecretValue"] == {CONFIGS_FULL_SECRET}
    assert grants["ec2:DeleteNetworkInterface"] == {
        "arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:network-interface/*"
    }
    (eni,) = [
        st
        for st in _role_statements(s, "ExecutionRole")
        if "ec2:DeleteNetworkInterface" in as_list(st["Action"])
    ]
    vpc = next(iter(s.resources("AWS::EC2::VPC")))
    assert flatten(eni["Condition"]["ArnEquals"]["ec2:Vpc"]).endswith(f":vpc/<{vpc}>")


def test_execution_role_reads_the_rollback_alarms_of_blue_green_updates(synth):
    # SageMaker reads AutoRollbackConfiguration's alarms with the endpoint's execution role
    # (cloudwatch:DescribeAlarms, which takes alarm ARNs): only alarms named by the convention.
    s = synth("full")
    statements = _role_statements(s, "ExecutionRole")
    alarm_arn = "arn:<AWS::Partition>:cloudwatch:<AWS::Region>:<AWS::AccountId>:alarm:"
    assert _grants(statements)["cloudwatch:DescribeAlarms"] == {
        alarm_arn + "*-latency-p99",
        alarm_arn + "*-5xx-rate",
    }
    (describe,) = [st for st in statements if "cloudwatch:DescribeAlarms" in as_list(st["Action"])]
    assert as_list(describe["Action"]) == ["cloudwatch:DescribeAlarms"]
    patterns = [flatten(r).removeprefix(alarm_arn) for r in as_list(describe["Resource"])]
    platform_alarms = {a["Properties"]["AlarmName"] for a in s.resources("AWS::CloudWatch::Alarm").values()}
    # The platform endpoint's alarms and the ones the SDK's deploy creates for any endpoint.
    for name in [*rollback_alarm_names("ftcloud-endpoint"), *rollback_alarm_names("team-a-llm")]:
        assert any(fnmatchcase(name, p) for p in patterns), name
    assert not fnmatchcase("ftcloud-training-workflow-failures", patterns[0])
    assert not fnmatchcase("ftcloud-training-workflow-failures", patterns[1])
    assert set(rollback_alarm_names("ftcloud-endpoint")) <= platform_alarms


CONFIGS_FULL_SECRET = CONFIGS["full"]["hfTokenSecretArn"]
