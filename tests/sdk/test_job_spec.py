"""One job spec, three ways in: YAML, flags and Python keyword arguments produce the same thing."""

from __future__ import annotations

import pytest

from ftcloud.job import FLAT_KEYS, JobSpec, build_job_spec, parse_duration
from ftcloud.sdk import Client
from ftcloud.spec import SpecError, TrainingSpec

YAML = """\
name: eq-1
backend: sagemaker
training:
  technique: qlora
  model: m/x
  lora_r: 8
  learning_rate: 1e-4
  target_modules: [q_proj, v_proj]
data:
  train: s3://bucket/t.jsonl
compute:
  instance_type: ml.g5.xlarge
  spot: false
  max_runtime: 2h
networking:
  subnets: [s1]
  security_group_ids: [g1]
tags:
  team: nlp
"""


def test_yaml_flags_and_kwargs_agree(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(YAML)
    from_yaml = build_job_spec(config=path)
    # Python keyword arguments: native values.
    from_kwargs = Client(user_config=_blank()).build_spec(
        name="eq-1", backend="sagemaker", technique="qlora", model="m/x", lora_r=8, learning_rate=1e-4,
        target_modules=["q_proj", "v_proj"], data="s3://bucket/t.jsonl", instance_type="ml.g5.xlarge", spot=False,
        max_runtime=7200, subnets=["s1"], security_group_ids=["g1"], tags={"team": "nlp"},
    )
    # CLI flags and --set: strings.
    from_flags = build_job_spec(
        overrides={"name": "eq-1", "backend": "sagemaker", "technique": "qlora", "model": "m/x",
                   "data": "s3://bucket/t.jsonl", "instance_type": "ml.g5.xlarge", "spot": False, "max_runtime": "2h",
                   "subnets": ["s1"], "security_group_ids": ["g1"], "tags": ["team=nlp"]},
        set_values=["lora_r=8", "learning_rate=0.0001", "target_modules=q_proj,v_proj"],
    )
    assert from_yaml.to_dict() == from_kwargs.to_dict() == from_flags.to_dict()
    assert from_yaml.training.to_hyperparameters()["target_modules"] == "q_proj,v_proj"


def _blank():
    from ftcloud.config import UserConfig

    return UserConfig()


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(YAML)
    spec = build_job_spec(config=path, overrides={"lora_r": 4, "spot": True}, set_values=["compute.instance_count=2"])
    assert spec.training.lora_r == 4 and spec.compute.spot is True and spec.compute.instance_count == 2
    assert spec.training.technique == "qlora"  # untouched keys keep the file's values


def test_cross_field_rules_run_after_all_sources(tmp_path):
    # The file alone would train nothing (0 epochs); the flag fixes it. No error in between.
    path = tmp_path / "job.yaml"
    path.write_text("training:\n  num_train_epochs: 0\n")
    spec = build_job_spec(config=path, set_values=["max_steps=10"])
    assert spec.training.max_steps == 10
    with pytest.raises(SpecError, match="nothing would be trained"):
        build_job_spec(config=path)


def test_training_is_the_one_training_schema():
    # Every TrainingSpec field is settable by its own name, and no job-level key shadows one.
    for name in TrainingSpec.field_names():
        assert FLAT_KEYS[name] == ("training", name)
    described = {row["path"] for row in JobSpec.describe()}
    assert {f"training.{n}" for n in TrainingSpec.field_names()} <= described


def test_spec_json_round_trip():
    spec = build_job_spec(overrides={"technique": "dora", "model": "m", "data": "d.jsonl", "lora_r": 4})
    again = JobSpec.from_dict(spec.to_dict()).validate()
    assert again.to_dict() == spec.to_dict()


@pytest.mark.parametrize("raw,seconds", [(3600, 3600), ("90m", 5400), ("24h", 86400), ("2d", 172800), ("45", 45)])
def test_durations(raw, seconds):
    assert parse_duration(raw) == seconds


def test_defaults_spot_and_max_wait():
    spec = build_job_spec(overrides={"max_runtime": "3h"})
    assert spec.compute.spot is True
    assert spec.compute.resolved_max_wait == 6 * 3600


def test_vpc_needs_both_lists():
    from ftcloud.backends.sagemaker import check_spec

    spec = build_job_spec(overrides={"model": "m", "data": "d", "subnets": ["s1"]})
    with pytest.raises(SpecError) as info:
        check_spec(spec)
    assert info.value.field == "networking.security_group_ids"


def test_paths_in_a_job_file_are_relative_to_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "job.yaml").write_text(
        "training:\n  model: ./weights\ndata:\n  train: data/train.jsonl\n  validation: s3://b/v/\n"
    )
    monkeypatch.chdir(tmp_path)
    spec = build_job_spec(config="project/job.yaml")
    assert spec.data.train == str(folder / "data" / "train.jsonl")
    assert spec.data.validation == "s3://b/v/"
    assert spec.training.model == str(folder / "weights")
    hub = build_job_spec(config="project/job.yaml", overrides={"model": "org/model", "data": "x.jsonl"})
    assert hub.training.model == "org/model" and hub.data.train == "x.jsonl"  # flags: as typed


