"""`ftcloud plan`, `ftcloud models` and the out-of-memory guard of `ftcloud launch` (moto)."""

from __future__ import annotations

import json

import boto3
import pytest

from ftcloud.cli import cli, main
from ftcloud.job import FLAT_KEYS

from .conftest import REGION


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plan_takes_exactly_the_spec_options_of_launch():
    launch = {p.name for p in cli.commands["launch"].params}
    plan = {p.name for p in cli.commands["plan"].params}
    spec_options = {n for n in launch if n in FLAT_KEYS} | {"config", "set_values"}
    assert spec_options <= plan and len(spec_options) > 20
    assert plan - launch == {"dataset_tokens"}
    assert not plan & {"wait", "dry_run", "force", "skip_validation"}


def test_plan_prints_breakdown_recommendation_time_and_cost(capsys):
    code, out, err = run(capsys, "plan", "--technique", "qlora", "--model", "meta-llama/Llama-3.1-8B",
                         "--set", "max_length=2048", "--set", "per_device_train_batch_size=2",
                         "--set", "max_steps=100")
    assert code == 0, err
    for needle in ("Memory per GPU on", "weights", "activations", "optimizer", "total", "fits",
                   "Recommended: ml.g", "Instances that fit", "on demand", "spot", "us-east-1"):
        assert needle in out, needle


def test_plan_json_for_a_job_that_does_not_fit_exits_1(capsys, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("training:\n  technique: full\n  model: meta-llama/Llama-3.1-70B\n  max_steps: 10\n"
                   "compute:\n  instance_type: ml.g5.2xlarge\n")
    code, out, _ = run(capsys, "plan", "-c", str(job), "--json")
    assert code == 1
    plan = json.loads(out)
    assert plan["fits"] is False and plan["chosen"]["instance_type"] == "ml.g5.2xlarge"
    assert plan["chosen"]["memory_per_gpu_gib"] > 1000
    assert any(a["settings"] == {"technique": "qlora"} for a in plan["alternatives"])
    code, out, _ = run(capsys, "plan", "-c", str(job))
    assert code == 1 and "DOES NOT FIT" in out and "run out of memory" in out and "--technique qlora" in out


def test_models_lists_the_catalog_and_reads_local_configs(capsys, tmp_path):
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0
    rows = {m["name"]: m for m in json.loads(out)}
    mixtral = rows["mistralai/Mixtral-8x7B-v0.1"]
    assert mixtral["experts"] == 8 and mixtral["experts_per_token"] == 2
    assert round(mixtral["parameters"] / 1e9, 1) == 46.7 and round(mixtral["active_parameters"] / 1e9, 1) == 12.9
    assert {"meta-llama/Llama-3.1-8B", "Qwen/Qwen2.5-72B", "google/gemma-2-9b"} <= set(rows)
    code, out, _ = run(capsys, "models")
    assert code == 0 and "Mixtral-8x7B" in out and "46.70B" in out and "12.88B" in out
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 512, "tie_word_embeddings": False}))
    code, out, _ = run(capsys, "models", str(tmp_path), "--json")
    (tiny,) = json.loads(out)
    assert (tiny["hidden"], tiny["layers"], tiny["kv_heads"], tiny["name"]) == (64, 2, 2, str(tmp_path))
    assert tiny["parameters"] == 2 * 512 * 64 + 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64) + 64


# ---------------------------------------------------------------------- the launch guard
def _nothing_created() -> None:
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in ("ftcloud-datasets", "ftcloud-artifacts"):
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0, bucket
    assert boto3.client("sagemaker", region_name=REGION).list_training_jobs()["TrainingJobSummaries"] == []


def test_launch_refuses_a_job_that_will_not_fit_before_any_upload(capsys, platform_stack, train_file):
    args = ["launch", "--backend", "sagemaker", "--technique", "full", "--model", "meta-llama/Llama-3.1-70B",
            "--instance-type", "ml.g5.2xlarge", "--data", str(train_file), "--name", "too-big", "--no-wait"]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert "run out of memory" in err and "--technique qlora" in err and "--force" in err
    _nothing_created()

    code, out, err = run(capsys, *args, "--force", "--json")
    assert code == 0, err
    assert "--force: launching although" in err
    described = boto3.client("sagemaker", region_name=REGION).describe_training_job(TrainingJobName="too-big")
    assert described["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge"


def test_launch_without_instance_type_picks_the_recommendation(capsys, platform_stack, train_file):
    import ftcloud

    expected = ftcloud.plan(technique="qlora", model="Qwen/Qwen2.5-0.5B", data=str(train_file)).recommended
    code, _, err = run(capsys, "launch", "--backend", "sagemaker", "--technique", "qlora",
                       "--model", "Qwen/Qwen2.5-0.5B", "--data", str(train_file), "--name", "auto-1", "--no-wait")
    assert code == 0, err
    described = boto3.client("sagemaker", region_name=REGION).describe_training_job(TrainingJobName="auto-1")
    assert described["ResourceConfig"]["InstanceType"] == expected.instance.type
    assert f"Instance type auto: {expected.instance.type}" in err


def test_sdk_launch_raises_plan_error_unless_forced(platform_stack, train_file):
    import ftcloud

    kwargs = dict(backend="sagemaker", technique="full", model="meta-llama/Llama-3.1-70B",
                  instance_type="ml.g5.2xlarge", data=str(train_file), name="sdk-big")
    with pytest.raises(ftcloud.PlanError) as err:
        ftcloud.launch(dry_run=True, **kwargs)
    assert not err.value.plan.fits
    _nothing_created()
    job = ftcloud.launch(dry_run=True, force=True, **kwargs)
    assert job.launch_result.request["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge"


def test_plan_says_a_gpu_cannot_run_the_precision_rather_than_that_it_fits(capsys):
    code, out, _ = run(capsys, "plan", "--technique", "qlora", "--model", "Qwen/Qwen2.5-0.5B", "--instance-type",
                       "ml.g4dn.xlarge", "--set", "precision=bf16", "--set", "max_length=512", "--set", "max_steps=10")
    assert code == 1
    assert "CANNOT RUN (see below)" in out and "fits (" not in out
    assert "ml.g4dn.xlarge (T4) cannot run this job: precision=bf16 needs a GPU with native bf16" in out
