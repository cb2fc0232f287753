"""Training workflow (train .sync -> register pending approval -> notify) and model registry."""

from __future__ import annotations

import json

import pytest

from ftcloud.contract import metric_definitions
from tests.infra.support import as_list, flatten


def definition(s) -> dict:
    """The state machine definition with intrinsics replaced by ``<...>`` placeholders."""
    sm = s.one("AWS::StepFunctions::StateMachine")
    return json.loads(flatten(sm["DefinitionString"]))


def test_model_package_group(template):
    template("default").has_resource_properties(
        "AWS::SageMaker::ModelPackageGroup", {"ModelPackageGroupName": "ftcloud-models"}
    )


def test_logging_all_events_and_tracing_on(synth):
    s = synth("default")
    sm = s.one("AWS::StepFunctions::StateMachine")
    assert sm["TracingConfiguration"] == {"Enabled": True}
    assert sm["LoggingConfiguration"]["Level"] == "ALL"
    assert sm["LoggingConfiguration"]["IncludeExecutionData"] is True
    log_group = s.one("AWS::Logs::LogGroup")
    assert log_group["LogGroupName"] == "/aws/vendedlogs/states/ftcloud-training"
    assert "KmsKeyId" in log_group and log_group["RetentionInDays"] == 365


def test_train_register_notify_flow(synth):
    d = definition(synth("default"))
    states = d["States"]
    assert d["QueryLanguage"] == "JSONata"
    assert d["StartAt"] == "CheckInput"
    assert states["CheckInput"]["Default"] == "InvalidInput"
    assert states["CheckInput"]["Choices"][0]["Next"] == "ApplyDefaults"
    assert states["ApplyDefaults"]["Next"] == "Train"
    train = states["Train"]
    assert train["Resource"] == "arn:<AWS::Partition>:states:::sagemaker:createTrainingJob.sync"
    assert train["Next"] == "Register"
    register = states["Register"]
    assert register["Resource"] == "arn:<AWS::Partition>:states:::aws-sdk:sagemaker:createModelPackage"
    assert register["Arguments"]["ModelApprovalStatus"] == "PendingManualApproval"
    assert register["Arguments"]["ModelPackageGroupName"] == "ftcloud-models"
    assert register["Next"] == "NotifySucceeded"
    assert states["NotifySucceeded"]["Resource"].endswith(":states:::sns:publish")
    for name in ("Train", "Register"):
        assert states[name]["Catch"] == [{"ErrorEquals": ["States.ALL"], "Next": "NotifyFailed"}]
    assert states["NotifyFailed"]["Next"] == "Failed" and states["Failed"]["Type"] == "Fail"


def test_training_job_arguments(synth):
    s = synth("default")
    args = definition(s)["States"]["Train"]["Arguments"]
    assert args["TrainingJobName"] == "{% 'ftcloud-' & $states.input.trainingJobName %}"
    role = next(k for k in s.resources("AWS::IAM::Role") if k.startswith("ExecutionRole"))
    assert args["RoleArn"] == f"<{role}.Arn>"
    assert args["AlgorithmSpecification"]["MetricDefinitions"] == metric_definitions()
    assert args["AlgorithmSpecification"]["TrainingImage"] == flatten(
        s.template["Outputs"]["TrainingImageUri"]["Value"]
    )
    assert args["OutputDataConfig"]["S3OutputPath"].endswith("/ftcloud/jobs/")
    assert "KmsKeyId" in args["OutputDataConfig"]
    assert args["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert (
        "/ftcloud/checkpoints/' & 'ftcloud-' & $states.input.trainingJobName"
        in args["CheckpointConfig"]["S3Uri"]
    )
    assert args["EnableNetworkIsolation"] is True
    assert args["EnableInterContainerTrafficEncryption"] is True
    assert "VpcConfig" not in args
    assert "$each($states.input.channels" in args["InputDataConfig"]
    assert "$string($v)" in args["HyperParameters"]  # SageMaker wants string values


def test_defaults_come_from_context(synth):
    apply = definition(synth("default"))["States"]["ApplyDefaults"]["Output"]
    defaults = json.loads(apply.removeprefix("{% $merge([").split(", $states.input])")[0])
    assert defaults == {
        "hyperParameters": {},
        "instanceCount": 1,
        "instanceType": "ml.g5.2xlarge",
        "maxRuntimeSeconds": 24 * 3600,
        "volumeSizeGb": 200,
    }


def test_training_runs_in_the_vpc_when_configured(synth):
    s = synth("full")
    vpc_config = definition(s)["States"]["Train"]["Arguments"]["VpcConfig"]
    assert len(vpc_config["Subnets"]) == 2 and len(vpc_config["SecurityGroupIds"]) == 1
    assert definition(synth("imported"))["States"]["Train"]["Arguments"]["EnableNetworkIsolation"] is False


def _workflow_grants(s) -> dict[str, set[str]]:
    (policy,) = [
        p for k, p in s.resources("AWS::IAM::Policy").items() if k.startswith("TrainingWorkflowRole")
    ]
    out: dict[str, set[str]] = {}
    for st in policy["Properties"]["PolicyDocument"]["Statement"]:
        for action in as_list(st["Action"]):
            out.setdefault(action, set()).update(flatten(r) for r in as_list(st["Resource"]))
    return out


@pytest.mark.parametrize(
    ("action", "resources"),
    [
        (
            "sagemaker:CreateTrainingJob",
            {"arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:training-job/ftcloud-*"},
        ),
        (
            "sagemaker:StopTrainingJob",
            {"arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:training-job/ftcloud-*"},
        ),
        (
            "events:PutRule",
            {
                "arn:<AWS::Partition>:events:<AWS::Region>:<AWS::AccountId>:rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule"
            },
        ),
        (
            "sagemaker:CreateModelPackage",
            {
                "<RegistryGroupF9A457C4.ModelPackageGroupArn>",
                "arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:model-package/ftcloud-models/*",
            },
        ),
    ],
)
def test_workflow_role_is_scoped(synth, action, resources):
    assert _workflow_grants(synth("default"))[action] == resources


def test_workflow_passes_only_the_execution_role_to_sagemaker(synth):
    s = synth("default")
    (policy,) = [
        p for k, p in s.resources("AWS::IAM::Policy").items() if k.startswith("TrainingWorkflowRole")
    ]
    (pass_role,) = [
        st for st in policy["Properties"]["PolicyDocument"]["Statement"] if st["Action"] == "iam:PassRole"
    ]
    role = next(k for k in s.resources("AWS::IAM::Role") if k.startswith("ExecutionRole"))
    assert pass_role["Resource"] == {"Fn::GetAtt": [role, "Arn"]}
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    grants = _workflow_grants(s)
    topic = next(iter(s.resources("AWS::SNS::Topic")))
    assert grants["sns:Publish"] == {f"<{topic}>"}
