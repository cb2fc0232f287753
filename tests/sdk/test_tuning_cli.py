"""``ftcloud tune | tunings | tuning TUNE | tuning stop TUNE`` and ``register --from-tuning`` as a user
meets them: the exact dry-run request, following trials to the end, JSON, exit codes, one-line errors."""

from __future__ import annotations

import json

import boto3
import pytest

from ftcloud.cli import main
from ftcloud.sdk import Client
from ftcloud.tuning.base import Objective, Trial, Tuner, TuningLaunchResult, TuningNotFoundError, TuningStatus

from .conftest import REGION

JOB_YAML = """\
name: tune-cli
backend: sagemaker
training:
  technique: qlora
  model: meta-llama/Llama-3.2-1B
  max_steps: 40
data:
  train: ./train.jsonl
compute:
  instance_type: ml.m5.xlarge
tune:
  strategy: random
  max_trials: 4
  parameters:
    learning_rate: {min: 1e-5, max: 1e-3, scaling: log}
    lora_r: [8, 16]
"""


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture()
def job_file(tmp_path, train_file):
    (tmp_path / "train.jsonl").write_text(train_file.read_text())
    path = tmp_path / "job.yaml"
    path.write_text(JOB_YAML)
    return path


class ScriptedTuner(Tuner):
    """A tuner whose status advances one scripted step per poll (what a real tuning does over hours)."""

    name = "sagemaker"

    def __init__(self, steps: list[TuningStatus]):
        self.steps = steps
        self.polls = 0
        self.launched: list[tuple] = []
        self.stopped: list[str] = []

    def launch(self, job, tuning, *, dry_run=False):
        self.launched.append((job, tuning, dry_run))
        return TuningLaunchResult(name=job.name, backend=self.name, dry_run=dry_run, request={"planned": True})

    def status(self, name):
        if name != self.steps[0].name:
            raise TuningNotFoundError(f"No tuning named '{name}'.")
        step = self.steps[min(self.polls, len(self.steps) - 1)]
        self.polls += 1
        return step

    def list_tunings(self, limit=20):
        return self.steps[-1:]

    def stop(self, name):
        self.stopped.append(name)
        return TuningStatus(name=name, backend=self.name, status="Stopping", strategy="random", objective=Objective())


def _trial(n, status, lr, objective=None, steps=None):
    return Trial(name=f"tune-cli-{n:03d}", status=status, parameters={"learning_rate": lr, "lora_r": 8},
                 objective=objective, steps=steps, number=n)


def scripted(final_status="Completed"):
    running = TuningStatus(name="tune-cli", backend="sagemaker", status="InProgress", strategy="random",
                           objective=Objective(), trials=[_trial(0, "InProgress", 1e-4)])
    done_trials = [_trial(0, "Completed", 1e-4, 0.52, 40), _trial(1, "Pruned", 0.9, 3.1, 10)]
    done = TuningStatus(name="tune-cli", backend="sagemaker", status=final_status, strategy="random",
                        objective=Objective(), trials=done_trials,
                        best=done_trials[0] if final_status == "Completed" else None)
    return ScriptedTuner([running, done])


@pytest.fixture()
def fake_tuner(monkeypatch):
    tuner = scripted()
    monkeypatch.setattr(Client, "tuner", lambda self, name=None: tuner)
    return tuner


# ---------------------------------------------------------------------- tune on SageMaker (moto)
def test_dry_run_prints_the_exact_request_and_creates_nothing(capsys, platform_stack, job_file):
    code, out, err = run(capsys, "tune", "-c", str(job_file), "--param", "lora_r=4,8", "--max-parallel", "2",
                         "--instance-type", "ml.c5.2xlarge", "--dry-run")
    assert code == 0, err
    request = json.loads(out)
    assert request["HyperParameterTuningJobName"] == "tune-cli"
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Random"
    assert config["ResourceLimits"] == {"MaxParallelTrainingJobs": 2, "MaxNumberOfTrainingJobs": 4}
    assert config["ParameterRanges"]["CategoricalParameterRanges"] == [{"Name": "lora_r", "Values": ["4", "8"]}]
    assert config["ParameterRanges"]["ContinuousParameterRanges"][0]["Name"] == "learning_rate"
    assert request["TrainingJobDefinition"]["StaticHyperParameters"]["max_steps"] == "40"
    assert request["TrainingJobDefinition"]["ResourceConfig"]["InstanceType"] == "ml.c5.2xlarge"  # launch's flag
    assert "backend: sagemaker" in err
    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"] == []


