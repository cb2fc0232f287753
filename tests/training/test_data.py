"""Data formats, completion-only labels, EOS, over-length policy and error locations."""

from __future__ import annotations

import json

import pytest

from ftcloud.spec import TrainingSpec
from ftcloud_train.data import (
    IGNORE_INDEX,
    DataError,
    Row,
    build_split,
    detect_format,
    read_rows,
    split_holdout,
    tokenize_row,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _targets(tok, sample):
    return tok.decode([t for t in sample.labels if t != IGNORE_INDEX])


def test_chat_loss_only_on_assistant_turns_with_eos(tokenizer):
    row = Row({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What colour is sky?"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And grass?"},
        {"role": "assistant", "content": "Green."},
    ]}, "train/x.jsonl:1")
    sample = tokenize_row(row, "chat", tokenizer, completion_only=True)
    assert _targets(tokenizer, sample) == "Blue.<|im_end|>\nGreen.<|im_end|>\n"
    assert sample.input_ids[-2] == tokenizer.eos_token_id or sample.input_ids[-1] == tokenizer.eos_token_id
    full = tokenize_row(row, "chat", tokenizer, completion_only=False)
    assert all(label != IGNORE_INDEX for label in full.labels)


@pytest.mark.parametrize("fmt, data, target", [
    ("alpaca", {"instruction": "Name the colour.", "input": "apple", "output": "red"}, "red<|im_end|>\n"),
    ("prompt_completion", {"prompt": "apple is ", "completion": "red"}, "red<|im_end|>"),
    ("text", {"text": "apple is red"}, None),
])
def test_other_formats(tokenizer, fmt, data, target):
    sample = tokenize_row(Row(data, "f:1"), fmt, tokenizer, completion_only=True)
    assert sample.input_ids[-1] == tokenizer.eos_token_id or sample.input_ids[-2] == tokenizer.eos_token_id
    if target is None:  # plain text: every token is a target
        assert all(label != IGNORE_INDEX for label in sample.labels)
    else:
        assert _targets(tokenizer, sample) == target


def test_format_detection_and_clear_error():
    assert detect_format([Row({"prompt": "a", "completion": "b"}, "f:1")], "auto") == "prompt_completion"
    assert detect_format([Row({"messages": []}, "f:1")], "auto") == "chat"
    with pytest.raises(DataError, match=r"f:1: cannot tell the row format .*question.*data_format"):
        detect_format([Row({"question": "a", "answer": "b"}, "f:1")], "auto")


def test_mixed_formats_name_the_row_and_field(tokenizer, tmp_path):
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"prompt": "a", "completion": "b"}) + "\n" + json.dumps({"prompt": "a", "answer": "b"}) + "\n"
    )
    rows = read_rows(tmp_path, "train")
    with pytest.raises(DataError, match=r"train/d.jsonl:2: missing field 'completion'"):
        build_split(rows, "train", TrainingSpec(), tokenizer)


def test_bad_chat_role_named(tokenizer):
    row = Row({"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "t.jsonl:7")
    with pytest.raises(DataError, match=r't.jsonl:7: messages\[0\].role is "human"; expected one of system, user, assistant, tool. '
                       r'ShareGPT\'s "human" is "user"'):
        tokenize_row(row, "chat", tokenizer, True)


def _long_rows(n_long: int, n_short: int):
    long_q = "What colour is apple? " + "please answer briefly " * 30
    rows = [Row({"prompt": long_q, "completion": "red"}, f"t.jsonl:{i + 1}") for i in range(n_long)]
    rows += [Row({"prompt": "apple?", "completion": "red"}, f"t.jsonl:{n_long + i + 1}") for i in range(n_short)]
    return rows


def test_overlength_policies_are_counted_never_silent(tokenizer):
    rows = _long_rows(3, 5)
    _, dropped = build_split(rows, "train", TrainingSpec(max_length=32, overlength="drop"), tokenizer)
    assert dropped.dropped_overlength == 3 and dropped.samples == 5
    assert "3 dropped" in dropped.summary() and "t.jsonl:1" in dropped.summary()

    samples, trunc = build_split(rows, "train", TrainingSpec(max_length=32, overlength="truncate"), tokenizer)
    assert trunc.truncated == 3 and all(s["length"] <= 32 for s in samples)
    # truncation cut the completion off those rows: they are dropped, and that is counted too
    assert trunc.dropped_no_target == 3 and trunc.samples == 5

    with pytest.raises(DataError, match=r"t.jsonl:1: \d+ tokens, longer than max_length=32. Raise max_length"):
        build_split(rows, "train", TrainingSpec(max_length=32, overlength="error"), tokenizer)


def test_overlength_counts_reach_metrics_json(tiny_model_dir, tmp_path, monkeypatch):
    from ftcloud.contract import ROOT_ENV
    from ftcloud_train.entrypoint import main

    from .jobtree import make_job, metrics

    paths = make_job(tmp_path, tiny_model_dir, max_steps=1, max_length=40, overlength="drop")
    monkeypatch.setenv(ROOT_ENV, str(paths.root))
    assert main(["train"]) == 0
    train_report = metrics(paths)["data"][0]
    assert train_report["split"] == "train" and train_report["dropped_overlength"] > 0
    assert train_report["samples"] == train_report["rows"] - train_report["dropped_overlength"]


def test_holdout_split_is_deterministic_and_disjoint():
    rows = [Row({"text": str(i)}, f"f:{i}") for i in range(50)]
    train, held = split_holdout(rows, 0.1, seed=1)
    assert len(held) == 5 and len(train) == 45
    assert {r.source for r in train}.isdisjoint(r.source for r in held)
    assert [r.source for r in split_holdout(rows, 0.1, seed=1)[1]] == [r.source for r in held]


def test_reads_json_csv_and_names_rows(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"text": "x"}, {"text": "y"}]))
    (tmp_path / "b.csv").write_text("prompt,completion\nhi,there\n")
    rows = read_rows(tmp_path, "train")
    assert [r.source for r in rows] == ["train/a.json[0]", "train/a.json[1]", "train/b.csv:2"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="has no data files; found notes.txt"):
        read_rows(empty, "train")


