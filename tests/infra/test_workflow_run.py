"""One run through the workflow, offline: its JSONata evaluated with the reference JSONata
library (what Step Functions implements), state by state, with simulated SageMaker results."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ftcloud.contract import SERVE_ENV_DEFAULTS
from ftcloud.registry.sagemaker import DEFAULT_INFERENCE_INSTANCE_TYPES, version_from_describe
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
        "FinalMetricDataList": [
            {"MetricName": "train_loss", "Value": 1.5, "Timestamp": "2026-01-01T00:00:00Z"},
            {"MetricName": "eval_loss", "Value": 0.75, "Timestamp": "2026-01-01T00:00:00Z"},
        ],
    }
    (after_train,) = render((states["Train"]["Output"], states_binding(args, result=job)))
    assert after_train["training"]["modelDataUrl"] == job["ModelArtifacts"]["S3ModelArtifacts"]
    assert after_train["training"]["metrics"] == {"train_loss": 1.5, "eval_loss": 0.75}

    (register,) = render((states["Register"]["Arguments"], states_binding(after_train)))
    (container,) = register["InferenceSpecification"]["Containers"]
    assert container == {
        "Image": request["AlgorithmSpecification"]["TrainingImage"],  # serves what it trained
        "ModelDataUrl": job["ModelArtifacts"]["S3ModelArtifacts"],
        # No base model named and none in S3: the server reads adapter_config.json's.
        "Environment": {k: v for k, v in SERVE_ENV_DEFAULTS.items() if v},
    }
    assert "dkr.ecr" in container["Image"]
    assert register["InferenceSpecification"]["SupportedRealtimeInferenceInstanceTypes"] == list(
        DEFAULT_INFERENCE_INSTANCE_TYPES
    )
    # The SDK's metadata keys, so 'ftcloud versions' shows workflow-registered versions the same way.
    assert register["CustomerMetadataProperties"] == {
        "ftcloud:training_job": "ftcloud-llama-sft-7",
        "ftcloud:data": "s3://datasets/sft/train/",
        "ftcloud:technique": "qlora",
        "ftcloud:execution": CONTEXT["Execution"]["Id"],
        "ftcloud:metric:eval_loss": "0.75",
        "ftcloud:metric:train_loss": "1.5",
    }
    assert version_from_describe({
        "ModelPackageGroupName": "ftcloud-models", "ModelPackageVersion": 4,
        "InferenceSpecification": register["InferenceSpecification"],
        "CustomerMetadataProperties": register["CustomerMetadataProperties"],
    }).metrics == {"eval_loss": 0.75, "train_loss": 1.5}
    package = "arn:aws:sagemaker:us-east-1:123456789012:model-package/ftcloud-models/4"
    (after_register,) = render(
        (states["Register"]["Output"], states_binding(after_train, result={"ModelPackageArn": package}))
    )

    (notify,) = render((states["NotifySucceeded"]["Arguments"], states_binding(after_register)))
    message = json.loads(notify["Message"])
    assert message["status"] == "SUCCEEDED" and message["modelPackageArn"] == package
    assert message["approve"].endswith(f"--model-package-arn {package}")


def _registered(states, run_input: dict, job: dict | None = None) -> dict:
    """The CreateModelPackage arguments the Register state renders after a Train state that returned ``job``."""
    job = job or {
        "TrainingJobName": "ftcloud-r",
        "TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/ftcloud-r",
        "ModelArtifacts": {"S3ModelArtifacts": "s3://artifacts/ftcloud/jobs/ftcloud-r/output/model.tar.gz"},
    }
    args = {**_defaults(states), **run_input}
    (after_train,) = render((states["Train"]["Output"], states_binding(args, result=job)))
    (register,) = render((states["Register"]["Arguments"], states_binding(after_train)))
    return register


def test_register_attaches_base_weights_from_s3(states):
    digest = "0123456789abcdef0123456789abcdef"
    register = _registered(states, {
        "trainingJobName": "r",
        "channels": {"train": f"s3://datasets/ftcloud/inputs/{digest}/", "model": "s3://datasets/base/llama/"},
        "hyperParameters": {"technique": "qlora", "model": ""},
    })
    (container,) = register["InferenceSpecification"]["Containers"]
    assert container["AdditionalModelDataSources"] == [{
        "ChannelName": "base",
        "S3DataSource": {"S3DataType": "S3Prefix", "CompressionType": "None", "S3Uri": "s3://datasets/base/llama/"},
    }]
    assert "FTCLOUD_BASE_MODEL" not in container["Environment"]
    props = register["CustomerMetadataProperties"]
    assert props["ftcloud:base_model"] == "s3://datasets/base/llama/"
    assert props["ftcloud:data_content_hash"] == digest  # what the SDK's content-addressed upload names
    assert "ftcloud:metric:eval_loss" not in props  # the job reported no metrics


def test_register_names_a_model_id_base_and_full_weights_need_none(states):
    by_id = _registered(states, {"trainingJobName": "r", "channels": {"train": "s3://d/t/"},
                                 "hyperParameters": {"model": "meta-llama/Llama-3.2-1B"}})  # default technique: adapter
    (container,) = by_id["InferenceSpecification"]["Containers"]
    assert container["Environment"]["FTCLOUD_BASE_MODEL"] == "meta-llama/Llama-3.2-1B"
    assert "AdditionalModelDataSources" not in container
    assert by_id["CustomerMetadataProperties"]["ftcloud:base_model"] == "meta-llama/Llama-3.2-1B"
    assert by_id["CustomerMetadataProperties"]["ftcloud:technique"] == "lora"

    full = _registered(states, {"trainingJobName": "r", "channels": {"train": "s3://d/t/", "model": "s3://d/b/"},
                                "hyperParameters": {"technique": "full", "model": "x/y (v2)"}})
    (container,) = full["InferenceSpecification"]["Containers"]
    assert "AdditionalModelDataSources" not in container and "FTCLOUD_BASE_MODEL" not in container["Environment"]


def test_metadata_values_keep_sagemakers_alphabet_and_length(states):
    long_uri = "s3://d/" + "k" * 300 + "/"
    register = _registered(states, {"trainingJobName": "r", "channels": {"train": long_uri},
                                    "hyperParameters": {"technique": "lora", "model": "org/m (v2),x"}})
    props = register["CustomerMetadataProperties"]
    assert props["ftcloud:data"] == long_uri[:256]
    assert props["ftcloud:base_model"] == "org/m _v2__x"


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
