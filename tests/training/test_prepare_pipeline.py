"""`data prepare` end to end on files: counts per step, data card, cache, atomic output, splits,
folds, balancing, augmentation, back-translation with a tiny seq2seq, shards and the container command."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ftcloud_train.prepare import PrepareOptions, merge_parts, prepare
from ftcloud_train.prepare.options import OptionsError
from ftcloud_train.prepare.pipeline import content_hash
from ftcloud_train.tiny import make_rows, write_jsonl


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _chat(user: str, answer: str = "ok") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def _classification(n_major: int = 90, n_minor: int = 10) -> list[dict]:
    rows = [{"text": f"great product number {i} works well and I love it", "label": "pos"} for i in range(n_major)]
    rows += [{"text": f"broken item {i} arrived damaged, awful support", "label": "neg"} for i in range(n_minor)]
    return rows


# ---------------------------------------------------------------------- counts per step
def test_each_step_reports_its_counts_and_the_card_describes_the_output(tmp_path) -> None:
    note = ("the patient was admitted with chest pain radiating to the left arm and was treated with "
            "aspirin nitroglycerin and heparin before the catheterisation on the second day")
    rows = [
        _chat("Was it an MI? <b>Please</b> answer.", "Yes."),           # html + glossary
        _chat("Reach me at jane@example.com or +44 20 7946 0958", "Noted."),  # pii: email + phone
        _chat("cafe\u0301   au   lait", "ok"),                           # normalize + whitespace
        _chat("cafe\u0301   au   lait", "ok"),                           # exact duplicate after cleaning
        _chat("caf\u00e9 au lait", "ok"),                                # also a duplicate once normalised
        _chat(note, "Noted."),
        _chat(note.replace("second day", "second morning"), "Noted."),  # near duplicate
        _chat("\u200b\u200b", "ok"),                                     # empty after cleaning
        _chat("hi", "k"),                                                # too short (min_chars=5)
    ] + make_rows(30, "chat", seed=1, filler=(1, 4))
    src = write_jsonl(tmp_path / "raw" / "chat.jsonl", rows)
    options = PrepareOptions(strip_html=True, redact_pii=True, glossary=["medical"], near_dedup=True,
                             near_dedup_threshold=0.8, min_chars=5, validation_fraction=0.2)
    result = prepare([src], tmp_path / "out", options)

    card = result.card
    assert result.cached is False
    assert card["format"] == "chat"
    c = card["counts"]
    assert c["read"] == len(rows)
    assert c["changed"]["strip_html"] == 1 and c["changed"]["glossary"] == 1 and c["changed"]["redact_pii"] == 1
    assert c["changed"]["normalize"] == 2 and c["changed"]["whitespace"] >= 3
    assert c["pii_redacted"] == {"email": 1, "phone": 1}
    assert c["dropped"]["empty"] == 1 and c["dropped"]["too_short"] == 1
    assert c["dropped"]["near_duplicate"] == 1
    expected_exact = 2 + (30 - len({json.dumps(r) for r in make_rows(30, "chat", seed=1, filler=(1, 4))}))
    assert c["dropped"]["exact_duplicate"] == expected_exact
    assert card["glossary"]["replaced"] == {"MI": 1}

    out = tmp_path / "out"
    train, validation = _rows(out / "train.jsonl"), _rows(out / "validation.jsonl")
    assert len(train) + len(validation) == c["kept"] == c["written"]
    assert card["splits"]["train.jsonl"]["rows"] == len(train)
    written = [m["content"] for r in train + validation for m in r["messages"]]
    assert "Was it an Myocardial Infarction? Please answer." in written
    assert "Reach me at [EMAIL] or [PHONE]" in written
    assert "caf\u00e9 au lait" in written and written.count("caf\u00e9 au lait") == 1
    on_disk = json.loads((out / "data_card.json").read_text())
    assert on_disk["content_hash"] == content_hash(out) == card["content_hash"]
    assert on_disk["sources"][0]["rows"] == len(rows)
    md = (out / "data_card.md").read_text()
    assert "| dropped: near_duplicate | 1 |" in md and "| MI | 1 |" in md


def test_bad_row_is_reported_with_its_location_and_nothing_is_written(tmp_path) -> None:
    from ftcloud_train.datasource import DataError

    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(_chat("fine")) + "\n" + '{"messages": [{"role": "assitant", "content": "x"}]}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: .*role"):
        prepare([src], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.jsonl"]  # no temporary directory left


# ---------------------------------------------------------------------- cache and atomic output
def _mtimes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}


def test_cache_hits_only_for_identical_inputs_and_options(tmp_path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", make_rows(40, "prompt_completion", filler=(0, 3)))
    out = tmp_path / "out"
    first = prepare([src], out, PrepareOptions(seed=1))
    before = _mtimes(out)

    again = prepare([src], out, PrepareOptions(seed=1))
    assert again.cached is True and _mtimes(out) == before  # nothing rewritten

    changed_option = prepare([src], out, PrepareOptions(seed=2))
    assert changed_option.cached is False and changed_option.card["cache_key"] != first.card["cache_key"]

    data = bytearray(src.read_bytes())
    data[data.index(b"colour")] = ord("C")  # one byte of the input
    src.write_bytes(bytes(data))
    changed_input = prepare([src], out, PrepareOptions(seed=2))
    assert changed_input.cached is False
    assert any("Colour" in json.dumps(r) for r in _rows(out / "train.jsonl") + _rows(out / "validation.jsonl"))

    (out / "train.jsonl").write_text("tampered\n")  # an edited output is never trusted
    assert prepare([src], out, PrepareOptions(seed=2)).cached is False
    assert "tampered" not in (out / "train.jsonl").read_text()


def test_failing_run_keeps_the_previous_good_output(tmp_path, monkeypatch) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", make_rows(20, "text"))
    out = tmp_path / "out"
    prepare([src], out)
    good = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    import ftcloud_train.prepare.card as card_module

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(card_module, "write_card", boom)
    with pytest.raises(OSError, match="disk full"):
        prepare([src], out, PrepareOptions(seed=5))  # a new key: it must recompute, and fails at the end
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out"]


def test_refuses_to_replace_a_directory_it_did_not_write(tmp_path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", make_rows(5, "text"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OptionsError, match="did not write"):
        prepare([src], tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------------- classification: split, folds, balance
def test_stratified_split_oversampling_and_smote(tmp_path) -> None:
    src = write_jsonl(tmp_path / "cls.jsonl", _classification(90, 10))
    result = prepare([src], tmp_path / "out", PrepareOptions(validation_fraction=0.2, oversample=True, smote=True))
    out = tmp_path / "out"
    validation = Counter(r["label"] for r in _rows(out / "validation.jsonl"))
    assert validation == Counter({"pos": 18, "neg": 2})  # 20% of each class
    train = Counter(r["label"] for r in _rows(out / "train.jsonl"))
    assert train == Counter({"pos": 72, "neg": 72})  # minority oversampled to the majority
    post = result.card["post_processing"]["train.jsonl"]
    assert post["class_balance_before"] == {"neg": 8, "pos": 72}
    assert post["class_balance_after"] == {"neg": 72, "pos": 72}
    assert result.card["class_balance"]["after_cleaning"] == {"neg": 10, "pos": 90}

    from scipy import sparse

    x = sparse.load_npz(out / "features" / "train.npz")
    labels = json.loads((out / "features" / "train.labels.json").read_text())
    assert x.shape[0] == len(labels) == 144 and Counter(labels) == Counter({"pos": 72, "neg": 72})
    assert post["smote"]["shape"] == list(x.shape)


def test_kfold_every_row_validates_exactly_once(tmp_path) -> None:
    rows = _classification(40, 10)
    src = write_jsonl(tmp_path / "cls.jsonl", rows)
    prepare([src], tmp_path / "out", PrepareOptions(kfold=5))
    texts = [r["text"] for r in rows]
    seen: Counter = Counter()
    for k in range(1, 6):
        fold = tmp_path / "out" / "folds" / str(k)
        val, train = _rows(fold / "validation.jsonl"), _rows(fold / "train.jsonl")
        assert Counter(r["label"] for r in val) == Counter({"pos": 8, "neg": 2})  # stratified
        assert sorted(r["text"] for r in val + train) == sorted(texts)  # a partition of the data
        seen.update(r["text"] for r in val)
    assert set(seen.values()) == {1} and len(seen) == len(rows)
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_stopwords_refused_for_generative_data(tmp_path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", make_rows(5, "chat"))
    with pytest.raises(OptionsError, match="broken sentences"):
        prepare([src], tmp_path / "out", PrepareOptions(remove_stopwords=True))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- augmentation
def test_synonym_and_eda_augmentation_only_touches_training_inputs(tmp_path) -> None:
    syn = tmp_path / "syn.yaml"
    syn.write_text("great: [excellent, superb]\nlove: adore\n")
    src = write_jsonl(tmp_path / "cls.jsonl", _classification(20, 0))
    result = prepare([src], tmp_path / "out", PrepareOptions(synonyms=str(syn), eda=True, augment_copies=2,
                                                             validation_fraction=0.25))
    train, validation = _rows(tmp_path / "out" / "train.jsonl"), _rows(tmp_path / "out" / "validation.jsonl")
    originals = {r["text"] for r in _classification(20, 0)}
    assert len(validation) == 5 and all(r["text"] in originals for r in validation)
    assert len(train) == 15 * 3
    added = [r for r in train if r["text"] not in originals]
    assert len(added) >= 25  # EDA reorders, synonyms replace: copies differ from every original
    assert any("excellent" in r["text"] or "superb" in r["text"] for r in added)
    aug = result.card["post_processing"]["train.jsonl"]["augmentation"]
    assert aug["rows_added"] == 30 and aug["synonyms_replaced"] >= 30


@pytest.fixture(scope="module")
def tiny_seq2seq(tmp_path_factory, tiny_model_dir) -> Path:
    """A randomly initialised 1-layer T5 with the tiny tokenizer (no download)."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)  # the session's tiny tokenizer: trained once
    config = T5Config(vocab_size=len(tok), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                      num_heads=2, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    out = tmp_path_factory.mktemp("tiny-t5")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.slow
def test_back_translation_runs_the_seq2seq_model_on_inputs(tmp_path, tiny_seq2seq) -> None:
    from ftcloud_train.prepare.augment import BackTranslator

    translator = BackTranslator(str(tiny_seq2seq))
    rows = make_rows(3, "prompt_completion", seed=2, filler=(0, 0))
    prompts = [r["prompt"] for r in rows]
    expected = translator.round_trip(prompts)
    assert expected != prompts and all(expected)

    src = write_jsonl(tmp_path / "pc.jsonl", rows)
    result = prepare([src], tmp_path / "out", PrepareOptions(back_translate=str(tiny_seq2seq), augment_copies=1,
                                                             validation_fraction=0, dedup=False))
    train = _rows(tmp_path / "out" / "train.jsonl")
    assert train[:3] == rows  # originals first (one batch), then their copies
    copies = train[3:]
    assert [r["completion"] for r in copies] == [r["completion"] for r in rows]  # answers untouched
    # The copies' prompts are what the model produces for those prompts, through the pipeline's own translator.
    assert [r["prompt"] for r in copies] == [t if t else p for t, p in zip(expected, prompts, strict=True)]
    assert result.card["post_processing"]["train.jsonl"]["augmentation"]["back_translated"] == 3


# ---------------------------------------------------------------------- shards and the container command
def test_sharded_parts_merge_to_the_single_run(tmp_path) -> None:
    rows = make_rows(60, "prompt_completion", seed=3, filler=(0, 6))
    unique = list({json.dumps(r): r for r in rows}.values())
    write_jsonl(tmp_path / "shard1" / "a.jsonl", unique[: len(unique) // 2])
    write_jsonl(tmp_path / "shard2" / "b.jsonl", unique[len(unique) // 2:])
    opts = PrepareOptions(glossary=["medical"], validation_fraction=0)
    prepare([tmp_path / "shard1"], tmp_path / "parts", opts, part="algo-1")
    prepare([tmp_path / "shard2"], tmp_path / "parts", opts, part="algo-2")
    assert sorted(p.relative_to(tmp_path / "parts").as_posix() for p in (tmp_path / "parts").rglob("*.jsonl")) == [
        "train/algo-1.jsonl", "train/algo-2.jsonl"]
    merged = merge_parts(tmp_path / "parts", tmp_path / "merged")
    single = prepare([tmp_path / "shard1", tmp_path / "shard2"], tmp_path / "single", opts)
    assert (tmp_path / "merged" / "train.jsonl").read_bytes() == (tmp_path / "single" / "train.jsonl").read_bytes()
    assert merged["counts"]["read"] == single.card["counts"]["read"] == len(unique)
    assert merged["content_hash"] == single.card["content_hash"]


def test_container_prepare_command_names_parts_after_the_host(tmp_path, monkeypatch, capsys) -> None:
    from ftcloud_train.entrypoint import main

    root = tmp_path / "ml"
    (root / "config").mkdir(parents=True)
    (root / "config" / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-2",
                                                                        "hosts": ["algo-1", "algo-2"]}))
    monkeypatch.setenv("FTCLOUD_ML_ROOT", str(root))
    data = tmp_path / "input" / "data-1"
    write_jsonl(data / "part.jsonl", make_rows(12, "text"))
    assert main(["prepare", str(data), "--out", str(tmp_path / "output"), "--part", "auto", "--near-dedup",
                 "--validation-fraction", "0.25"]) == 0
    assert (tmp_path / "output" / "train" / "algo-2.jsonl").is_file()
    assert json.loads((tmp_path / "output" / "cards" / "algo-2.json").read_text())["options"]["near_dedup"] is True

    empty = tmp_path / "input" / "data-2"
    empty.mkdir()
    assert main(["prepare", str(empty), "--out", str(tmp_path / "output2"), "--part", "auto"]) == 0
    assert "nothing to do" in capsys.readouterr().out

    assert main(["prepare", str(data), "--out", str(tmp_path / "o3"), "--part", "auto", "--oversample"]) == 2
    assert "--oversample applies to classification" in capsys.readouterr().err
    # What DescribeProcessingJob shows as ExitMessage.
    assert "--oversample applies to classification" in (root / "output" / "message").read_text()


def test_tokenizer_gives_token_lengths_and_is_part_of_the_cache_key(tmp_path, tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    tok_dir = tmp_path / "tok"  # a copy: its files are changed below
    tok_dir.mkdir()
    for p in tiny_model_dir.iterdir():
        if p.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            (tok_dir / p.name).write_bytes(p.read_bytes())
    src = write_jsonl(tmp_path / "in.jsonl", make_rows(30, "text", filler=(0, 4)))
    options = PrepareOptions(tokenizer=str(tok_dir), validation_fraction=0)
    first = prepare([src], tmp_path / "out", options)
    tokens = first.card["splits"]["train.jsonl"]["tokens"]
    tok = AutoTokenizer.from_pretrained(tok_dir)
    lengths = [len(tok(r["text"])["input_ids"]) for r in _rows(tmp_path / "out" / "train.jsonl")]
    assert tokens["max"] == max(lengths) and tokens["min"] == min(lengths)
    assert prepare([src], tmp_path / "out", options).cached is True

    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    config["model_max_length"] = 77  # the same path, another tokenizer: recomputed
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(config))
    again = prepare([src], tmp_path / "out", options)
    assert again.cached is False and again.card["cache_key"] != first.card["cache_key"]
