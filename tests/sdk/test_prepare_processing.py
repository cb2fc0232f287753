"""`data prepare --backend sagemaker`: the CreateProcessingJob request (moto), uploads, waiting, refusals."""

from __future__ import annotations

import json

import boto3
import pytest

from ftcloud import platform_outputs as po
from ftcloud.dataprep.processing import CONTAINER_INPUT, CONTAINER_OUTPUT, ProcessingSettings, wait_for
from ftcloud.errors import UsageError
from ftcloud.sdk import Client
from ftcloud_train.prepare.options import PrepareOptions

from .conftest import ACCOUNT, REGION


def _capture(client: Client) -> list[dict]:
    sent: list[dict] = []
    sm = client.backend("sagemaker").sm
    sm.meta.events.register("provide-client-params.sagemaker.CreateProcessingJob",
                            lambda params, **_: sent.append(json.loads(json.dumps(params))))
    return sent


@pytest.fixture()
def shard_dir(tmp_path):
    data = tmp_path / "raw"
    data.mkdir()
    for i in range(2):
        rows = [{"text": f"note {i}-{j}: MI ruled out", "label": "neg" if j % 3 else "pos"} for j in range(6)]
        (data / f"part-{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def test_processing_job_request_shards_inputs_and_carries_platform_settings(platform_stack, shard_dir, tmp_path):
    glossary = tmp_path / "cardio.yaml"
    glossary.write_text("abbreviations:\n  LV: left ventricle\n")
    client = Client("sagemaker", region=REGION)
    sent = _capture(client)
    options = PrepareOptions(glossary=["medical", str(glossary)], near_dedup=True, oversample=True, kfold=3)
    result = client.prepare_data([str(shard_dir), "s3://ftcloud-datasets/more/"], options=options, fmt="classification",
                                 settings=ProcessingSettings(instance_count=2, tags={"team": "nlp"}))
    assert result.status == "Completed"
    (request,) = sent
    out = platform_stack.outputs

    data_inputs = [i for i in request["ProcessingInputs"] if i["InputName"].startswith("data-")]
    assert [i["S3Input"]["S3DataDistributionType"] for i in data_inputs] == ["ShardedByS3Key"] * 2
    assert data_inputs[1]["S3Input"]["S3Uri"] == "s3://ftcloud-datasets/more/"
    uploaded = data_inputs[0]["S3Input"]["S3Uri"]
    assert uploaded.startswith("s3://ftcloud-datasets/ftcloud/inputs/")
    s3 = boto3.client("s3", region_name=REGION)
    bucket, _, prefix = uploaded[5:].partition("/")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"])
    assert [k.rsplit("/", 1)[1] for k in keys] == ["part-0.jsonl", "part-1.jsonl"]  # one object per shard
    (asset,) = [i for i in request["ProcessingInputs"] if i["InputName"].startswith("asset-")]
    assert asset["S3Input"]["S3DataDistributionType"] == "FullyReplicated"
    assert asset["S3Input"]["S3Uri"].endswith("/cardio.yaml")

    args = request["AppSpecification"]["ContainerArguments"]
    assert request["AppSpecification"]["ImageUri"] == out[po.IMAGE_URI]
    assert args[:3] == ["prepare", f"{CONTAINER_INPUT}/data-1", f"{CONTAINER_INPUT}/data-2"]
    # The container parses these arguments back into the same options, with the glossary's container path.
    from ftcloud_train.prepare.command import parser
    from ftcloud_train.prepare.options import options_from_namespace

    ns = parser().parse_args(args[1:])
    assert ns.out == CONTAINER_OUTPUT and ns.part == "auto" and ns.fmt == "classification"
    assert options_from_namespace(ns).glossary == ["medical", f"{CONTAINER_INPUT}/asset-1/cardio.yaml"]
    assert options_from_namespace(ns).near_dedup is True and options_from_namespace(ns).kfold == 3

    cluster = request["ProcessingResources"]["ClusterConfig"]
    assert cluster == {"InstanceCount": 2, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30,
                       "VolumeKmsKeyId": platform_stack.kms_key}
    output = request["ProcessingOutputConfig"]
    assert output["KmsKeyId"] == platform_stack.kms_key
    assert output["Outputs"][0]["S3Output"]["S3Uri"] == f"s3://ftcloud-artifacts/ftcloud/prepared/{result.name}/"
    assert request["NetworkConfig"] == {
        "EnableNetworkIsolation": True, "EnableInterContainerTrafficEncryption": True,
        "VpcConfig": {"SecurityGroupIds": ["sg-111"], "Subnets": ["subnet-aaa", "subnet-bbb"]}}
    assert request["Environment"]["HF_HUB_OFFLINE"] == "1"
    assert request["RoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/ftcloud-execution"
    assert {"Key": "team", "Value": "nlp"} in request["Tags"]
    assert result.channels == {"train": f"{result.output_uri}train/", "validation": f"{result.output_uri}validation/"}

    described = boto3.client("sagemaker", region_name=REGION).describe_processing_job(ProcessingJobName=result.name)
    assert described["ProcessingInputs"][0]["S3Input"]["S3DataDistributionType"] == "ShardedByS3Key"


def test_nvme_instances_get_no_volume_key_and_reuploads_are_skipped(platform_stack, shard_dir):
    client = Client("sagemaker", region=REGION)
    sent = _capture(client)
    first = client.prepare_data([str(shard_dir)], options=PrepareOptions(),
                                settings=ProcessingSettings(instance_type="ml.g5.xlarge", network_isolation=False))
    second = client.prepare_data([str(shard_dir)], options=PrepareOptions(), wait=False)
    assert "VolumeKmsKeyId" not in sent[0]["ProcessingResources"]["ClusterConfig"]
    assert "HF_HUB_OFFLINE" not in sent[0]["Environment"]
    assert len(first.uploaded) == 2 and second.uploaded == [] and len(second.reused) == 2


def test_dry_run_creates_nothing_and_names_placeholders(moto_aws, shard_dir):
    client = Client("sagemaker", region=REGION)
    result = client.prepare_data([str(shard_dir)], options=PrepareOptions(), dry_run=True,
                                 settings=ProcessingSettings(instance_count=3))
    assert result.request["RoleArn"].startswith("<ExecutionRoleArn")
    assert any("placeholders" in n for n in result.notes)
    assert any("has 2 input file(s) for 3 instances" in n for n in result.notes)
    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.list_processing_jobs()["ProcessingJobSummaries"] == []
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []


def test_wait_reports_a_failed_job(platform_stack, shard_dir):
    from moto.sagemaker.models import sagemaker_backends

    client = Client("sagemaker", region=REGION)
    result = client.prepare_data([str(shard_dir)], options=PrepareOptions(), wait=False)
    job = sagemaker_backends[ACCOUNT][REGION].processing_jobs[result.name]
    job.processing_job_status = "Failed"
    job.failure_reason = "AlgorithmError: ExitCode 2"
    job.exit_message = "bad.jsonl:2: messages[1].role is 'assitant'"
    wait_for(client.backend("sagemaker"), result, poll=0)
    assert result.status == "Failed"
    assert result.failure_reason == "AlgorithmError: ExitCode 2 | bad.jsonl:2: messages[1].role is 'assitant'"


@pytest.mark.parametrize(
    ("sources", "settings", "message"),
    [
        (["https://example.com/data.jsonl"], ProcessingSettings(), "HTTP and SQL sources work with --backend local"),
        (["sqlite:///x.db"], ProcessingSettings(), "HTTP and SQL sources"),
        (["s3://b/p/"], ProcessingSettings(instance_count=0), "--instance-count 0"),
        (["s3://b/p/"], ProcessingSettings(subnets=["subnet-1"]), "add --security-group"),
    ],
)
def test_refusals_name_the_flag(moto_aws, sources, settings, message):
    with pytest.raises(UsageError, match=message):
        Client("sagemaker", region=REGION).prepare_data(sources, options=PrepareOptions(), settings=settings,
                                                        dry_run=True)


def test_local_backend_runs_the_pipeline(tmp_path, shard_dir):
    result = Client("local").prepare_data([shard_dir], tmp_path / "out", oversample=True, validation_fraction=0.25)
    assert result.cached is False and result.card["format"] == "classification"
    assert (tmp_path / "out" / "data_card.md").is_file()
    dry = Client("local").prepare_data([shard_dir], tmp_path / "out", oversample=True, validation_fraction=0.25,
                                       dry_run=True)
    assert dry.cached is True  # same inputs and options: nothing would be done


# ---------------------------------------------------------------------- the CLI
def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from ftcloud.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_prepares_then_reports_cached(capsys, tmp_path, shard_dir):
    out = tmp_path / "prepared"
    code, stdout, stderr = _cli(capsys, "data", "prepare", str(shard_dir), "--out", str(out), "--glossary", "medical",
                                "--oversample", "--json")
    assert code == 0, stderr
    first = json.loads(stdout)
    assert first["cached"] is False and first["card"]["glossary"]["replaced"] == {"MI": 12}
    assert json.loads((out / "data_card.json").read_text())["content_hash"] == first["card"]["content_hash"]
    code, stdout, _ = _cli(capsys, "data", "prepare", str(shard_dir), "--out", str(out), "--glossary", "medical",
                           "--oversample")
    assert code == 0 and "cached" in stdout and "glossary expansions: MI x12" in stdout


def test_cli_sagemaker_dry_run_prints_the_request(capsys, moto_aws, shard_dir):
    code, stdout, stderr = _cli(capsys, "data", "prepare", str(shard_dir), "--backend", "sagemaker", "--region", REGION,
                                "--instance-count", "2", "--near-dedup", "--dry-run")
    assert code == 0, stderr
    request = json.loads(stdout)
    assert request["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 2
    assert "--near-dedup" in request["AppSpecification"]["ContainerArguments"]
    assert "placeholders" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kfold", "1"], "--kfold 1: use 0 (off) or at least 2 folds"),
        (["--synonyms", "missing.yaml", "--augment-copies", "1"], "--synonyms missing.yaml: no such file"),
        (["--format", "chat"], "missing field 'messages'"),
    ],
)
def test_cli_errors_exit_2_with_the_reason(capsys, tmp_path, shard_dir, args, message):
    code, _, stderr = _cli(capsys, "data", "prepare", str(shard_dir), "--out", str(tmp_path / "o"), *args)
    assert code == 2 and message in stderr
    assert not (tmp_path / "o").exists()
