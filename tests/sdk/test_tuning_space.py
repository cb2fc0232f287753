"""The search space: the job file's tune: section, --param flags and kwargs become one TuningSpec,
values go through the training field's own rules, and what SageMaker would reject is refused first."""

from __future__ import annotations

import pytest

from ftcloud.job import JobSpec, build_job_spec
from ftcloud.spec import SpecError
from ftcloud.tuning import space
from ftcloud.tuning.base import ParameterRange, TuningSpec
from ftcloud.tuning.space import (
    parse_param_flag,
    parse_range,
    parse_tuning,
    tuning_from_kwargs,
    validate_tuning,
)

JOB_YAML = """\
name: tune-lr
training:
  technique: lora
  model: org/model
  max_steps: 40
tune:
  objective: {metric: eval_loss, goal: minimize}
  strategy: random
  max_trials: 6
  max_parallel: 2
  early_stopping: auto
  seed: 7
  max_runtime: 2h
  parameters:
    learning_rate: {min: 1e-5, max: 1e-3, scaling: log}
    lora_r: [8, 16, 32]
    per_device_train_batch_size: {min: 2, max: 8}
    technique: {values: [lora, dora]}
    num_train_epochs: "1:4:integer"
"""


def job(**overrides) -> JobSpec:
    return build_job_spec(overrides={"name": "tune-a", "model": "org/model", "data": "s3://b/train.jsonl", **overrides})


def ranges(*items: str) -> TuningSpec:
    return tuning_from_kwargs({"params": list(items)})


