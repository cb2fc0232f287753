"""One run through the workflow, offline: its JSONata evaluated with the reference JSONata
library (what Step Functions implements), state by state, with simulated SageMaker results."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from infra.config import REPO_ROOT
from tests.infra.test_workflow import definition

EVAL = Path(__file__).with_name("jsonata_eval.js")
CONTEXT = {"Execution": {"Id": "arn:aws:states:us-east-1:123456789012:execution:wf:run-7", "Name": "run-7"}}


def render(*cases: tuple[object, dict]) -> list:
    """Render ``(template, bindings)`` pairs in one node process; an undefined field raises."""
    if not (REPO_ROOT / "node_modules" / "jsonata").is_dir() or not shutil.which("node"):
        pytest.fail("JSONata is not installed: run `make install` (npm install into ./node_modules)")
    payload = json.dumps([{"template": t, "bindings": b} for t, b in cases])
    run = subprocess.run(
        ["node", str(EVAL)], input=payload, capture_output=True, text=True, timeout=60, check=True
    )
    out = []
    for result in json.loads(run.stdout):
        if "error" in result:
            raise AssertionError(result["error"])
        out.append(result["value"])
    return out


def states_binding(input_: dict, **extra) -> dict:
    return {"states": {"input": input_, "context": CONTEXT, **extra}}


@pytest.fixture(scope="module")
def states(synth) -> dict:
    return definition(synth("full"))["States"]


def test_input_check_accepts_a_run_and_rejects_a_partial_one(states):
    condition = states["CheckInput"]["Choices"][0]["Condition"]
    ok, missing_train, missing_name = render(
        (condition, states_binding({"trainingJobName": "a", "channels": {"train": "s3://d/t/"}})),
        (condition, states_binding({"trainingJobName": "a", "channels": {"validation": "s3://d/v/"}})),
        (condition, states_binding({"channels": {"train": "s3://d/t/"}})),
    )
    assert (ok, missing_train, missing_name) == (True, False, False)


def test_a_successful_run(states):
    run_input = {
        "trainingJobName": "llama-sft-7",
        "channels": {"train": "s3://datasets/sft/train/", "validation": "s3://datasets/sft/val/"},
        "hyperParameters": {"technique": "qlora", "max_length": 2048, "merge_adapter": True},
        "instanceCount": 2,
    }
    (args,) = render((states["ApplyDefaults"]["Output"], states_binding(run_input)))
    (assigned,) = render((states["ApplyDefaults"]["Assign"], states_binding(run_input)))
    assert assigned == {"trainingJobName": "llama-sft-7"}
    assert args["instanceType"] == "ml.g5.2xlarge" and args["instanceCount"] == 2  # default, override

    (request,) = render((states["Train"]["Arguments"], states_binding(args)))
    assert request["TrainingJobName"] == "ftcloud-llama-sft-7"
    assert request["HyperParameters"] == {"technique": "qlora", "max_length": "2048", "merge_adapter": "true"}
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train", "validation"]
    assert request["InputDataConfig"][0]["DataSource"]["S3DataSource"] == {
        "S3DataType": "S3Prefix",
        "S3Uri": "s3://datasets/sft/train/",
        "S3DataDistributionType": "FullyReplicated",
    }
    assert request["ResourceConfig"] == {  # g5: NVMe instance store, so no VolumeKmsKeyId
        "InstanceType": "ml.g5.2xlarge",
        "InstanceCount": 2,
        "VolumeSizeInGB": 200,
    }
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert request["CheckpointConfig"]["S3Uri"].endswith("/ftcloud/checkpoints/ftcloud-llama-sft-7/")
    assert request["Tags"] == [{"Key": "ftcloud:execution", "Value": "run-7"}]

    job = {
        "TrainingJobName": "ftcloud-llama-sft-7",
        "TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/ftcloud-llama-sft-7",
        "ModelArtifacts": {
            "S3ModelArtifacts": "s3://artifacts/ftcloud/jobs/ftcloud-llama-sft-7/output/model.tar.gz"
        },
    }
    (after_train,) = render((states["Train"]["Output"], states_binding(args, result=job)))
    assert after_train["training"]["modelDataUrl"] == job["ModelArtifacts"]["S3ModelArtifacts"]

    (register,) = render((states["Register"]["Arguments"], states_binding(after_train)))
    assert (
        register["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
        == job["ModelArtifacts"]["S3ModelArtifacts"]
    )
    assert register["CustomerMetadataProperties"]["trainingJobName"] == "ftcloud-llama-sft-7"
    package = "arn:aws:sagemaker:us-east-1:123456789012:model-package/ftcloud-models/4"
    (after_register,) = render(
        (states["Register"]["Output"], states_binding(after_train, result={"ModelPackageArn": package}))
    )

    (notify,) = render((states["NotifySucceeded"]["Arguments"], states_binding(after_register)))
    message = json.loads(notify["Message"])
    assert message["status"] == "SUCCEEDED" and message["modelPackageArn"] == package
    assert message["approve"].endswith(f"--model-package-arn {package}")


def test_a_single_channel_is_still_a_list(states):
    args = {"trainingJobName": "a", "channels": {"train": "s3://d/t/"}, "hyperParameters": {}}
    (request,) = render((states["Train"]["Arguments"], states_binding({**_defaults(states), **args})))
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train"]
    assert request["HyperParameters"] == {}


def test_a_failure_is_reported_with_the_job_name(states):
    error = {"Error": "SageMaker.AmazonSageMakerException", "Cause": "ResourceLimitExceeded"}
    (notify,) = render(
        (states["NotifyFailed"]["Arguments"], {**states_binding(error), "trainingJobName": "llama-sft-7"})
    )
    message = json.loads(notify["Message"])
    assert message == {
        "status": "FAILED",
        "trainingJobName": "llama-sft-7",
        "execution": CONTEXT["Execution"]["Id"],
        "error": error["Error"],
        "cause": error["Cause"],
    }


def _defaults(states) -> dict:
    (merged,) = render((states["ApplyDefaults"]["Output"], states_binding({})))
    return merged


def test_volume_key_follows_the_sdk_nvme_rule_for_every_known_family(states):
    from ftcloud.sagemaker_facts import has_local_nvme
    from infra.config import KNOWN_INSTANCE_FAMILIES

    template = states["Train"]["Arguments"]["ResourceConfig"]
    types = [f"ml.{family}.2xlarge" for family in sorted(KNOWN_INSTANCE_FAMILIES)] + [
        "ml.m9d.xlarge",
        "ml.m9.xlarge",
    ]
    base = {"instanceCount": 1, "volumeSizeGb": 50}
    configs = render(*[(template, states_binding({**base, "instanceType": t})) for t in types])
    for instance_type, config in zip(types, configs, strict=True):
        assert ("VolumeKmsKeyId" in config) is (not has_local_nvme(instance_type)), instance_type
        assert config["InstanceType"] == instance_type
    assert configs[-1]["VolumeKmsKeyId"].endswith(".Arn>")  # the platform key
