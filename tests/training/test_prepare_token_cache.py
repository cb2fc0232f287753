"""`ftcloud data prepare --tokenizer M --token-cache`: the container loads the prepared samples and
does not tokenize them again; other settings at launch make it tokenize again, never use a stale entry."""

from __future__ import annotations

import json
import shutil

import pytest

from ftcloud.cli import main
from ftcloud_train import token_cache
from ftcloud_train.job import load_job
from ftcloud_train.prepare import PrepareOptions, prepare
from ftcloud_train.prepare.options import OptionsError
from ftcloud_train.tiny import make_rows, write_jsonl

from .jobtree import make_job, run_module


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("FTCLOUD_HOME", str(tmp_path / "ftcloud-home"))


def _prepare(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["data", "prepare", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_token_cache_without_tokenizer_or_set_without_token_cache_is_refused(capsys, tmp_path):
    raw = write_jsonl(tmp_path / "raw" / "data.jsonl", make_rows(8, "chat", seed=0))
    out = tmp_path / "out"
    code, _, err = _prepare(capsys, str(raw), "--out", str(out), "--token-cache")
    assert code == 2 and "--token-cache needs --tokenizer" in err and not out.exists()
    code, _, err = _prepare(capsys, str(raw), "--out", str(out), "--set", "max_length=64")
    assert code == 2 and "--set applies to --token-cache only" in err and not out.exists()
    # --set goes through the training spec's own parser: its checks and messages
    code, _, err = _prepare(capsys, str(raw), "--out", str(out), "--tokenizer", str(tmp_path), "--token-cache",
                            "--set", "max_length=long")
    assert code == 2 and "'max_length' must be a whole number" in err and not out.exists()
    code, _, err = _prepare(capsys, str(raw), "--out", str(out), "--tokenizer", str(tmp_path), "--token-cache",
                            "--set", "learning_rate=0.1")
    assert code == 2 and "only settings that change tokenization" in err and not out.exists()
    # Sharded (SageMaker Processing): no instance sees the whole channel the key is made of.
    code, _, err = _prepare(capsys, str(raw), "--backend", "sagemaker", "--tokenizer", str(tmp_path),
                            "--token-cache", "--dry-run")
    assert code == 2 and "local backend only" in err
    with pytest.raises(OptionsError, match="local backend only"):
        prepare([raw], out, PrepareOptions(tokenizer=str(tmp_path), token_cache=True), part="algo-1")
    assert not out.exists()


@pytest.mark.slow
def test_container_loads_the_prepared_cache_for_both_splits_and_rebuilds_for_other_settings(
    capsys, tmp_path, tiny_model_dir
):
    raw = write_jsonl(tmp_path / "raw" / "data.jsonl", make_rows(40, "chat", seed=0, filler=(0, 1)))
    out = tmp_path / "prepared"
    code, stdout, err = _prepare(capsys, str(raw), "--out", str(out), "--tokenizer", str(tiny_model_dir),
                                 "--token-cache", "--set", "max_length=96", "--validation-fraction", "0.25",
                                 "--json")
    assert code == 0, err
    card = json.loads(stdout)["card"]
    entries = card["token_cache"]["entries"]
    assert card["token_cache"]["training"]["max_length"] == 96  # the card says what the cache is for
    assert not (out / "train.jsonl").exists()  # each split is its own channel directory
    for split in ("train", "validation"):
        assert (out / split / f"{split}.jsonl").is_file()
        assert (out / entries[split]["file"]).is_file()
        assert entries[split]["file"].startswith(f"{split}/{token_cache.CACHE_DIRNAME}/")

    # The real container, with the prepared directories as its train and validation channels.
    paths = make_job(tmp_path / "job", tiny_model_dir, max_steps=2, logging_steps=1, max_length=96)
    shutil.rmtree(paths.channel("train"))
    shutil.copytree(out / "train", paths.channel("train"))
    shutil.copytree(out / "validation", paths.channel("validation"))
    proc = run_module(paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = proc.stdout + proc.stderr
    for split in ("train", "validation"):
        assert (f"{split}: {entries[split]['samples']} samples from the token cache "
                f"({paths.channel(split) / token_cache.CACHE_DIRNAME})") in log, log
    # Nothing was tokenized: the job built no entry of its own.
    own = paths.checkpoint_dir / token_cache.CACHE_DIRNAME
    assert not own.exists() or not any(own.iterdir())

    # Launched with another max_length: another key, so the job tokenizes and writes its own entry.
    from ftcloud_train.modeling import load_tokenizer
    from ftcloud_train.recipe import prepare_data

    hp = json.loads(paths.hyperparameters.read_text())
    paths.hyperparameters.write_text(json.dumps({**hp, "max_length": "48"}))
    ctx = load_job(paths)
    train, evals, _ = prepare_data(ctx, load_tokenizer(str(tiny_model_dir), False))
    built = sorted(p.stem for p in own.glob("*.npz"))
    assert len(built) == 2 and not set(built) & {entries["train"]["key"], entries["validation"]["key"]}
    assert max(len(s["input_ids"]) for s in train + evals) <= 48


def test_classification_cache_is_found_in_process_and_smote_features_stay_out_of_the_channel(
    tmp_path, tiny_model_dir, monkeypatch
):
    """Classification: the validation entry is keyed by the training labels, as the container keys it;
    SMOTE's feature files (one is .json, a data suffix) are written outside the train channel."""
    from ftcloud_train.modeling import load_tokenizer
    from ftcloud_train.recipe import prepare_data

    rows = [{"text": f"great product number {i} works well", "label": "pos"} for i in range(12)]
    rows += [{"text": f"broken item {i} arrived damaged", "label": "neg"} for i in range(6)]
    raw = write_jsonl(tmp_path / "raw" / "reviews.jsonl", rows)
    out = tmp_path / "prepared"
    result = prepare([raw], out, PrepareOptions(tokenizer=str(tiny_model_dir), token_cache=True, smote=True,
                                                validation_fraction=0.25, set=["task=classification"]))
    entries = result.card["token_cache"]["entries"]
    assert (out / "features" / "train.labels.json").is_file()
    assert sorted(p.name for p in (out / "train").iterdir()) == [token_cache.CACHE_DIRNAME, "train.jsonl"]

    paths = make_job(tmp_path / "job", tiny_model_dir, task="classification", max_length=96)
    shutil.rmtree(paths.channel("train"))
    shutil.copytree(out / "train", paths.channel("train"))
    shutil.copytree(out / "validation", paths.channel("validation"))
    tokenizer = load_tokenizer(str(tiny_model_dir), False)

    def refuse(*args, **kwargs):
        raise AssertionError("the prepared cache must be used: no tokenizing")

    monkeypatch.setattr(type(tokenizer), "__call__", refuse)
    # prepare's own max_length (the default) differs from the job's 96: another key, so this tokenizes...
    with pytest.raises(AssertionError, match="no tokenizing"):
        prepare_data(load_job(paths), tokenizer)
    hp = json.loads(paths.hyperparameters.read_text())
    paths.hyperparameters.write_text(json.dumps({k: v for k, v in hp.items() if k != "max_length"}))
    # ... and with the same settings it loads both splits without a single tokenizer call.
    train, evals, reports = prepare_data(load_job(paths), tokenizer)
    assert (len(train), len(evals)) == (entries["train"]["samples"], entries["validation"]["samples"])
    assert {s["labels"] for s in train} == {0, 1} and reports[0]["labels"] == ["neg", "pos"]