# ---------------------------------------------------------------------- values that would fail later
# Each was accepted at launch and failed only in the container (or at CreateTrainingJob): now the
# spec refuses it, naming the field, whether it arrives by flag, YAML or as a hyperparameter string.
FAILS_LATER = [
    ("warmup_ratio", "1", "[0, 1)"),
    ("warmup_ratio", "1.5", "[0, 1)"),
    ("warmup_ratio", "-0.1", "[0, 1)"),
    ("lora_dropout", "1.0", "[0, 1)"),
    ("lora_dropout", "-0.05", "[0, 1)"),
    ("seed", "-1", "[0, 4294967295]"),
    ("seed", str(2**32), "[0, 4294967295]"),
    ("learning_rate", "0", "> 0"),
    ("learning_rate", "-1e-4", "> 0"),
    ("learning_rate", "nan", "finite"),
    ("learning_rate", "inf", "finite"),
    ("max_grad_norm", "inf", "finite"),
    ("num_train_epochs", "nan", "finite"),
    ("target_modules", "q_proj,,v_proj", "empty module name"),
    ("target_modules", " , ", "empty module name"),
    ("target_modules", "", "empty module name"),
]


@pytest.mark.parametrize("key,value,why", FAILS_LATER)
def test_values_that_would_fail_later_are_refused_at_validation(key, value, why):
    with pytest.raises(SpecError) as info:
        build_job_spec(overrides={"model": "m", "data": "d.jsonl"}, set_values=[f"{key}={value}"])
    assert info.value.field in (key, f"training.{key}") and why in str(info.value)
    with pytest.raises(SpecError) as info:
        TrainingSpec.from_mapping({key: value})  # the container's path: SageMaker strings
    assert info.value.field == key and why in str(info.value)


def test_a_non_finite_value_set_in_python_is_refused():
    with pytest.raises(SpecError, match="'learning_rate' must be a finite number"):
        TrainingSpec(learning_rate=float("nan")).validate()


def test_yaml_range_errors_point_at_the_line(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("training:\n  model: m\n  warmup_ratio: 1.2\n")
    with pytest.raises(SpecError, match=r"job.yaml:3: 'training.warmup_ratio' must be in \[0, 1\)"):
        build_job_spec(config=path)


@pytest.mark.parametrize(
    "key,value",
    [("warmup_ratio", "0"), ("warmup_ratio", "0.99"), ("lora_dropout", "0"), ("seed", "0"),
     ("seed", str(2**32 - 1)), ("learning_rate", "1e-7"), ("target_modules", "q_proj, v_proj"),
     ("target_modules", "all-linear")],
)
def test_edge_values_that_work_are_accepted(key, value):
    build_job_spec(overrides={"model": "m", "data": "d.jsonl"}, set_values=[f"{key}={value}"])
    TrainingSpec.from_mapping({key: value})


@pytest.mark.parametrize(
    "tags,why",
    [({"team#1": "nlp"}, "'#'"), ({"team": "a;b"}, "';'"), ({"team": "x<y>"}, "'<'"), ({"": "x"}, "1-128"),
     ({"k" * 129: "v"}, "1-128"), ({"k": "v" * 257}, "at most 256"), ({"aws:team": "x"}, "reserved"),
     ({"AWS:team": "x"}, "reserved"), ({f"t{i}": "v" for i in range(49)}, "at most 48")],
)
def test_tags_sagemaker_would_reject_are_refused(tags, why):
    with pytest.raises(SpecError) as info:
        build_job_spec(overrides={"model": "m", "data": "d.jsonl", "tags": tags})
    assert info.value.field == "tags" and why in str(info.value)


def test_tags_sagemaker_accepts_pass():
    tags = {"team": "nlp research", "cost-center": "a/b:c=d+e@f_g.h", "équipe": "données", "empty": "",
            "k" * 128: "v" * 256}
    assert build_job_spec(overrides={"model": "m", "data": "d.jsonl", "tags": tags}).tags == tags


@pytest.mark.parametrize(
    "value",
    ["hf_SECRETxyzSECRETxyzSECRET", "SECRETxyzSECRETxyzSECRETxyz", "Bearer SECRETxyz",
     "arn:aws:ssm:us-east-1:123456789012:parameter/SECRETxyz", "arn:aws:secretsmanager:us-east-1:SECRETxyz",
     "arn:SECRETxyz"],
)
def test_a_wrong_token_secret_arn_is_never_echoed(value):
    with pytest.raises(SpecError) as info:
        build_job_spec(overrides={"model": "m", "data": "d.jsonl", "hf_token_secret_arn": value})
    assert info.value.field == "training.hf_token_secret_arn"
    assert "SECRET" not in str(info.value) and "Secrets Manager" in str(info.value)
    with pytest.raises(SpecError) as info:
        TrainingSpec.from_mapping({"hf_token_secret_arn": value})  # the container and the workflow
    assert info.value.field == "hf_token_secret_arn" and "SECRET" not in str(info.value)


def test_a_secret_arn_is_accepted():
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:hf-token-AbCdEf"
    assert build_job_spec(overrides={"hf_token_secret_arn": arn}).training.hf_token_secret_arn == arn
