"""`ftcloud data validate | stats` and validation at launch, as a user meets them."""

from __future__ import annotations

import json

import boto3
import pytest

import ftcloud
from ftcloud.cli import main

from .conftest import REGION

CHAT = {"messages": [{"role": "user", "content": "apple?"}, {"role": "assistant", "content": "red"}]}


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------- validate
def test_validate_exit_codes_problems_and_json(capsys, tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [CHAT] * 3)
    code, out, err = run(capsys, "data", "validate", str(good))
    assert (code, out.strip()) == (0, "3 rows (chat) in 1 file(s): no problems."), err

    bad_row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assitant", "content": "yo"}]}
    bad = write_jsonl(tmp_path / "train.jsonl", [CHAT, "{not json", bad_row, *([{"messages": []}] * 4)])
    code, out, err = run(capsys, "data", "validate", str(bad), "--max-problems", "2")
    assert code == 2 and "Traceback" not in out + err
    assert out.splitlines() == [
        "6 problem(s) in 6 rows (chat) of 1 file(s).",
        f"{bad}:2: invalid JSON (Expecting property name enclosed in double quotes at column 2). Each line of a "
        ".jsonl file must be one JSON object; for a pretty-printed file use the .json suffix",
        f'{bad}:3: messages[1].role is "assitant"; expected one of system, user, assistant, tool. Correct the role',
        "... and 4 more problem(s).",
    ]
    code, out, _ = run(capsys, "data", "validate", str(bad), "--json")
    report = json.loads(out)
    assert code == 2 and report["ok"] is False and report["problem_count"] == 6
    assert report["problems"][1] == {"location": f"{bad}:3", "field": "messages[1].role",
                                     "message": 'messages[1].role is "assitant"; expected one of system, user, '
                                                "assistant, tool", "fix": "Correct the role"}


def test_validate_format_override_and_sql_table(capsys, tmp_path):
    import sqlalchemy as sa

    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}])
    code, out, _ = run(capsys, "data", "validate", str(rows))
    assert code == 2 and "mixed row formats" in out
    code, out, _ = run(capsys, "data", "validate", str(rows), "--format", "text")
    assert code == 0, out
    db = f"sqlite:///{tmp_path / 'd.db'}"
    engine = sa.create_engine(db)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (text TEXT, label TEXT)"))
        conn.execute(sa.text("INSERT INTO t VALUES ('fine', 'pos'), ('', 'neg')"))
    engine.dispose()
    code, out, _ = run(capsys, "data", "validate", db, "--table", "t")
    assert code == 2 and f"{db} table t row 2: field 'text' is empty" in out
    code, out, err = run(capsys, "data", "validate", db)
    assert code == 2 and "needs exactly one of --query or --table" in out + err


# ---------------------------------------------------------------------- stats
def test_stats_in_characters_with_labels_and_histogram(capsys, tmp_path):
    rows = [{"text": "x" * n, "label": "pos" if n % 3 else "neg"} for n in range(1, 101)]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    code, out, err = run(capsys, "data", "stats", str(path), "--json", "--bins", "10")
    assert code == 0, err
    stats = json.loads(out)
    assert stats["format"] == "classification" and stats["unit"] == "characters" and stats["rows"] == 100
    assert stats["labels"] == {"neg": 33, "pos": 67}
    assert (stats["min"], stats["max"], stats["percentiles"]["p50"], stats["percentiles"]["p90"]) == (1, 100, 50, 90)
    assert [b["count"] for b in stats["histogram"]] == [10] * 10
    code, out, _ = run(capsys, "data", "stats", str(path))
    assert "length (characters): min=1 mean=50.5 max=100 p50=50 p90=90 p95=95 p99=99" in out
    assert "pass --model or --tokenizer" in out