def test_no_wait_json_creates_the_tuning(capsys, platform_stack, job_file):
    code, out, err = run(capsys, "tune", "-c", str(job_file), "--name", "tune-nw", "--tune-seed", "5",
                         "--no-wait", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["name"] == "tune-nw" and result["location"].endswith("hyper-parameter-tuning-job/tune-nw")
    described = boto3.client("sagemaker", region_name=REGION).describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="tune-nw")
    assert described["HyperParameterTuningJobConfig"]["RandomSeed"] == 5
    assert described["TrainingJobDefinition"]["EnableInterContainerTrafficEncryption"] is True


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--param", "lora_rr=8,16"], "Did you mean 'lora_r'"),
        (["--param", "learning_rate"], "--param expects NAME=LOW:HIGH"),
        (["--strategy", "grid"], "grid search takes categorical parameters only"),
        (["--objective", "accuracy"], "is not a metric the container prints"),
        (["--max-trials", "2", "--max-parallel", "3"], "'tune.max_parallel' (3) must not exceed"),
        (["--strategy", "hyperband", "--early-stopping", "auto"], "set 'tune.early_stopping' to off"),
        (["--name", "x" * 33], "SageMaker allows 32"),
    ],
)
def test_bad_tuning_input_is_one_line_and_exit_2(capsys, aws_env, job_file, extra, needle):
    code, out, err = run(capsys, "tune", "-c", str(job_file), "--dry-run", *extra)
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("backend:")]
    assert code == 2 and out == ""
    assert len(lines) == 1 and needle in lines[0], err


def test_yaml_error_names_the_line(capsys, tmp_path, aws_env):
    path = tmp_path / "job.yaml"
    path.write_text(JOB_YAML.replace("lora_r: [8, 16]", "lora_r: [8, 16, 16]"))
    code, _, err = run(capsys, "tune", "-c", str(path), "--dry-run")
    assert code == 2 and f"{path}:16" in err and "lists a value twice" in err


# ---------------------------------------------------------------------- following a tuning (scripted tuner)
def test_tune_follows_trials_to_the_end(capsys, fake_tuner, job_file):
    code, out, err = run(capsys, "tune", "-c", str(job_file), "--poll", "0")
    assert code == 0, err
    job, tuning, dry_run = fake_tuner.launched[0]
    assert job.name == "tune-cli" and tuning.strategy == "random" and not dry_run
    # Not a terminal: one line per trial change on stderr, then the table and the best trial.
    assert "trial tune-cli-000: InProgress" in err and "trial tune-cli-001: Pruned objective=3.1" in err
    assert "* 0" in out and "tune-cli-000" in out and "0.52" in out
    assert "Best trial: tune-cli-000 (eval_loss=0.52; learning_rate=0.0001, lora_r=8)" in out
    assert "ftcloud register --from-tuning tune-cli" in out