CHAT_ROW = {"messages": [{"role": "user", "content": "apple?"}, {"role": "assistant", "content": "red"}]}


def test_json_files_are_one_document_pretty_printed_or_not(tmp_path, tokenizer):
    (tmp_path / "a.json").write_text(json.dumps([CHAT_ROW, CHAT_ROW], indent=2))
    (tmp_path / "b.json").write_text(json.dumps({"version": 1, "data": [CHAT_ROW]}, indent=2))
    (tmp_path / "c.json").write_text(json.dumps(CHAT_ROW, indent=2))  # one row; its list is not rows
    (tmp_path / "d.json").write_text(json.dumps(CHAT_ROW) + "\n\n" + json.dumps(CHAT_ROW) + "\n")  # JSONL
    rows = read_rows(tmp_path, "train")
    assert [r.source for r in rows] == [
        "train/a.json[0]", "train/a.json[1]", 'train/b.json["data"][0]', "train/c.json",
        "train/d.json:1", "train/d.json:3",
    ]
    assert all(r.data == CHAT_ROW for r in rows)
    samples, report = build_split(rows, "train", TrainingSpec(), tokenizer)
    assert report.data_format == "chat" and len(samples) == 6


@pytest.mark.parametrize("name, text, error", [
    # a pretty-printed array with a missing comma on line 4: file and line named
    ("bad.json", '[\n  {"text": "x"},\n  {"text": "y"}\n  {"text": "z"}\n]\n',
     r"train/bad.json:4: invalid JSON \(Expecting ',' delimiter"),
    ("two.json", json.dumps({"train": [CHAT_ROW], "test": [CHAT_ROW]}, indent=2),
     r"train/two.json: the JSON object \(keys \['test', 'train'\]\) is not a row .* has 2 lists"),
    ("rows.json", json.dumps(CHAT_ROW, indent=2) + "\n" + json.dumps(CHAT_ROW, indent=2),
     r"train/rows.json:13: invalid JSON \(Extra data .* goes on after its first value \(line 13\); nor is it JSON Lines"),
    ("pretty.jsonl", json.dumps(CHAT_ROW, indent=2), r"train/pretty.jsonl:1: invalid JSON .* use the .json suffix"),
    ("scalar.json", "42", r"train/scalar.json: expected an array of row objects, got a JSON int"),
    ("items.json", json.dumps([CHAT_ROW, "oops"]), r"train/items.json\[1\]: expected a JSON object \(a row\), got a string"),
])
def test_json_errors_name_file_and_line(tmp_path, name, text, error):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=error):
        read_rows(tmp_path, "train")


def test_truncated_sample_keeps_the_cut_without_eos_and_the_report_says_so(tokenizer):
    """A cut is not an end: an EOS there would teach the model to stop mid-answer (at max_length)."""
    long_answer = "red and round and sweet " * 20
    rows = [Row({"prompt": "apple?", "completion": long_answer}, "t.jsonl:1"),
            Row({"prompt": "apple?", "completion": "red"}, "t.jsonl:2")]
    full = tokenize_row(rows[0], "prompt_completion", tokenizer, completion_only=True)
    samples, report = build_split(rows, "train", TrainingSpec(max_length=24, overlength="truncate"), tokenizer)
    cut, short = samples
    assert report.truncated == 1 and cut["length"] == 24
    assert cut["input_ids"] == full.input_ids[:24] and cut["labels"] == full.labels[:24]
    assert tokenizer.eos_token_id not in cut["input_ids"] and cut["labels"][-1] != IGNORE_INDEX
    assert short["input_ids"][-1] == tokenizer.eos_token_id == short["labels"][-1]  # what fits ends with EOS
    assert "truncated samples end without EOS" in report.summary() and "t.jsonl:1" in report.summary()
