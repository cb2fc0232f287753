"""`ftcloud resume` on SageMaker: a new job continues from the old job's S3 checkpoints (moto)."""

from __future__ import annotations

import pytest

from ftcloud.backends.sagemaker_resume import MAX_JOB_NAME, RESUMED_FROM_TAG, resume_request, resumed_name
from ftcloud.errors import UsageError

from .conftest import moto_training_job
from .test_sagemaker_backend import capture_requests, make_backend, spec_for


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("job", "job-r2"),
        ("job-r2", "job-r3"),
        ("job-r9", "job-r10"),
        ("a" * 63, "a" * 60 + "-r2"),
        ("a" * 58 + "-" + "b" * 4, "a" * 58 + "-b-r2"),
    ],
)
def test_resumed_name(name, expected):
    assert resumed_name(name) == expected
    assert len(resumed_name(name)) <= MAX_JOB_NAME


def test_resume_creates_a_job_on_the_same_checkpoints(platform_stack, train_file):
    backend = make_backend()
    sent = capture_requests(backend)
    backend.launch(spec_for(train_file, name="long-run", tags=["team=nlp"], lora_r=8))
    moto_training_job("long-run").training_job_status = "Stopped"

    st = backend.resume("long-run")

    assert st.name == "long-run-r2"
    original, resumed = sent
    assert resumed["TrainingJobName"] == "long-run-r2"
    # The point of resuming: the same S3 checkpoint prefix, which SageMaker restores before start.
    assert resumed["CheckpointConfig"] == original["CheckpointConfig"]
    assert resumed["CheckpointConfig"]["S3Uri"].endswith("/long-run/")
    for key in ("HyperParameters", "InputDataConfig", "OutputDataConfig", "ResourceConfig", "VpcConfig",
                "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption", "EnableManagedSpotTraining",
                "RoleArn"):
        assert resumed[key] == original[key], key
    assert resumed["AlgorithmSpecification"]["TrainingImage"] == original["AlgorithmSpecification"]["TrainingImage"]
    tags = {t["Key"]: t["Value"] for t in resumed["Tags"]}
    assert tags["team"] == "nlp" and tags[RESUMED_FROM_TAG] == "long-run"
    assert backend.status("long-run-r2").checkpoints == original["CheckpointConfig"]["S3Uri"]

    # The resumed job can be resumed in turn.
    moto_training_job("long-run-r2").training_job_status = "Failed"
    assert backend.resume("long-run-r2").name == "long-run-r3"


@pytest.mark.parametrize("status", ["InProgress", "Completed", "Stopping"])
def test_resume_refuses_a_job_that_is_not_stopped_or_failed(platform_stack, train_file, status):
    backend = make_backend()
    sent = capture_requests(backend)
    backend.launch(spec_for(train_file, name="busy"))
    moto_training_job("busy").training_job_status = status
    with pytest.raises(UsageError, match=f"'busy' is {status}; only Stopped or Failed"):
        backend.resume("busy")
    assert len(sent) == 1  # nothing created


def test_resume_request_needs_checkpoints():
    describe = {"TrainingJobName": "x", "TrainingJobStatus": "Failed", "RoleArn": "r",
                "AlgorithmSpecification": {"TrainingImage": "i", "TrainingInputMode": "File"}}
    with pytest.raises(ValueError, match="no CheckpointConfig"):
        resume_request(describe, [], "x-r2")


def test_resume_via_cli_names_the_new_job(capsys, platform_stack, train_file):
    from ftcloud.cli import main

    assert main(["launch", "--backend", "sagemaker", "--model", "m/x", "--data", str(train_file),
                 "--name", "cli-run", "--no-wait"]) == 0
    moto_training_job("cli-run").training_job_status = "Stopped"
    capsys.readouterr()
    assert main(["resume", "cli-run", "--backend", "sagemaker", "--no-wait"]) == 0
    out = capsys.readouterr().out
    assert "Resumed cli-run as cli-run-r2" in out
    assert moto_training_job("cli-run-r2").checkpoint_config["S3Uri"].endswith("/cli-run/")
