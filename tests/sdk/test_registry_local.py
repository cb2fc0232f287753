"""The local model registry end to end: register -> versions -> approve/reject, on job directories
laid out exactly as the local backend lays them out, through the SDK and the CLI."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

import ftcloud
from ftcloud.backends.local import LocalBackend, write_json_atomic
from ftcloud.backends.sagemaker import plan_upload
from ftcloud.cli import main
from ftcloud.contract import SERVE_ENV_DEFAULTS, ContainerPaths
from ftcloud.errors import UsageError
from ftcloud.job import build_job_spec
from ftcloud.registry.base import (
    BASE_MODEL_ENV,
    DEFAULT_LOCAL_GROUP,
    ModelVersionNotFoundError,
    VersionRef,
    code_version,
    code_version_of,
    parse_ref,
    spec_hash,
)
from ftcloud.registry.local import LocalRegistry, _create_exclusive

BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"
METRICS = {
    "train_loss": 1.25,
    "eval_loss": 0.875,
    "eval_perplexity": 2.3988,
    "global_step": 30,
    "epoch": 1.0,
    "resumed_from": None,
    "batching": "length_grouped",
    "data": [{"split": "train", "rows": 8}],
    "peak_gpu_memory_bytes": None,
}


def make_local_job(train_file, name: str, status: str = "Completed", technique: str = "qlora",
                   metrics: dict | None = None) -> Path:
    """A job directory as LocalBackend.launch prepares it, plus what a finished trainer leaves in ml/model."""
    backend = LocalBackend()
    spec = build_job_spec(overrides={"name": name, "technique": technique, "model": BASE, "data": str(train_file)})
    job_dir = backend.job_dir(name)
    job_dir.mkdir(parents=True)
    backend._prepare(job_dir, spec, name, {"train": spec.data.train}, spec.training.to_hyperparameters())
    model = ContainerPaths(job_dir / "ml").model_dir
    if technique == "full":
        (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
        (model / "model.safetensors").write_bytes(b"\0" * 16)
    else:
        (model / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": BASE, "r": 8}))
        (model / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    (model / "metrics.json").write_text(json.dumps(metrics if metrics is not None else METRICS))
    (model / "ftcloud_spec.json").write_text(json.dumps({"technique": technique, "resolved": {"model_source": BASE}}))
    state = json.loads((job_dir / "state.json").read_text())
    now = time.time()
    state.update(status=status, secondary_status=status, started=now - 60, ended=now if status != "InProgress" else None)
    write_json_atomic(job_dir / "state.json", state)
    return job_dir


def record(home: Path, group: str, version: int) -> dict:
    return json.loads((home / "registry" / group / f"{version}.json").read_text())


# ---------------------------------------------------------------------- register
def test_register_writes_a_full_record(ftcloud_home, train_file):
    job_dir = make_local_job(train_file, "sft-1")
    version = ftcloud.register("sft-1")

    assert (version.group, version.version, version.ref) == (DEFAULT_LOCAL_GROUP, 1, f"{DEFAULT_LOCAL_GROUP}:1")
    assert version.status == "PendingManualApproval" and version.backend == "local" and version.arn is None
    assert version.artifact == str(job_dir / "ml" / "model")
    # Numbers only, straight from metrics.json.
    assert version.metrics == {"train_loss": 1.25, "eval_loss": 0.875, "eval_perplexity": 2.3988,
                               "global_step": 30.0, "epoch": 1.0}
    hyperparameters = json.loads((job_dir / "ml/input/config/hyperparameters.json").read_text())
    assert version.lineage == {
        "training_job": "sft-1",
        "base_model": BASE,
        "data": str(train_file),
        # The digest the SageMaker backend would put in the upload's S3 key for the same file.
        "data_content_hash": plan_upload("train", train_file, "b").prefix.split("/")[-2],
        "spec_hash": spec_hash(hyperparameters),
        "technique": "qlora",
        "code_version": code_version(),
    }
    assert version.lineage["code_version"].startswith(ftcloud.__version__)
    # Serving environment: the contract's knobs, and the base an adapter-only artifact needs.
    assert version.environment[BASE_MODEL_ENV] == BASE
    assert version.environment["FTCLOUD_MAX_BATCH_SIZE"] == SERVE_ENV_DEFAULTS["FTCLOUD_MAX_BATCH_SIZE"]
    assert BASE_MODEL_ENV in SERVE_ENV_DEFAULTS
    # The same record is on disk, with the group file next to it.
    on_disk = record(ftcloud_home, DEFAULT_LOCAL_GROUP, 1)
    assert on_disk["schema"] == 1 and on_disk["ref"] == version.ref
    assert {k: on_disk[k] for k in ("status", "artifact", "metrics", "lineage", "environment")} == {
        "status": version.status, "artifact": version.artifact, "metrics": version.metrics,
        "lineage": version.lineage, "environment": version.environment,
    }
    assert json.loads((ftcloud_home / "registry" / DEFAULT_LOCAL_GROUP / "group.json").read_text())["group"] == DEFAULT_LOCAL_GROUP


def test_full_fine_tune_needs_no_base_model(train_file):
    make_local_job(train_file, "full-1", technique="full")
    version = ftcloud.register("full-1", group="full-models")
    assert BASE_MODEL_ENV not in version.environment
    assert version.lineage["technique"] == "full"


def test_spec_hash_ignores_where_things_are_but_not_the_recipe():
    base = {"technique": "qlora", "lora_r": "8", "model": "/tmp/x"}
    assert spec_hash(base) == spec_hash({**base, "model": "", "_tuning_objective_metric": "eval_loss",
                                         "sagemaker_region": "us-east-1", "hf_token_secret_arn": "arn:x"})
    assert spec_hash(base) != spec_hash({**base, "lora_r": "16"})


def test_code_version_names_the_commit_only_of_a_checkout_of_ftcloud(tmp_path):
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout.strip()

    package = tmp_path / "ftcloud"
    package.mkdir()
    (package / "__init__.py").write_text("v = 1\n")
    assert code_version_of(package) == ftcloud.__version__  # not a repository
    git("init", "-q")
    (tmp_path / "app.py").write_text("x\n")
    git("add", "app.py")
    git("commit", "-qm", "someone else's project")
    assert code_version_of(package) == ftcloud.__version__  # a repository that does not track ftcloud
    git("add", "ftcloud/__init__.py")
    git("commit", "-qm", "ftcloud")
    sha = git("rev-parse", "--short=12", "HEAD")
    assert code_version_of(package) == f"{ftcloud.__version__}+g{sha}"
    (package / "__init__.py").write_text("v = 2\n")
    assert code_version_of(package) == f"{ftcloud.__version__}+g{sha}.dirty"


@pytest.mark.parametrize("status", ["InProgress", "Failed", "Stopped"])
def test_only_a_completed_job_can_be_registered(ftcloud_home, train_file, status, monkeypatch):
    make_local_job(train_file, "not-done", status=status)
    monkeypatch.setattr(LocalBackend, "_runner_alive", lambda self, d: True)  # an InProgress job's runner lives
    with pytest.raises(UsageError, match=f"Job 'not-done' is {status}; only a Completed job"):
        ftcloud.register("not-done")
    assert not (ftcloud_home / "registry" / DEFAULT_LOCAL_GROUP).exists() or not list(
        (ftcloud_home / "registry" / DEFAULT_LOCAL_GROUP).glob("*.json")
    )


def test_a_completed_job_without_its_model_is_refused(train_file):
    job_dir = make_local_job(train_file, "gone")
    (job_dir / "ml/model/adapter_config.json").unlink()
    with pytest.raises(UsageError, match="holds no model"):
        ftcloud.register("gone")


# ---------------------------------------------------------------------- versions / approve / reject
def test_versions_approve_reject_round_trip(ftcloud_home, train_file):
    for name in ("a-1", "a-2", "a-3"):
        make_local_job(train_file, name)
        ftcloud.register(name, group="team-x")
    assert [(v.version, v.lineage["training_job"]) for v in ftcloud.versions("team-x")] == [
        (1, "a-1"), (2, "a-2"), (3, "a-3")
    ]
    assert ftcloud.model_version("team-x").version == 3  # GROUP = latest

    approved = ftcloud.approve("team-x:2", reason="beats v1 on eval_loss")
    assert approved.status == "Approved" and approved.approval_reason == "beats v1 on eval_loss"
    assert [(h.status, h.reason) for h in approved.history] == [
        ("PendingManualApproval", "registered"), ("Approved", "beats v1 on eval_loss")
    ]
    rejected = ftcloud.reject("team-x:3", reason="regressed on held-out set")
    assert rejected.status == "Rejected"
    # What deploy asks for: the latest Approved one, not the latest.
    assert ftcloud.model_version("team-x", status="Approved").version == 2
    with pytest.raises(UsageError, match="team-x:3 is Rejected, not Approved"):
        ftcloud.model_version("team-x:3", status="Approved")

    # Changing one's mind is recorded, not overwritten.
    again = ftcloud.reject("team-x:2", reason="bias found")
    assert [h.status for h in again.history] == ["PendingManualApproval", "Approved", "Rejected"]
    on_disk = record(ftcloud_home, "team-x", 2)
    assert on_disk["status"] == "Rejected" and len(on_disk["history"]) == 3
    assert record(ftcloud_home, "team-x", 1)["status"] == "PendingManualApproval"  # untouched


def test_reject_needs_a_reason_and_unknown_refs_say_what_exists(train_file):
    make_local_job(train_file, "b-1")
    ftcloud.register("b-1", group="g")
    with pytest.raises(UsageError, match="needs a reason"):
        ftcloud.reject("g:1", reason="  ")
    with pytest.raises(ModelVersionNotFoundError, match=r"has no version 7 \(it has 1\)"):
        ftcloud.approve("g:7")
    with pytest.raises(ModelVersionNotFoundError, match="No local model group 'nope'"):
        ftcloud.versions("nope")
    with pytest.raises(UsageError, match="reason is 1025 characters"):
        ftcloud.approve("g:1", reason="x" * 1025)


@pytest.mark.parametrize(
    "ref, parsed",
    [
        ("ftcloud-models", VersionRef("ftcloud-models")),
        ("ftcloud-models:12", VersionRef("ftcloud-models", 12)),
        ("arn:aws:sagemaker:eu-west-1:123456789012:model-package/team-x/3",
         VersionRef("team-x", 3, "arn:aws:sagemaker:eu-west-1:123456789012:model-package/team-x/3")),
        ("arn:aws-cn:sagemaker:cn-north-1:123456789012:model-package/g/1",
         VersionRef("g", 1, "arn:aws-cn:sagemaker:cn-north-1:123456789012:model-package/g/1")),
    ],
)
def test_parse_ref(ref, parsed):
    assert parse_ref(ref) == parsed


@pytest.mark.parametrize("ref", ["g:0", "g:latest", "g:", "bad_name", "-g", "arn:aws:sagemaker:r:1:model-package/g"])
def test_parse_ref_refuses(ref):
    with pytest.raises(UsageError):
        parse_ref(ref)


# ---------------------------------------------------------------------- never lose a record
def test_a_taken_number_is_never_overwritten(ftcloud_home, train_file):
    gdir = ftcloud_home / "registry" / "g"
    gdir.mkdir(parents=True)
    (gdir / "1.json").write_text("{ half-written by someone else")
    assert _create_exclusive(gdir / "1.json", {"x": 1}) is False
    make_local_job(train_file, "c-1")
    version = ftcloud.register("c-1", group="g")
    assert version.version == 2  # the unreadable record keeps its number
    assert (gdir / "1.json").read_text() == "{ half-written by someone else"
    with pytest.raises(UsageError, match=r"1\.json: cannot read it as JSON"):
        ftcloud.versions("g")
    # It blocks no change to the others, and is itself never rewritten.
    assert ftcloud.approve("g:2", reason="fine").status == "Approved"
    with pytest.raises(UsageError, match=r"1\.json: cannot read it as JSON"):
        ftcloud.approve("g:1")
    assert (gdir / "1.json").read_text() == "{ half-written by someone else"
    assert not list(gdir.glob(".*.tmp"))


def test_concurrent_registrations_get_distinct_numbers(ftcloud_home, train_file):
    for i in range(6):
        make_local_job(train_file, f"p-{i}")
    registry = LocalRegistry()
    backend = LocalBackend()
    results, errors = [], []

    def one(i: int) -> None:
        try:
            results.append(registry.register(backend.status(f"p-{i}"), "race").version)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    jobs = {v.lineage["training_job"] for v in registry.versions("race")}
    assert jobs == {f"p-{i}" for i in range(6)}


# ---------------------------------------------------------------------- CLI
def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_register_approve_reject_versions(capsys, train_file, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich folds long cells at a narrow width
    make_local_job(train_file, "cli-1")
    make_local_job(train_file, "cli-2")
    code, out, err = run_cli(capsys, "register", "cli-1", "--group", "demo", "--json")
    assert code == 0, err
    assert json.loads(out)["ref"] == "demo:1" and json.loads(out)["status"] == "PendingManualApproval"
    assert "registry: local" in err
    code, out, _ = run_cli(capsys, "register", "cli-2", "--group", "demo")
    assert code == 0 and "Registered cli-2 as demo:2" in out and "ftcloud approve demo:2" in out

    code, out, _ = run_cli(capsys, "approve", "demo:1", "--reason", "good", "--json")
    assert code == 0 and json.loads(out)["status"] == "Approved"
    code, _, err = run_cli(capsys, "reject", "demo:2")
    assert code == 2 and "--reason" in err
    code, out, _ = run_cli(capsys, "reject", "demo:2", "--reason", "worse")
    assert code == 0 and out.startswith("demo:2: Rejected (worse)")

    code, out, _ = run_cli(capsys, "versions", "demo", "--json")
    rows = json.loads(out)
    assert code == 0 and [(r["version"], r["status"]) for r in rows] == [(1, "Approved"), (2, "Rejected")]
    code, out, _ = run_cli(capsys, "versions", "demo")
    assert code == 0
    lines = [line.split() for line in out.splitlines()]
    assert lines[0][:5] == ["VERSION", "STATUS", "CREATED", "EVAL_LOSS", "TECHNIQUE"]
    assert lines[1][0] == "1" and lines[1][1] == "Approved" and "0.875" in lines[1] and "qlora" in lines[1]
    assert BASE in lines[1]


def test_cli_errors_exit_codes(capsys, train_file, monkeypatch):
    code, _, err = run_cli(capsys, "approve", "nope:1")
    assert code == 1 and "No local model group 'nope'" in err
    code, _, err = run_cli(capsys, "approve", "bad_name")
    assert code == 2 and "not a model group name" in err
    make_local_job(train_file, "failed-1", status="Failed")
    code, _, err = run_cli(capsys, "register", "failed-1")
    assert code == 2 and "only a Completed job can be registered" in err
    code, _, err = run_cli(capsys, "register", "ghost")
    assert code == 1


@pytest.mark.parametrize("command", ["register", "approve", "reject", "versions"])
def test_registry_help_imports_nothing_heavy(command):
    from tests.sdk.test_import_light import HEAVY, SLOW, loaded_modules

    modules, out = loaded_modules([command, "--help"])
    assert "Usage:" in out
    assert not modules & (set(HEAVY) | set(SLOW)), modules & (set(HEAVY) | set(SLOW))
