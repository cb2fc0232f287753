"""The CLI as a user meets it: exit codes, one-line errors, --json, the SageMaker commands under moto."""

from __future__ import annotations

import json

import boto3
import pytest

from ftcloud import platform_outputs as po
from ftcloud.cli import main
from ftcloud.config import UserConfig, config_path

from .conftest import REGION, moto_training_job


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip() and not line.startswith("backend:")]


# ---------------------------------------------------------------------- bad input: one line, exit 2
@pytest.mark.parametrize(
    "args,needle",
    [
        (["launch", "--techniqe", "qlora"], "Did you mean '--technique'"),
        (["launch", "--technique", "qqlora"], "'qqlora' is not one of"),
        (["launch", "--instance-count", "two"], "'two' is not a valid integer"),
        (["launch", "--set", "lora_rr=8"], "Did you mean 'lora_r'"),
        (["launch", "--set", "lora_r"], "--set expects KEY=VALUE"),
        (["launch", "--set", "lora_r=eight"], "'lora_r' must be a whole number"),
        (["launch", "--max-runtime", "soon"], "compute.max_runtime"),
        (["launch", "--config", "missing.yaml"], "job file not found"),
        (["nonsense"], "No such command 'nonsense'"),
        (["status"], "Missing argument 'JOB'"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(capsys, args, needle):
    code, out, err = run(capsys, *args)
    lines = error_lines(err)
    assert code == 2
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert "Traceback" not in err + out


def write(tmp_path, text: str):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text,needle",
    [
        ("training:\n  technique: qlora\n  lora_r: [1, 2]\n", "job.yaml:3: 'lora_r' must be a whole number"),
        ("training:\n  technique: qlora\n  lora_rr: 8\n", "job.yaml:3: unknown setting 'training.lora_rr'. Did you mean 'training.lora_r'"),
        ("training:\n  technique: qlor\n", "job.yaml:2: 'training.technique' must be one of lora, qlora, dora, full"),
        ("compute:\n  instance_type: g5.xlarge\n", "'compute.instance_type' must be a SageMaker type"),
        ("compute:\n  spot: maybe\n", "job.yaml:2: 'compute.spot' must be true or false"),
        ("lora_r: 8\n", "job.yaml:1: 'lora_r' belongs under 'training:'"),
        ("training:\n  technique: lora\n   lora_r: 8\n", "job.yaml:3:"),  # bad indentation
        ("training: [1, 2\n", "invalid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("name: a\nname: b\n", "job.yaml:2: 'name' is set twice (first on line 1)"),
        ("name: bad_name!\n", "'name' 'bad_name!' is not a valid job name"),
        ("backend: kubernetes\n", "job.yaml:1: 'backend' must be one of local, sagemaker"),
    ],
)
def test_bad_yaml_gives_one_line_with_file_and_line(capsys, tmp_path, text, needle):
    path = write(tmp_path, text)
    code, out, err = run(capsys, "launch", "--config", str(path), "--dry-run")
    lines = error_lines(err)
    assert code == 2, err
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert str(path) in lines[0]
    assert "Traceback" not in err + out


# ---------------------------------------------------------------------- init
def test_init_writes_a_valid_commented_starter(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "init")
    assert code == 0 and "Wrote job.yaml" in out
    text = (tmp_path / "job.yaml").read_text()
    assert text.count("#") > 20  # commented for people
    from ftcloud.job import build_job_spec

    spec = build_job_spec(config=tmp_path / "job.yaml")
    assert spec.training.technique == "qlora" and spec.compute.spot is True
    code, _, err = run(capsys, "init")
    assert code == 2 and "--force" in err


# ---------------------------------------------------------------------- help, hyperparameters, completion
def test_hyperparameters_lists_every_training_field(capsys):
    from ftcloud.spec import TrainingSpec

    code, out, _ = run(capsys, "hyperparameters", "--json")
    rows = json.loads(out)
    paths = {r["path"] for r in rows}
    assert code == 0
    assert {f"training.{n}" for n in TrainingSpec.field_names()} <= paths
    assert "compute.instance_type" in paths and "networking.network_isolation" in paths


def test_hyperparameters_read_at_80_columns(capsys):
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ftcloud.cli", "hyperparameters"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "80"}, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if len(line) > 80] == []
    rows = json.loads(run(capsys, "hyperparameters", "--json")[1])
    text = " ".join(" ".join(lines).split())
    for r in rows:  # every key with its --set name, type and whole meaning (wrapped, not cut)
        section, key = r["path"].split(".", 1)
        assert f"{section}:" in lines and f"{key}: {r['type']} = {r['default']!r}" in text
        assert f"(--set {r['set_key']})" in text and " ".join(r["help"].split()) in text


def test_completion_script(capsys):
    code, out, _ = run(capsys, "completion", "bash")
    assert code == 0 and "_FTCLOUD_COMPLETE" in out


# ---------------------------------------------------------------------- dry run
def test_dry_run_prints_the_request_without_calling_aws(capsys, train_file, monkeypatch):
    # No credentials, no moto: any AWS call would fail. Cached platform outputs stand in.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    from ftcloud.aws import AwsContext

    monkeypatch.setattr(AwsContext, "client", lambda self, name: pytest.fail(f"dry run created a {name} client"))
    UserConfig(
        backend="sagemaker",
        stack="Prod",
        region=REGION,
        platform_cache={"stack": "Prod", "region": REGION, "outputs": {
            po.EXECUTION_ROLE_ARN: "arn:aws:iam::1:role/exec", po.IMAGE_URI: "img:7",
            po.ARTIFACT_BUCKET: "art", po.DATASET_BUCKET: "data", po.KMS_KEY_ARN: "arn:aws:kms:r:1:key/k"}},
    ).save()
    code, out, err = run(capsys, "launch", "--technique", "qlora", "--model", "m/x", "--data", str(train_file),
                         "--name", "dry-1", "--instance-type", "ml.p4d.24xlarge", "--dry-run")
    assert code == 0, err
    request = json.loads(out)
    assert "backend: sagemaker" in err and "stack Prod" in err
    assert request["TrainingJobName"] == "dry-1"
    assert request["RoleArn"] == "arn:aws:iam::1:role/exec"
    assert request["AlgorithmSpecification"]["TrainingImage"] == "img:7"
    assert request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"].startswith("s3://data/ftcloud/inputs/")
    assert "VolumeKmsKeyId" not in request["ResourceConfig"]  # p4d has NVMe
    assert request["OutputDataConfig"]["KmsKeyId"] == "arn:aws:kms:r:1:key/k"


def test_dry_run_without_cache_uses_named_placeholders(capsys, train_file):
    code, out, err = run(capsys, "launch", "--backend", "sagemaker", "--model", "m/x", "--data", str(train_file),
                         "--dry-run")
    assert code == 0, err
    request = json.loads(out)
    assert request["RoleArn"] == "<ExecutionRoleArn of stack FtcloudPlatform>"
    assert "ftcloud platform" in err  # tells the user how to fill them in


# ---------------------------------------------------------------------- platform + sagemaker commands (moto)
def test_platform_show_and_use(capsys, platform_stack):
    code, out, err = run(capsys, "platform", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["outputs"][po.EXECUTION_ROLE_ARN] == platform_stack.outputs[po.EXECUTION_ROLE_ARN]
    assert data["default_backend"] == "local"

    code, out, err = run(capsys, "platform", "use", po.DEFAULT_STACK_NAME, "--region", REGION)
    assert code == 0, err
    saved = json.loads(config_path().read_text())
    assert saved["backend"] == "sagemaker" and saved["stack"] == po.DEFAULT_STACK_NAME
    assert saved["platform_cache"]["outputs"][po.IMAGE_URI] == platform_stack.outputs[po.IMAGE_URI]

    code, out, err = run(capsys, "platform")
    assert code == 0 and "TrainingImageUri" in out and "default backend: sagemaker" in out

    code, out, _ = run(capsys, "platform", "use", "local")
    assert code == 0 and json.loads(config_path().read_text())["backend"] == "local"


def test_platform_missing_stack(capsys, moto_aws):
    code, _, err = run(capsys, "platform", "--stack", "Nope")
    assert code == 1
    assert "Platform stack 'Nope' was not found" in err and "fix:" in err


def test_sagemaker_launch_status_jobs_logs_via_cli(capsys, platform_stack, train_file):
    assert run(capsys, "platform", "use", po.DEFAULT_STACK_NAME)[0] == 0
    code, out, err = run(capsys, "launch", "--model", "m/x", "--data", str(train_file), "--name", "cli-1",
                         "--no-wait", "--json")
    assert code == 0, err
    assert "backend: sagemaker" in err
    launched = json.loads(out)
    assert launched["name"] == "cli-1" and launched["uploaded"]

    job = moto_training_job("cli-1")
    job.training_time_in_seconds, job.billable_time_in_seconds = 600, 200
    code, out, err = run(capsys, "status", "cli-1")
    assert code == 0, err
    assert "Completed" in out and "66.7%" in out and "status history" in out

    code, out, _ = run(capsys, "jobs", "--json")
    assert [j["name"] for j in json.loads(out)] == ["cli-1"]

    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    import time

    now = int(time.time() * 1000)
    for host, offset in (("algo-1", 0), ("algo-2", 5)):
        stream = f"cli-1/{host}-1700000000"
        logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream)
        logs.put_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream,
                            logEvents=[{"timestamp": now + offset, "message": f"hello from {host}"}])
    code, out, _ = run(capsys, "logs", "cli-1")
    assert code == 0
    assert out.index("[algo-1] hello from algo-1") < out.index("[algo-2] hello from algo-2")

    code, out, _ = run(capsys, "logs", "cli-1", "--json")
    assert [json.loads(line)["host"] for line in out.splitlines()] == ["algo-1", "algo-2"]

    # --cursor: each run prints only what arrived since the previous one.
    cursor = config_path().parent / "cursor.json"
    assert "hello from algo-2" in run(capsys, "logs", "cli-1", "--cursor", str(cursor))[1]
    assert "hello" not in run(capsys, "logs", "cli-1", "--cursor", str(cursor))[1]
    logs.put_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName="cli-1/algo-1-1700000000",
                        logEvents=[{"timestamp": now + 50, "message": "later line"}])
    out = run(capsys, "logs", "cli-1", "--cursor", str(cursor))[1]
    assert out.strip() == "[algo-1] later line"


def test_status_of_unknown_job(capsys, platform_stack):
    code, _, err = run(capsys, "status", "ghost", "--backend", "sagemaker")
    assert code == 1 and "No SageMaker training job named 'ghost'" in err


def test_launch_wait_reports_failure_reason_and_exit_1(capsys, platform_stack, train_file, monkeypatch):
    def fail_job(self, seconds):
        job = moto_training_job("wait-cli")
        job.training_job_status, job.secondary_status = "Failed", "Failed"
        job.failure_reason = "ClientError: no training rows left after filtering"

    from ftcloud.backends import sagemaker

    original = sagemaker.SageMakerBackend.launch

    def launch_then_start(self, spec, dry_run=False):
        result = original(self, spec, dry_run=dry_run)
        job = moto_training_job(result.name)
        job.training_job_status, job.secondary_status = "InProgress", "Training"
        self._sleep = lambda s: fail_job(self, s)
        return result

    monkeypatch.setattr(sagemaker.SageMakerBackend, "launch", launch_then_start)
    code, out, err = run(capsys, "launch", "--backend", "sagemaker", "--model", "m/x", "--data", str(train_file),
                         "--name", "wait-cli")
    assert code == 1
    assert "Failed" in out and "no training rows left after filtering" in out


@pytest.mark.parametrize("args", [["status", "x"], ["logs", "x"], ["stop", "x"], ["jobs"], ["platform"]])
def test_missing_credentials_are_explained_not_traced(capsys, monkeypatch, tmp_path, args):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, out, err = run(capsys, *args, "--backend", "sagemaker", "--region", REGION)
    assert code == 1
    assert "No AWS credentials found" in err and "Traceback" not in err + out