def test_stats_tokens_match_training_and_say_what_max_length_does(capsys, tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from ftcloud.spec import TrainingSpec
    from ftcloud_train.data import DataError, build_split, read_rows, tokenize_row

    rows = [{"prompt": "apple? " * n, "completion": "red"} for n in (1, 2, 4, 40, 60)]
    path = write_jsonl(tmp_path / "data" / "t.jsonl", rows)
    png = tmp_path / "lengths.png"
    code, out, err = run(capsys, "data", "stats", str(path), "--tokenizer", str(tiny_model_dir), "--max-length", "64",
                         "--overlength", "drop", "--plot", str(png), "--json")
    assert code == 0, err
    stats = json.loads(out)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    expected = sorted(len(tokenize_row(r, "prompt_completion", tok, True).input_ids)
                      for r in read_rows(path.parent, "train"))
    assert (stats["unit"], stats["min"], stats["max"]) == ("tokens", expected[0], expected[-1])
    over = sum(n > 64 for n in expected)
    assert over == 2 and stats["over_max_length"] == over and stats["dropped_overlength"] == over
    # the same count the training job reports for the same data and settings
    _, report = build_split(read_rows(path.parent, "train"), "train",
                            TrainingSpec(max_length=64, overlength="drop"), tok)
    assert report.dropped_overlength == stats["dropped_overlength"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and stats["plot"] == str(png)

    code, out, _ = run(capsys, "data", "stats", str(path), "--tokenizer", str(tiny_model_dir), "--max-length", "64",
                       "--overlength", "error")
    assert code == 0 and f"2 row(s) longer than max_length=64 (e.g. {path}:4, {path}:5): overlength=error stops" in out
    with pytest.raises(DataError, match=rf"{path.name}:4: \d+ tokens, longer than max_length=64"):
        build_split(read_rows(path.parent, "train"), "train", TrainingSpec(max_length=64, overlength="error"), tok)


# ---------------------------------------------------------------------- validation at launch
def _bad_data(tmp_path):
    return write_jsonl(tmp_path / "inputs" / "train.jsonl", [CHAT, CHAT, '{"messages": [{"role": "user"', CHAT])


def test_launch_dry_run_refuses_invalid_data_and_creates_nothing(capsys, tmp_path, platform_stack):
    bad = _bad_data(tmp_path)
    code, out, err = run(capsys, "launch", "--backend", "sagemaker", "--model", "m/x", "--data", str(bad), "--dry-run")
    assert code == 2 and out == ""
    assert f"{bad}:3: invalid JSON" in err and "nothing was uploaded or created" in err and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run(capsys, "launch", "--backend", "sagemaker", "--model", "m/x", "--data", str(empty), "--dry-run")
    assert code == 2 and f"{empty} has no data files; found nothing" in err
    code, out, err = run(capsys, "launch", "--backend", "sagemaker", "--model", "m/x", "--data", str(bad), "--no-wait")
    assert code == 2 and f"{bad}:3: invalid JSON" in err
    s3 = boto3.client("s3", region_name=REGION)
    assert all(s3.list_objects_v2(Bucket=b).get("KeyCount", 0) == 0 for b in ("ftcloud-datasets", "ftcloud-artifacts"))
    assert boto3.client("sagemaker", region_name=REGION).list_training_jobs()["TrainingJobSummaries"] == []
    # --skip-validation: the user takes the responsibility, the dry run goes through
    code, out, err = run(capsys, "launch", "--backend", "sagemaker", "--model", "m/x", "--data", str(bad),
                         "--dry-run", "--skip-validation")
    assert code == 0 and json.loads(out)["InputDataConfig"][0]["ChannelName"] == "train", err


def test_sdk_launch_validates_local_data_on_the_local_backend(tmp_path, ftcloud_home):
    bad = write_jsonl(tmp_path / "v" / "val.jsonl", [{"messages": [{"role": "user", "content": "no answer"}]}])
    good = write_jsonl(tmp_path / "t" / "train.jsonl", [CHAT])
    with pytest.raises(ftcloud.UsageError) as info:
        ftcloud.launch(backend="local", model="m/x", data=str(good), validation_data=str(bad), dry_run=True)
    assert info.value.problems[0].location == f"{bad}:1"
    assert "data.validation" in str(info.value) and "no assistant turn" in str(info.value)
    assert not (ftcloud_home / "jobs").exists() or not any((ftcloud_home / "jobs").iterdir())
    job = ftcloud.launch(backend="local", model="m/x", data=str(good), validation_data=str(bad), dry_run=True,
                         skip_validation=True)
    assert job.launch_result.dry_run


def test_stats_of_classification_rows_count_tokens_as_the_classifier_does(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from ftcloud.spec import TrainingSpec
    from ftcloud_train.data import build_split, read_rows

    rows = [{"text": "good apple " * n, "label": "pos" if n % 2 else "neg"} for n in (1, 3, 8, 30)]
    path = write_jsonl(tmp_path / "cls" / "c.jsonl", rows)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    stats = ftcloud.data_stats(path, tokenizer=tok, max_length=40, overlength="truncate")
    samples, report = build_split(read_rows(path.parent, "train"), "train",
                                  TrainingSpec(task="classification", max_length=40, overlength="truncate"), tok)
    assert stats.labels == {"neg": 2, "pos": 2}
    assert stats.truncated == report.truncated == stats.over_max_length == 2 and stats.dropped_no_target == 0
    assert stats.max > 40 and sorted(s["length"] for s in samples)[:2] == list(stats.lengths)[:2]
