"""The SageMaker tuner: the exact CreateHyperParameterTuningJob request under moto (every security and
cost field of a normal launch kept), describe/list; botocore's Stubber for stop and the trial listing,
which moto lacks; registering the best trial."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber

from ftcloud import platform_outputs as po
from ftcloud.aws import AwsContext
from ftcloud.backends.sagemaker import (
    CHECKPOINT_PREFIX,
    CONTAINER_CHECKPOINT_DIR,
    OUTPUT_PREFIX,
    SageMakerBackend,
)
from ftcloud.config import UserConfig
from ftcloud.contract import metric_definitions
from ftcloud.errors import FtcloudError, UsageError
from ftcloud.job import build_job_spec
from ftcloud.tuning.base import TuningNotFoundError
from ftcloud.tuning.sagemaker import SageMakerTuner, tuning_request
from ftcloud.tuning.space import tuning_from_kwargs

from .conftest import REGION, moto_training_job

MODEL_S3 = "s3://ftcloud-datasets/models/llama/"


def make_tuner() -> SageMakerTuner:
    return SageMakerTuner(SageMakerBackend(AwsContext(region=REGION), user_config=UserConfig(), sleep=lambda s: None))


def capture(client, operation: str) -> list[dict]:
    sent: list[dict] = []
    client.meta.events.register(
        f"provide-client-params.sagemaker.{operation}", lambda params, **_: sent.append(json.loads(json.dumps(params)))
    )
    return sent


def job_spec(train_file, **overrides):
    base = {"name": "tune-1", "technique": "qlora", "model": "meta-llama/Llama-3.2-1B", "data": str(train_file),
            "instance_type": "ml.m5.xlarge", "max_runtime": "2h", "tags": ["team=nlp"], "max_steps": 60}
    return build_job_spec(overrides={**base, **overrides})


def settings(**kwargs):
    return tuning_from_kwargs({"params": ["learning_rate=1e-5:1e-3:log", "lora_r=8,16,32",
                                          "per_device_train_batch_size=2:8"], **kwargs})


# ---------------------------------------------------------------------- the request
def test_tuning_keeps_every_security_and_cost_field_of_a_launch(platform_stack, train_file):
    tuner = make_tuner()
    sent = capture(tuner.sm, "CreateHyperParameterTuningJob")
    spec = job_spec(train_file, network_isolation=True, model_data=MODEL_S3, max_retry_attempts=3)
    planned, _, _ = tuner.backend.plan_launch(job_spec(train_file, network_isolation=True, model_data=MODEL_S3,
                                                       max_retry_attempts=3), dry_run=False)
    result = tuner.launch(spec, settings(max_trials=6, max_parallel=2, early_stopping="auto", tune_seed=11,
                                         max_tuning_runtime="5h", target=0.4, warm_start_from=["tune-0"]))

    (req,) = sent
    assert result.request == req
    d = req["TrainingJobDefinition"]
    kms = platform_stack.kms_key
    # The security and cost fields of the launch request, every one (the Python SDK's tuner drops some).
    assert d["EnableNetworkIsolation"] is True
    assert d["EnableInterContainerTrafficEncryption"] is True
    assert d["OutputDataConfig"] == {"S3OutputPath": f"s3://ftcloud-artifacts/{OUTPUT_PREFIX}/", "KmsKeyId": kms}
    assert d["ResourceConfig"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100,
                                   "VolumeKmsKeyId": kms}
    assert d["VpcConfig"] == {"SecurityGroupIds": ["sg-111"], "Subnets": ["subnet-aaa", "subnet-bbb"]}
    assert d["EnableManagedSpotTraining"] is True
    assert d["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 14400}
    assert d["CheckpointConfig"] == {"S3Uri": f"s3://ftcloud-artifacts/{CHECKPOINT_PREFIX}/tune-1/",
                                     "LocalPath": CONTAINER_CHECKPOINT_DIR}
    assert d["RetryStrategy"] == {"MaximumRetryAttempts": 3}
    assert d["RoleArn"] == platform_stack.outputs[po.EXECUTION_ROLE_ARN]
    assert d["AlgorithmSpecification"] == {"TrainingImage": platform_stack.outputs[po.IMAGE_URI],
                                           "TrainingInputMode": "File", "MetricDefinitions": metric_definitions()}
    # Identical to what 'launch' would send, key by key (only the name, hyperparameters and tags move).
    for key in ("InputDataConfig", "OutputDataConfig", "ResourceConfig", "StoppingCondition", "VpcConfig",
                "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption", "EnableManagedSpotTraining",
                "CheckpointConfig", "RetryStrategy", "RoleArn"):
        assert d[key] == planned.request[key], key
    assert req["Tags"] == planned.request["Tags"] and {"Key": "team", "Value": "nlp"} in req["Tags"]
    # The data went up once, content-addressed; the model came through its channel.
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in d["InputDataConfig"]}
    assert channels["model"] == MODEL_S3 and channels["train"].startswith("s3://ftcloud-datasets/ftcloud/inputs/")
    key = channels["train"].removeprefix("s3://ftcloud-datasets/") + "train.jsonl"
    assert boto3.client("s3", region_name=REGION).head_object(Bucket="ftcloud-datasets", Key=key)["ServerSideEncryption"] == "aws:kms"
    # Static = every other hyperparameter as a string; ranged keys only in the ranges.
    static = d["StaticHyperParameters"]
    assert not {"learning_rate", "lora_r", "per_device_train_batch_size"} & set(static)
    assert static["technique"] == "qlora" and static["max_steps"] == "60" and static["model"] == ""
    assert all(isinstance(v, str) for v in static.values())
    config = req["HyperParameterTuningJobConfig"]
    assert config == {
        "Strategy": "Bayesian",
        "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "eval_loss"},
        "ResourceLimits": {"MaxParallelTrainingJobs": 2, "MaxNumberOfTrainingJobs": 6, "MaxRuntimeInSeconds": 18000},
        "ParameterRanges": {
            "IntegerParameterRanges": [{"Name": "per_device_train_batch_size", "MinValue": "2", "MaxValue": "8",
                                        "ScalingType": "Auto"}],
            "ContinuousParameterRanges": [{"Name": "learning_rate", "MinValue": "1e-05", "MaxValue": "0.001",
                                           "ScalingType": "Logarithmic"}],
            "CategoricalParameterRanges": [{"Name": "lora_r", "Values": ["8", "16", "32"]}],
        },
        "TrainingJobEarlyStoppingType": "Auto",
        "RandomSeed": 11,
        "TuningJobCompletionCriteria": {"TargetObjectiveMetricValue": 0.4},
    }
    assert req["WarmStartConfig"] == {"ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "tune-0"}],
                                      "WarmStartType": "IdenticalDataAndAlgorithm"}
    # SageMaker (moto) holds what was sent.
    described = boto3.client("sagemaker", region_name=REGION).describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="tune-1")
    assert described["TrainingJobDefinition"]["EnableNetworkIsolation"] is True
    assert described["TrainingJobDefinition"]["ResourceConfig"]["VolumeKmsKeyId"] == kms
    assert result.location == described["HyperParameterTuningJobArn"]


def test_hyperband_and_grid_requests(platform_stack, train_file):
    tuner = make_tuner()
    sent = capture(tuner.sm, "CreateHyperParameterTuningJob")
    tuner.launch(job_spec(train_file, name="tune-hb"), settings(strategy="hyperband", min_resource=10))
    tuner.launch(job_spec(train_file, name="tune-grid"),
                 tuning_from_kwargs({"params": ["lora_r=8,16", "technique=qlora,dora"], "strategy": "grid",
                                     "max_trials": 4}))
    hyperband, grid = (r["HyperParameterTuningJobConfig"] for r in sent)
    assert hyperband["Strategy"] == "Hyperband" and hyperband["TrainingJobEarlyStoppingType"] == "Off"
    assert hyperband["StrategyConfig"] == {"HyperbandStrategyConfig": {"MinResource": 10, "MaxResource": 60}}
    assert grid["Strategy"] == "Grid"
    assert grid["ResourceLimits"] == {"MaxParallelTrainingJobs": 1}  # SageMaker counts the combinations
    assert grid["ParameterRanges"] == {"CategoricalParameterRanges": [
        {"Name": "lora_r", "Values": ["8", "16"]}, {"Name": "technique", "Values": ["qlora", "dora"]}]}
    assert [t.name for t in tuner.list_tunings()] == ["tune-grid", "tune-hb"]  # newest first


def test_dry_run_creates_and_uploads_nothing(platform_stack, train_file):
    tuner = make_tuner()
    result = tuner.launch(job_spec(train_file, name=None), settings(), dry_run=True)
    assert result.dry_run and result.name.startswith("tune-") and len(result.name) <= 32
    assert result.request["HyperParameterTuningJobName"] == result.name
    assert result.request["TrainingJobDefinition"]["EnableInterContainerTrafficEncryption"] is True
    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"] == []
    assert "Contents" not in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="ftcloud-datasets")


def test_invalid_tuning_is_refused_before_any_call(platform_stack, train_file):
    tuner = make_tuner()
    with pytest.raises(Exception, match="grid search takes categorical parameters only"):
        tuner.launch(job_spec(train_file), settings(strategy="grid"))
    assert "Contents" not in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="ftcloud-datasets")


def test_an_unknown_launch_field_stops_the_tuning_instead_of_being_dropped():
    training = {"TrainingJobName": "x", "HyperParameters": {}, "AlgorithmSpecification": {"TrainingImage": "i",
                "TrainingInputMode": "File", "MetricDefinitions": metric_definitions()}, "RoleArn": "r",
                "DebugHookConfig": {"S3OutputPath": "s3://b/"}}
    with pytest.raises(FtcloudError, match="DebugHookConfig"):
        tuning_request(training, settings(), "t")


# ---------------------------------------------------------------------- status, trials, stop (Stubber)
def _summary(name, status, created, params, value=None):
    out = {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}",
           "CreationTime": created, "TrainingJobStatus": status, "TunedHyperParameters": params}
    if value is not None:
        out["FinalHyperParameterTuningJobObjectiveMetric"] = {"Type": "Minimize", "MetricName": "eval_loss",
                                                              "Value": value}
    return out


def _describe(name, status, best=None):
    out = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:hyper-parameter-tuning-job/{name}",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "eval_loss"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2},
        },
        "HyperParameterTuningJobStatus": status,
        "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
        "TrainingJobStatusCounters": {},
        "ObjectiveStatusCounters": {},
    }
    if best:
        out["BestTrainingJob"] = best
    return out


T0 = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 0, 2, tzinfo=UTC)
T2 = datetime(2026, 1, 1, 0, 3, tzinfo=UTC)


def test_status_pages_through_trials_and_maps_them(aws_env):
    tuner = make_tuner()
    good = _summary("tune-9-002-bbb", "Completed", T1, {"learning_rate": "0.0003", "lora_r": "16"}, 0.41)
    with Stubber(tuner.sm) as stub:
        stub.add_response("describe_hyper_parameter_tuning_job", _describe("tune-9", "InProgress", best=good),
                          {"HyperParameterTuningJobName": "tune-9"})
        stub.add_response(
            "list_training_jobs_for_hyper_parameter_tuning_job",
            {"TrainingJobSummaries": [good, _summary("tune-9-003-ccc", "Stopped", T2, {"learning_rate": "0.01",
                                                                                          "lora_r": "8"}, 2.5)],
             "NextToken": "page-2"},
            {"HyperParameterTuningJobName": "tune-9", "MaxResults": 100},
        )
        stub.add_response(
            "list_training_jobs_for_hyper_parameter_tuning_job",
            {"TrainingJobSummaries": [_summary("tune-9-001-aaa", "Failed", T0, {"learning_rate": "1e-05",
                                                                                 "lora_r": "32"})]},
            {"HyperParameterTuningJobName": "tune-9", "MaxResults": 100, "NextToken": "page-2"},
        )
        status = tuner.status("tune-9")
        stub.assert_no_pending_responses()
    assert [t.name for t in status.trials] == ["tune-9-001-aaa", "tune-9-002-bbb", "tune-9-003-ccc"]
    assert [t.number for t in status.trials] == [0, 1, 2]
    # Stopped while the tuning was not being stopped: the tuner's early stopping did it.
    assert [t.status for t in status.trials] == ["Failed", "Completed", "Pruned"]
    assert status.trials[1].parameters == {"learning_rate": 0.0003, "lora_r": 16}  # typed like the spec
    assert status.trials[1].objective == 0.41 and status.trials[0].objective is None
    assert status.best is status.trials[1]
    assert (status.strategy, status.objective.metric, status.objective.goal) == ("random", "eval_loss", "minimize")
    assert (status.max_trials, status.max_parallel, status.terminal) == (4, 2, False)
    assert status.counts() == {"Failed": 1, "Completed": 1, "Pruned": 1}


def test_stop_and_not_found(aws_env):
    tuner = make_tuner()
    with Stubber(tuner.sm) as stub:
        stub.add_response("stop_hyper_parameter_tuning_job", {}, {"HyperParameterTuningJobName": "tune-9"})
        stub.add_response("describe_hyper_parameter_tuning_job", _describe("tune-9", "Stopping"))
        stub.add_response("list_training_jobs_for_hyper_parameter_tuning_job", {"TrainingJobSummaries": [
            _summary("tune-9-001-aaa", "Stopped", T0, {"lora_r": "8"})]})
        status = tuner.stop("tune-9")
        # Already ended: SageMaker says so; stop reports the status instead of failing.
        stub.add_client_error("stop_hyper_parameter_tuning_job", "ValidationException",
                              "The hyperparameter tuning job tune-8 is in status Completed")
        stub.add_response("describe_hyper_parameter_tuning_job", _describe("tune-8", "Completed"))
        stub.add_response("list_training_jobs_for_hyper_parameter_tuning_job", {"TrainingJobSummaries": []})
        ended = tuner.stop("tune-8")
        stub.add_client_error("stop_hyper_parameter_tuning_job", "ResourceNotFound", "Amazon SageMaker can't find")
        with pytest.raises(TuningNotFoundError, match="No SageMaker tuning job named 'nope'"):
            tuner.stop("nope")
        stub.add_client_error("describe_hyper_parameter_tuning_job", "AccessDeniedException",
                              "User: arn:aws:iam::123456789012:user/ana is not authorized to perform: "
                              "sagemaker:DescribeHyperParameterTuningJob")
        with pytest.raises(FtcloudError, match="Access denied: arn:aws:iam::123456789012:user/ana"):
            tuner.status("tune-9")
    assert status.status == "Stopping" and status.trials[0].status == "Stopped"  # stopped by the user, not pruned
    assert ended.status == "Completed"


# ---------------------------------------------------------------------- register the best trial
def test_register_from_tuning_registers_the_best_trial(platform_stack, train_file, monkeypatch):
    from ftcloud.sdk import Client

    client = Client("sagemaker", region=REGION, user_config=UserConfig())
    backend = client.backend("sagemaker")
    backend.launch(job_spec(train_file, name="tune-5-002-best"))
    job = moto_training_job("tune-5-002-best")
    job.final_metric_data_list = [{"MetricName": "eval_loss", "Value": 0.3, "Timestamp": job.creation_time}]
    tuner = SageMakerTuner(backend)
    monkeypatch.setattr(Client, "tuner", lambda self, name=None: tuner)
    listing = {"TrainingJobSummaries": [_summary("tune-5-002-best", "Completed", T1, {"lora_r": "16"}, 0.3)]}
    describe = _describe("tune-5", "Completed", best=listing["TrainingJobSummaries"][0])
    # moto lacks the trial listing and its tunings have a fake best job: answer those two calls only.
    _answer(tuner.sm, "DescribeHyperParameterTuningJob", describe)
    _answer(tuner.sm, "ListTrainingJobsForHyperParameterTuningJob", listing)

    version = client.register(from_tuning="tune-5")
    assert version.lineage["training_job"] == "tune-5-002-best"
    assert version.metrics["eval_loss"] == 0.3

    describe["BestTrainingJob"]["TrainingJobStatus"] = "Failed"
    listing["TrainingJobSummaries"][0]["TrainingJobStatus"] = "Failed"
    with pytest.raises(UsageError, match="Tuning tune-5 has no completed trial .*1 Failed"):
        client.register(from_tuning="tune-5")
    with pytest.raises(UsageError, match="one of the two"):
        client.register("some-job", from_tuning="tune-5")


def _answer(client, operation: str, response: dict) -> None:
    """Answer one operation locally (moto has no model of it); every other call still goes to moto."""
    from botocore.awsrequest import AWSResponse

    client.meta.events.register(
        f"before-call.sagemaker.{operation}",
        lambda **_: (AWSResponse("https://sagemaker.local", 200, {}, None), response),
    )


def test_sdk_tune_splits_job_keys_from_tuning_keys(platform_stack, train_file):
    import ftcloud

    handle = ftcloud.tune(name="tune-sdk", technique="qlora", model="meta-llama/Llama-3.2-1B", data=str(train_file),
                          instance_type="ml.m5.xlarge", lora_alpha=64, params=["lora_r=8,16"], strategy="random",
                          max_trials=3, tune_seed=1, backend="sagemaker", region=REGION, dry_run=True)
    request = handle.launch_result.request
    assert handle.name == "tune-sdk" and handle.tuner.name == "sagemaker"
    assert request["TrainingJobDefinition"]["StaticHyperParameters"]["lora_alpha"] == "64"  # a job key
    config = request["HyperParameterTuningJobConfig"]
    assert (config["Strategy"], config["RandomSeed"], config["ResourceLimits"]["MaxNumberOfTrainingJobs"]) == (
        "Random", 1, 3)
    assert boto3.client("sagemaker", region_name=REGION).list_hyper_parameter_tuning_jobs()[
        "HyperParameterTuningJobSummaries"] == []
