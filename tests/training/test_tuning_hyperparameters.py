"""What SageMaker really hands the container: tuning trials' hyperparameters, isolated networks.

A tuning trial's ``hyperparameters.json`` carries keys SageMaker and its SDKs add
(``_tuning_objective_metric``, ``sagemaker_program``, ...) with every value a JSON-encoded string;
the container must train on it. A network-isolated container must never call out: with the base
model in the ``model`` channel no Hugging Face token is fetched, and where one is fetched, an
unreachable Secrets Manager fails fast with a message saying what to do.
"""

from __future__ import annotations

import json
import shutil
import socket
import time

import pytest

from ftcloud.contract import ContainerPaths
from ftcloud.spec import SpecError, TrainingSpec
from ftcloud_train.job import IGNORED_HYPERPARAMETERS, UserError, load_job

from .jobtree import FAST, make_job, metrics, run_module

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:hf-token-AbCdEf"


def tuning_trial_hyperparameters(tuned: dict[str, str] | None = None, **values: object) -> dict[str, str]:
    """hyperparameters.json of a tuning trial as SageMaker writes it: the SageMaker Python SDK
    JSON-encodes static values (strings gain quotes), the tuner substitutes the tuned ones (``tuned``:
    plain strings as the tuner formats them) and adds the objective metric, and the SDK adds its
    ``sagemaker_*`` bookkeeping keys."""
    static = {k: json.dumps(v) for k, v in values.items()}
    return {
        "_tuning_objective_metric": json.dumps("eval_loss"),
        "sagemaker_container_log_level": "20",
        "sagemaker_estimator_class_name": json.dumps("Estimator"),
        "sagemaker_estimator_module": json.dumps("sagemaker.estimator"),
        "sagemaker_job_name": json.dumps("ftcloud-tune-2025-01-01-00-00-00-000"),
        "sagemaker_program": json.dumps("train"),
        "sagemaker_region": json.dumps("us-east-1"),
        "sagemaker_submit_directory": json.dumps("s3://bucket/ftcloud-tune/source/sourcedir.tar.gz"),
        **static,
        # a tuned ContinuousParameter, as the brief's trial shows
        **(tuned if tuned is not None else {"learning_rate": json.dumps("0.0002")}),
    }


# ---------------------------------------------------------------------- which keys are ignored
@pytest.mark.parametrize(
    "key",
    ["_tuning_objective_metric", "sagemaker_program", "sagemaker_region", "sagemaker_submit_directory",
     "sagemaker_container_log_level", "sagemaker_job_name", "sagemaker_estimator_class_name"],
)
def test_keys_sagemaker_adds_are_ignored(key):
    spec = TrainingSpec.from_mapping({key: '"x"', "lora_r": "8"}, ignore=IGNORED_HYPERPARAMETERS)
    assert spec.lora_r == 8


@pytest.mark.parametrize(
    "key,suggestion",
    [("lora_rr", "lora_r"), ("sagemaker", None), ("sagemakerprogram", None), ("Sagemaker_program", None),
     ("learning-rate", "learning_rate"), ("tuning_objective_metric", None)],
)
def test_typos_are_still_refused(key, suggestion):
    with pytest.raises(SpecError) as info:
        TrainingSpec.from_mapping({key: "1"}, ignore=IGNORED_HYPERPARAMETERS)
    assert info.value.field == key and f"unknown hyperparameter '{key}'" in str(info.value)
    if suggestion:
        assert f"Did you mean '{suggestion}'?" in str(info.value)


def test_load_job_reads_a_tuning_trial_and_logs_what_it_ignored(tmp_path, capsys):
    paths = ContainerPaths(tmp_path)
    paths.config_dir.mkdir(parents=True)
    hp = tuning_trial_hyperparameters(technique="lora", model="org/model", lora_r=8, target_modules="q_proj,v_proj",
                                      completion_only_loss=False, max_steps=5)
    paths.hyperparameters.write_text(json.dumps(hp))
    spec = load_job(paths).spec
    assert (spec.technique, spec.model, spec.lora_r, spec.max_steps) == ("lora", "org/model", 8, 5)
    assert spec.learning_rate == 0.0002 and spec.completion_only_loss is False
    assert spec.target_module_list == ["q_proj", "v_proj"]
    lines = [line for line in capsys.readouterr().out.splitlines() if "ignored hyperparameters" in line]
    assert len(lines) == 1
    for key in hp:
        assert (key in lines[0]) == key.startswith(("_", "sagemaker_")), key


@pytest.mark.parametrize(
    ("hyperparameters", "environ", "expected"),
    [
        ({"_tuning_objective_metric": '"eval_loss"'}, {"TRAINING_JOB_NAME": "tune-a-003-1f2e"}, "tune-a-003-1f2e"),
        ({"lora_r": "8"}, {"TRAINING_JOB_NAME": "my-job"}, ""),  # a plain job: SageMaker's own prefix
        ({"_tuning_objective_metric": '"eval_loss"'}, {}, ""),  # no name to use (not on SageMaker)
        ({"_tuning_objective_metric": '"eval_loss"'}, {"TRAINING_JOB_NAME": "../up"}, ""),  # never a path
    ],
)
def test_each_tuning_trial_checkpoints_into_its_own_folder(hyperparameters, environ, expected):
    from ftcloud.contract import trial_checkpoint_subdir

    assert trial_checkpoint_subdir(hyperparameters, environ) == expected