def test_tune_json_and_failed_exit_code(capsys, monkeypatch, job_file):
    tuner = scripted("Failed")
    monkeypatch.setattr(Client, "tuner", lambda self, name=None: tuner)
    code, out, _ = run(capsys, "tune", "-c", str(job_file), "--poll", "0", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["status"]["status"] == "Failed" and data["status"]["counts"] == {"Completed": 1, "Pruned": 1}
    assert data["launch"]["name"] == "tune-cli"


def test_tuning_show_tunings_and_stop(capsys, fake_tuner):
    fake_tuner.polls = 1  # the tuning has ended
    code, out, _ = run(capsys, "tuning", "tune-cli", "--backend", "sagemaker")
    assert code == 0 and "LEARNING_RATE" in out and "* 0" in out and "Pruned" in out
    code, out, _ = run(capsys, "tuning", "--json", "tune-cli", "--backend", "sagemaker")
    data = json.loads(out)
    assert data["best"]["name"] == "tune-cli-000" and [t["steps"] for t in data["trials"]] == [40, 10]
    code, out, _ = run(capsys, "tunings", "--backend", "sagemaker", "--json")
    assert code == 0 and [t["name"] for t in json.loads(out)] == ["tune-cli"]
    code, out, _ = run(capsys, "tuning", "stop", "tune-cli", "--backend", "sagemaker")
    assert code == 0 and fake_tuner.stopped == ["tune-cli"] and "Stopping tune-cli" in out
    code, _, err = run(capsys, "tuning", "nope", "--backend", "sagemaker")
    assert code == 1 and "No tuning named 'nope'" in err


def test_register_needs_a_job_or_a_tuning(capsys, aws_env):
    for args in ([], ["job-1", "--from-tuning", "tune-1"]):
        code, _, err = run(capsys, "register", *args)
        assert code == 2 and "give a JOB or --from-tuning TUNE" in err


def test_register_from_tuning_without_a_completed_trial(capsys, monkeypatch, aws_env):
    tuner = scripted("Failed")
    tuner.polls = 1
    monkeypatch.setattr(Client, "tuner", lambda self, name=None: tuner)
    code, _, err = run(capsys, "register", "--from-tuning", "tune-cli", "--backend", "sagemaker")
    assert code == 2 and "Tuning tune-cli has no completed trial" in err


def test_local_dry_run_plans_the_study_and_writes_nothing(capsys, ftcloud_home, train_file):
    code, out, err = run(capsys, "tune", "--backend", "local", "--model", "org/model", "--data", str(train_file),
                         "--set", "max_steps=20", "--param", "learning_rate=1e-5:1e-3:log", "--max-trials", "3",
                         "--dry-run")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["tuning"]["parameters"][0]["name"] == "learning_rate" and plan["tuning"]["max_trials"] == 3
    assert not (ftcloud_home / "tunings").exists()


def test_sdk_tuning_handle(fake_tuner, aws_env):
    import ftcloud

    handle = ftcloud.get_tuning("tune-cli", backend="sagemaker")
    assert [t.status for t in handle.trials] == ["InProgress"]  # first poll: still running
    final = handle.wait(poll=0)
    assert final.status == "Completed" and handle.best.name == "tune-cli-000"
    assert ftcloud.tuning_status("tune-cli", backend="sagemaker").best.objective == 0.52
    handle.stop()
    assert fake_tuner.stopped == ["tune-cli"]


def test_bad_data_stops_the_tuning_before_any_trial(capsys, platform_stack, job_file):
    (job_file.parent / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "q"}]}\n{not json\n')
    code, out, err = run(capsys, "tune", "-c", str(job_file), "--dry-run")
    assert code != 0 and out == "" and "train.jsonl:2" in err
    code, out, err = run(capsys, "tune", "-c", str(job_file), "--dry-run", "--skip-validation")
    assert code == 0 and json.loads(out)["HyperParameterTuningJobName"] == "tune-cli"


def test_deploy_from_tuning_serves_the_best_trials_job(capsys, fake_tuner, monkeypatch, aws_env):
    from ftcloud.endpoints.sagemaker import SageMakerEndpoints

    deployed = []

    def deploy(self, target, name=None, **kwargs):
        deployed.append(target)
        raise SystemExit(0)  # what deploy does with the target is tested in test_endpoints_sagemaker

    monkeypatch.setattr(SageMakerEndpoints, "deploy", deploy)
    fake_tuner.polls = 1  # the finished tuning: best trial tune-cli-000
    with pytest.raises(SystemExit):
        main(["deploy", "--from-tuning", "tune-cli", "--backend", "sagemaker", "--dry-run"])
    assert deployed == ["tune-cli-000"]
    for args in ([], ["job-1", "--from-tuning", "tune-1"]):
        code, _, err = run(capsys, "deploy", *args)
        assert code == 2 and "give a TARGET or --from-tuning TUNE" in err


def test_deploy_from_a_tuning_without_a_completed_trial_is_refused(capsys, monkeypatch, aws_env):
    tuner = scripted("Failed")
    tuner.polls = 1
    monkeypatch.setattr(Client, "tuner", lambda self, name=None: tuner)
    code, _, err = run(capsys, "deploy", "--from-tuning", "tune-cli", "--backend", "sagemaker")
    assert code == 2 and "Tuning tune-cli has no completed trial" in err