# ---------------------------------------------------------------------- the YAML section
def test_job_file_tune_section_becomes_typed_ranges(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(JOB_YAML)
    spec = build_job_spec(config=path)
    t = spec.tune
    by_name = {p.name: p for p in t.parameters}
    # Kinds follow the field types; values are the fields' own types.
    assert by_name["learning_rate"] == ParameterRange("learning_rate", "continuous", 1e-5, 1e-3, "logarithmic")
    assert by_name["lora_r"] == ParameterRange("lora_r", "categorical", values=[8, 16, 32])
    assert by_name["per_device_train_batch_size"] == ParameterRange("per_device_train_batch_size", "integer", 2, 8)
    assert by_name["technique"].values == ["lora", "dora"]
    assert by_name["num_train_epochs"] == ParameterRange("num_train_epochs", "integer", 1, 4)
    assert (t.strategy, t.max_trials, t.max_parallel, t.early_stopping, t.seed, t.max_runtime) == (
        "random", 6, 2, "auto", 7, 7200)
    assert t.objective.metric == "eval_loss" and t.objective.goal == "minimize"
    assert validate_tuning(t, spec) is t
    # Round trip through to_dict (job.json) gives the same search space.
    again = JobSpec.from_dict(spec.to_dict())
    assert again.tune.to_dict() == t.to_dict()


def test_a_plain_job_has_no_tune_key_in_its_dict():
    assert "tune" not in job().to_dict()  # job.json and spec hashes of plain jobs are unchanged


@pytest.mark.parametrize(
    "yaml_tune,needle,line",
    [
        ("  parameters:\n    lora_rr: [8, 16]\n", "Did you mean 'lora_r'", 8),
        ("  parameters:\n    lora_dropout: {min: 0.1, max: 1.5}\n", "'tune.parameters.lora_dropout.max' must be in [0, 1)", 8),
        ("  parameters:\n    technique: [lora, lorax]\n", "must be one of lora, qlora, dora, full", 8),
        ("  parameters:\n    lora_r: {min: 4, max: 64, kind: continuous}\n", "whole number, so its range is integer", 8),
        ("  parameters:\n    warmup_ratio: {min: 0, max: 0.2, scaling: log}\n", "log scaling needs min > 0", 8),
        ("  parameters:\n    lora_r: {min: 32, max: 8}\n", "min (32) must be below max (8)", 8),
        ("  parameters:\n    lora_r: {min: 1, max: 8, scaling: reverse_log}\n", "continuous ranges only", 8),
        ("  parameters:\n    model: [a, b]\n", "cannot be tuned", 8),
        ("  stratgy: grid\n", "Did you mean 'tune.strategy'", 7),
        ("  strategy: genetic\n", "must be one of bayesian, random, grid, hyperband", 7),
        ("  max_trials: 0\n", "'tune.max_trials' must be >= 1", 7),
    ],
)
def test_yaml_errors_name_file_line_and_field(tmp_path, yaml_tune, needle, line):
    path = tmp_path / "job.yaml"
    path.write_text("name: t\ntraining:\n  model: org/model\ndata:\n  train: s3://b/t.jsonl\ntune:\n" + yaml_tune)
    with pytest.raises(SpecError) as info:
        build_job_spec(config=path)
    assert needle in str(info.value)
    assert f"job.yaml:{line}" in str(info.value)
    assert (info.value.field or "").startswith("tune")


# ---------------------------------------------------------------------- flags and kwargs
def test_param_flag_forms():
    assert parse_param_flag("learning_rate=1e-5:1e-2:log") == ("learning_rate", "1e-5:1e-2:log")
    assert parse_param_flag("lora_r=8,16,32") == ("lora_r", ["8", "16", "32"])
    with pytest.raises(SpecError, match="NAME=LOW:HIGH"):
        parse_param_flag("learning_rate")
    t = ranges("learning_rate=1e-5:1e-2:log", "lora_r=8,16,32", "lora_dropout=0:0.3", "merge_adapter=true,false")
    by_name = {p.name: p for p in t.parameters}
    assert by_name["learning_rate"].scaling == "logarithmic" and by_name["learning_rate"].low == 1e-5
    assert by_name["lora_r"].values == [8, 16, 32]  # strings from the shell, ints in the spec
    assert by_name["lora_dropout"].kind == "continuous" and by_name["lora_dropout"].scaling == "auto"
    assert by_name["merge_adapter"].values == [True, False]


def test_flags_override_the_file_section_per_parameter(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(JOB_YAML)
    spec = build_job_spec(config=path)
    t = tuning_from_kwargs({"params": ["lora_r=4,8"], "strategy": "bayesian", "tune_seed": 3, "max_trials": 9},
                           base=spec.tune)
    by_name = {p.name: p for p in t.parameters}
    assert by_name["lora_r"].values == [4, 8]  # replaced
    assert by_name["learning_rate"].high == 1e-3  # kept from the file
    assert (t.strategy, t.seed, t.max_trials) == ("bayesian", 3, 9)
    assert spec.tune.strategy == "random"  # the base is not mutated


def test_set_reaches_the_tune_section():
    spec = build_job_spec(overrides={"model": "org/m", "data": "s3://b/t.jsonl"},
                          set_values=["tune.max_trials=5", "tune.strategy=grid"])
    assert (spec.tune.max_trials, spec.tune.strategy) == (5, "grid")


def test_unknown_kwarg_is_named():
    with pytest.raises(SpecError, match="Did you mean 'max_trials'"):
        tuning_from_kwargs({"max_trial": 3})


# ---------------------------------------------------------------------- what SageMaker would reject
@pytest.mark.parametrize(
    "params,settings,job_overrides,field,needle",
    [
        (["learning_rate=1e-5:1e-3"], {"strategy": "grid"}, {}, "tune.parameters.learning_rate",
         "grid search takes categorical parameters only"),
        (["lora_r=4,8,16", "lora_alpha=8,16,32,64"], {"strategy": "grid", "max_trials": 10}, {}, "tune.max_trials",
         "the grid has 12 combinations"),
        (["learning_rate=1e-5:1e-3"], {"strategy": "hyperband", "early_stopping": "auto"}, {"max_steps": 50},
         "tune.early_stopping", "set 'tune.early_stopping' to off"),
        (["learning_rate=1e-5:1e-3"], {"strategy": "hyperband", "resource": "num_train_epochs"}, {"max_steps": 50},
         "tune.resource", "overrides epochs"),
        (["learning_rate=1e-5:1e-3"], {"strategy": "hyperband", "min_resource": 80}, {"max_steps": 50},
         "tune.min_resource", "must not exceed 'tune.max_resource' (50)"),
        (["learning_rate=1e-5:1e-3"], {"max_resource": 5}, {}, "tune.max_resource", "hyperband only"),
        (["learning_rate=1e-5:1e-3"], {"objective": "eval_los"}, {}, "tune.objective", "Did you mean 'eval_loss'"),
        (["learning_rate=1e-5:1e-3"], {"max_trials": 2, "max_parallel": 3}, {}, "tune.max_parallel",
         "must not exceed 'tune.max_trials' (2)"),
        (["learning_rate=1e-5:1e-3"], {"max_tuning_runtime": 60}, {}, "tune.max_runtime", "120 s to"),
        (["technique=lora,full"], {}, {"quantization": "4bit"}, "tune.parameters.technique", "value 'full' does not fit"),
        (["learning_rate=1e-5:1e-3"], {}, {"name": "a-tuning-name-that-is-far-too-long-for-sagemaker"}, "name",
         "SageMaker allows 32"),
        (["learning_rate=1e-5:1e-3"], {"warm_start_from": [f"t{i}" for i in range(6)]}, {}, "tune.warm_start_from",
         "SageMaker allows 5"),
    ],
)
def test_validate_refuses_what_sagemaker_would(params, settings, job_overrides, field, needle):
    tuning = tuning_from_kwargs({"params": params, **settings})
    with pytest.raises(SpecError) as info:
        validate_tuning(tuning, job(**job_overrides))
    assert info.value.field == field
    assert needle in str(info.value)


def test_too_many_ranges_and_hyperparameters(monkeypatch):
    many = TuningSpec(parameters=[ParameterRange(f"k{i}", "categorical", values=[1]) for i in range(31)])
    with pytest.raises(SpecError, match="has 31 ranges; SageMaker allows 30"):
        validate_tuning(many, job())
    # The 100-hyperparameter limit counts static and ranged keys together (the spec has fewer today).
    static = len(job().training.to_hyperparameters())
    monkeypatch.setattr(space, "MAX_HYPERPARAMETERS", static)
    validate_tuning(ranges("lora_r=8,16"), job())  # lora_r is static too: still within the limit
    monkeypatch.setattr(space, "MAX_HYPERPARAMETERS", static - 1)
    with pytest.raises(SpecError, match=f"would have {static} hyperparameters; SageMaker allows {static - 1}"):
        validate_tuning(ranges("lora_r=8,16"), job())


def test_spot_wait_below_runtime_is_refused():
    spec = job(max_runtime="2h")
    spec.compute.max_wait = 3600  # set after validation (e.g. in Python): the tuning still refuses it
    with pytest.raises(SpecError) as info:
        validate_tuning(ranges("lora_r=8,16"), spec)
    assert info.value.field == "compute.max_wait"


@pytest.mark.parametrize(
    "job_overrides,params,resource,max_resource",
    [
        ({"max_steps": 60}, ["learning_rate=1e-5:1e-3"], "max_steps", 60),
        ({"num_train_epochs": 2.5}, ["learning_rate=1e-5:1e-3"], "num_train_epochs", 3),
        ({}, ["learning_rate=1e-5:1e-3", "max_steps=20:80"], "max_steps", 80),
    ],
)
def test_hyperband_resource_defaults(job_overrides, params, resource, max_resource):
    tuning = tuning_from_kwargs({"params": params, "strategy": "hyperband"})
    validate_tuning(tuning, job(**job_overrides))
    assert (tuning.resource, tuning.min_resource, tuning.max_resource) == (resource, 1, max_resource)


def test_grid_within_max_trials_passes():
    tuning = tuning_from_kwargs({"params": ["lora_r=8,16", "technique=lora,dora"], "strategy": "grid",
                                 "max_trials": 4})
    assert validate_tuning(tuning, job()).strategy == "grid"


def test_parse_range_reads_the_to_dict_form():
    rng = ParameterRange("learning_rate", "continuous", 1e-5, 1e-3, "logarithmic")
    assert parse_range("learning_rate", {k: v for k, v in rng.to_dict().items() if k != "name"}) == rng
    assert parse_tuning({"parameters": [rng.to_dict()]}).parameters == [rng]


def test_kwargs_take_range_objects_and_mappings():
    rng = ParameterRange("lora_dropout", "continuous", 0.0, 0.2)
    t = tuning_from_kwargs({"params": [rng]})
    assert t.parameters == [rng]
    t = tuning_from_kwargs({"params": {"lora_r": [4, 8], "learning_rate": {"min": 1e-4, "max": 1e-3}}}, base=t)
    assert [p.name for p in t.parameters] == ["lora_dropout", "lora_r", "learning_rate"]
    assert tuning_from_kwargs({"strategy": None}) is None  # nothing given: nothing built