def test_load_job_gives_a_tuning_trial_its_own_checkpoint_folder(tmp_path, monkeypatch):
    paths = ContainerPaths(tmp_path)
    paths.config_dir.mkdir(parents=True)
    paths.hyperparameters.write_text(json.dumps(tuning_trial_hyperparameters(model="org/model")))
    monkeypatch.setenv("TRAINING_JOB_NAME", "tune-a-003-1f2e")
    assert load_job(paths).paths.checkpoint_dir == tmp_path / "checkpoints" / "tune-a-003-1f2e"
    paths.hyperparameters.write_text(json.dumps({"model": "org/model"}))
    assert load_job(paths).paths.checkpoint_dir == tmp_path / "checkpoints"


# ---------------------------------------------------------------------- a real trial, isolated
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_isolated_tuning_trial_trains_without_calling_out(tiny_model_dir, tmp_path):
    """One few-step run covers both runtime facts: the trial's extra keys are accepted, and the
    token secret is not fetched because the model comes from the channel (Secrets Manager points
    at a closed port here, so any call would fail the job)."""
    paths = make_job(tmp_path, tiny_model_dir, rows=16)
    shutil.copytree(tiny_model_dir, paths.channel("model"))
    paths.input_data_config.write_text(json.dumps({"train": {}, "model": {}}))
    # The tuner's own forms of ranged values: a continuous value in Java's exponent notation, an
    # integer, categorical strings without the SDK's quotes.
    tuned = {"learning_rate": "2.3915463436432537E-3", "lora_r": "4", "lora_dropout": "0.07500000000000001",
             "target_modules": "q_proj,v_proj", "completion_only_loss": "false"}
    static = {k: v for k, v in FAST.items() if k not in tuned}
    hp = tuning_trial_hyperparameters(tuned, **{**static, "max_steps": 3, "logging_steps": 1, "save_steps": 2, "model": "",
                                                "technique": "lora", "hf_token_secret_arn": SECRET_ARN})
    paths.hyperparameters.write_text(json.dumps(hp))
    # Another trial's checkpoint in the prefix every trial of the tuning shares: never this trial's.
    foreign = paths.root / "checkpoints" / "checkpoint-2"
    foreign.mkdir(parents=True)
    (foreign / "trainer_state.json").write_text("{}")
    env = {"AWS_ENDPOINT_URL_SECRETS_MANAGER": f"http://127.0.0.1:{_closed_port()}", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "TRAINING_JOB_NAME": "tune-a-003-1f2e"}
    proc = run_module(paths, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert metrics(paths)["global_step"] == 3
    assert sorted(p.name for p in (paths.root / "checkpoints").iterdir()) == ["checkpoint-2", "tune-a-003-1f2e"]
    assert (foreign / "trainer_state.json").read_text() == "{}"
    assert sorted(p.name for p in (paths.root / "checkpoints" / "tune-a-003-1f2e").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    trained = json.loads((paths.model_dir / "ftcloud_spec.json").read_text())
    assert (trained["learning_rate"], trained["lora_r"], trained["lora_dropout"]) == (2.3915463436432537e-3, 4, 0.07500000000000001)
    assert (trained["target_modules"], trained["completion_only_loss"]) == ("q_proj,v_proj", False)
    adapter = json.loads((paths.model_dir / "adapter_config.json").read_text())
    assert (adapter["r"], sorted(adapter["target_modules"])) == (4, ["q_proj", "v_proj"])
    assert "ignored hyperparameters added by SageMaker: _tuning_objective_metric, sagemaker_container_log_level" \
        in proc.stdout
    assert "hf_token_secret_arn is not used" in proc.stdout


# ---------------------------------------------------------------------- resolve_hf_token
def test_no_secrets_manager_call_when_the_model_channel_is_used(tmp_path, monkeypatch):
    import boto3

    from ftcloud_train.modeling import resolve_hf_token

    def refuse(*args, **kwargs):
        raise AssertionError("an isolated container must not create an AWS client")

    monkeypatch.setattr(boto3, "client", refuse)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert resolve_hf_token(SECRET_ARN, model_channel=tmp_path) is False
    assert "HF_TOKEN" not in __import__("os").environ


@pytest.fixture()
def fake_aws(monkeypatch):
    for key, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return monkeypatch


def test_unreachable_secrets_manager_is_a_clear_user_error(fake_aws):
    from ftcloud_train.modeling import resolve_hf_token

    fake_aws.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(UserError) as info:
        resolve_hf_token(SECRET_ARN)
    message = str(info.value)
    assert "hf_token_secret_arn" in message and "'model' channel" in message


def test_a_silent_secrets_manager_times_out_quickly(fake_aws):
    """An endpoint that accepts and never answers (what a blocked network can look like) must not
    hang the job in botocore's default 60 s reads and retries; the read timeout bounds it."""
    from ftcloud_train import modeling

    fake_aws.setattr(modeling, "SECRETS_READ_TIMEOUT_S", 1)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # the kernel completes connects; nobody ever answers
        fake_aws.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://127.0.0.1:{server.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(UserError, match="hf_token_secret_arn"):
            modeling.resolve_hf_token(SECRET_ARN)
        assert time.monotonic() - started < 15
