"""Classification as a trainer task: labels, samples, the loss the Trainer really uses, metrics,
and the acceptance run: on 90/10 data, class weights raise the minority class's recall."""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from typing import Any

import pytest

from ftcloud.contract import ROOT_ENV, metric_definitions
from ftcloud.spec import SpecError, TrainingSpec
from ftcloud_train import classification
from ftcloud_train.data import DataError, Row
from ftcloud_train.job import UserError
from ftcloud_train.tiny import write_jsonl

from .jobtree import make_job, metrics

WORDS = "the customer asked about colour of apple banana sky grass snow coal orange plum lemon ocean leaf".split()
KEYWORD = "cherry"  # one token of the tiny tokenizer; never among WORDS


def keyword_rows(n: int, minority: float, seed: int) -> list[dict]:
    """A learnable, imbalanced set: a row ending in KEYWORD is 'alert', any other 'plain'."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        alert = rng.random() < minority
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 9))] + ([KEYWORD] if alert else [])
        rows.append({"text": " ".join(words), "label": "alert" if alert else "plain"})
    return rows


def _rows(dicts) -> list[Row]:
    return [Row(d, f"train/data.jsonl:{i + 1}") for i, d in enumerate(dicts)]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from ftcloud_train.modeling import load_tokenizer

    return load_tokenizer(str(tiny_model_dir), False)


# ---------------------------------------------------------------------------- samples and labels
def test_samples_carry_one_label_id_no_eos_and_sorted_label_names(tokenizer):
    spec = TrainingSpec(task="classification", max_length=64)
    rows = _rows([{"text": "sky", "label": 10}, {"text": "apple banana", "label": 2}, {"text": "snow", "label": 10}])
    samples, report = classification.build_split(rows, "train", spec, tokenizer)
    assert report.labels == ["2", "10"]  # whole numbers sort as numbers, not as text
    assert [s["labels"] for s in samples] == [1, 0, 1]
    assert samples[1]["input_ids"] == tokenizer("apple banana")["input_ids"]
    assert all(tokenizer.eos_token_id not in s["input_ids"] for s in samples)  # the head reads the last real token
    assert report.class_counts == {"2": 1, "10": 2} and "10: 2 (66.7%)" in report.summary()


def test_label_errors_name_the_row(tokenizer):
    spec = TrainingSpec(task="classification")
    with pytest.raises(DataError, match=r"at least two labels.*\['a'\]"):
        classification.build_split(_rows([{"text": "x", "label": "a"}] * 2), "train", spec, tokenizer)
    evals = _rows([{"text": "x", "label": "a"}, {"text": "y", "label": "c"}])
    with pytest.raises(DataError, match=r"train/data.jsonl:2: label 'c' does not occur in the training rows"):
        classification.build_split(evals, "validation", spec, tokenizer, ["a", "b"])
    with pytest.raises(DataError, match=r"train/data.jsonl:1: .*label"):
        classification.build_split(_rows([{"text": "x", "label": None}, {"text": "y", "label": "b"}]),
                                   "train", spec, tokenizer)


def test_causal_lm_refuses_classification_rows(tokenizer):
    from ftcloud_train.data import build_split

    with pytest.raises(DataError, match="train/data.jsonl:1: .*task=causal_lm.*Set task: classification"):
        build_split(_rows([{"text": "x", "label": "a"}]), "train", TrainingSpec(), tokenizer)


def test_over_length_policy_applies(tokenizer):
    rows = _rows([{"text": " ".join(WORDS), "label": "a"}, {"text": "sky", "label": "b"}])
    samples, report = classification.build_split(rows, "train", TrainingSpec(task="classification", max_length=8),
                                                  tokenizer)
    assert len(samples[0]["input_ids"]) == 8 and report.truncated == 1
    samples, report = classification.build_split(
        rows, "train", TrainingSpec(task="classification", max_length=8, overlength="drop"), tokenizer)
    assert len(samples) == 1 and report.dropped_overlength == 1


# ---------------------------------------------------------------------------- spec
@pytest.mark.parametrize("values, field", [
    ({"loss": "focal"}, "loss"),
    ({"class_weights": "balanced"}, "class_weights"),
    ({"task": "classification", "class_weights": "1,-2"}, "class_weights"),
    ({"task": "classification", "class_weights": "a=1,2"}, "class_weights"),
    ({"task": "classification", "batching": "packed"}, "batching"),
    ({"task": "classification", "data_format": "chat"}, "data_format"),
    ({"task": "classification", "loss": "focal", "focal_gamma": "-1"}, "focal_gamma"),
])
def test_spec_refuses_classification_knobs_that_cannot_work(values, field):
    with pytest.raises(SpecError) as err:
        TrainingSpec.from_mapping(values, source="job.yaml")
    assert err.value.field == field and f"'{field}'" in str(err.value) and str(err.value).startswith("job.yaml: ")


def test_class_weights_resolve_against_the_labels():
    names, counts = ["a", "b"], {"a": 90, "b": 10}
    balanced = classification.resolve_class_weights("balanced", names, counts)
    assert balanced == pytest.approx([100 / (2 * 90), 100 / (2 * 10)])
    assert sum(w * counts[n] for w, n in zip(balanced, names, strict=True)) == pytest.approx(100)  # mean 1 per row
    assert classification.resolve_class_weights("none", names, counts) is None
    assert classification.resolve_class_weights("1, 9", names, counts) == [1.0, 9.0]
    assert classification.resolve_class_weights("b=9,a=1", names, counts) == [1.0, 9.0]
    with pytest.raises(DataError, match="gives 3 weights for 2 labels"):
        classification.resolve_class_weights("1,2,3", names, counts)
    with pytest.raises(DataError, match="unknown c; missing b"):
        classification.resolve_class_weights("a=1,c=2", names, counts)
    # In the container the mismatch is the user's to fix: a UserError (no traceback) naming the key.
    with pytest.raises(UserError, match="hyperparameter class_weights='1,2,3' gives 3 weights for 2 labels"):
        classification.trainer_kwargs(TrainingSpec(task="classification", class_weights="1,2,3"), names, counts)


# ---------------------------------------------------------------------------- loss and metrics
def test_loss_formulas_match_hand_computation():
    import torch

    logits = torch.tensor([[2.0, 0.0], [0.5, 1.5], [0.0, 3.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 0, 1])
    weights = [0.5, 4.0]
    p = [math.exp(row[y]) / sum(math.exp(v) for v in row) for row, y in zip(logits.tolist(), labels.tolist(), strict=True)]
    w = [weights[y] for y in labels.tolist()]
    weighted_ce = sum(wi * -math.log(pi) for wi, pi in zip(w, p, strict=True)) / 4
    focal = sum(wi * (1 - pi) ** 2 * -math.log(pi) for wi, pi in zip(w, p, strict=True)) / 4
    assert classification.classification_loss(logits, labels, weights).item() == pytest.approx(weighted_ce)
    assert classification.classification_loss(logits, labels, weights, "focal", 2.0).item() == pytest.approx(focal)
    plain = torch.nn.functional.cross_entropy(logits, labels).item()
    assert classification.classification_loss(logits, labels).item() == pytest.approx(plain)
    assert classification.classification_loss(logits, labels, None, "focal", 0.0).item() == pytest.approx(plain)
    # Under gradient accumulation the Trainer passes the row count of the whole accumulated batch.
    assert classification.classification_loss(logits, labels, weights, num_items_in_batch=torch.tensor(8)).item() \
        == pytest.approx(weighted_ce / 2)


def test_scores_accuracy_macro_f1_and_recall():
    predictions = [0, 0, 0, 1, 1, 0, 2, 2]
    labels = [0, 0, 1, 1, 1, 2, 2, 2]
    s = classification.scores(predictions, labels, 3)
    assert s["accuracy"] == pytest.approx(6 / 8)
    assert (s["recall_0"], s["recall_1"], s["recall_2"]) == pytest.approx((1.0, 2 / 3, 2 / 3))
    f1 = [2 * (2 / 4) * 1 / (2 / 4 + 1), 2 * 1 * (2 / 3) / (1 + 2 / 3), 2 * 1 * (2 / 3) / (1 + 2 / 3)]
    assert s["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert s["min_recall"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------- the model
def test_qlora_classifier_has_a_4bit_base_and_a_plain_trainable_head(tiny_model_dir):
    import bitsandbytes as bnb
    import torch

    from ftcloud_train.modeling import Device, load_model

    spec = TrainingSpec(model=str(tiny_model_dir), task="classification", technique="qlora")
    model = load_model(str(tiny_model_dir), spec, Device("cpu", False, 0, 1), "fp32", labels=["a", "b", "c"],
                       pad_token_id=0)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    heads = [(n, m) for n, m in model.named_modules() if n.endswith("score.modules_to_save.default")]
    assert len(heads) == 1 and type(heads[0][1]) is torch.nn.Linear and heads[0][1].out_features == 3
    assert heads[0][1].weight.requires_grad
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    out = model(input_ids=torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]]), attention_mask=torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]))
    classification.classification_loss(out.logits, torch.tensor([0, 2]), [1.0, 1.0, 3.0]).backward()
    assert heads[0][1].weight.grad is not None and heads[0][1].weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)


# ---------------------------------------------------------------------------- acceptance
@dataclass
class Run:
    paths: Any
    trainer: Any
    output: str


def _train(root, tiny_model_dir, monkeypatch, capsys, **hyperparameters) -> Run:
    import transformers

    from ftcloud_train.entrypoint import main as entrypoint_main

    paths = make_job(root, tiny_model_dir, task="classification", max_steps=10, per_device_train_batch_size=16,
                     max_length=32, **hyperparameters)
    write_jsonl(paths.channel("train") / "data.jsonl", keyword_rows(400, 0.1, seed=1))
    write_jsonl(paths.channel("validation") / "data.jsonl", keyword_rows(100, 0.5, seed=2))
    captured = {}
    original = transformers.Trainer.train

    def train(self, *args, **kwargs):
        captured["trainer"] = self
        return original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "train", train)
    monkeypatch.setenv(ROOT_ENV, str(paths.root))
    capsys.readouterr()
    code = entrypoint_main(["train"])
    assert code == 0, paths.failure_file.read_text() if paths.failure_file.exists() else f"exit {code}"
    return Run(paths, captured["trainer"], capsys.readouterr().out)


def _predict_from_artifacts(model_dir, base_dir, texts):
    """Predictions of the saved artifact (base + adapter + trained head) on held-out texts."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    names = classification.read_labels(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForSequenceClassification.from_pretrained(
        base_dir, num_labels=len(names), pad_token_id=tok.pad_token_id)
    model = PeftModel.from_pretrained(base, str(model_dir)).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return names, model(**batch).logits.argmax(-1).tolist()


@pytest.mark.slow
def test_class_weights_and_focal_loss_raise_minority_recall_on_imbalanced_data(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import torch

    plain = _train(tmp_path / "plain", tiny_model_dir, monkeypatch, capsys)
    weighted = _train(tmp_path / "weighted", tiny_model_dir, monkeypatch, capsys, class_weights="balanced")
    focal = _train(tmp_path / "focal", tiny_model_dir, monkeypatch, capsys, loss="focal")

    held_out = keyword_rows(100, 0.5, seed=2)
    texts, truth = [r["text"] for r in held_out], [r["label"] for r in held_out]
    recall = {}
    for name, run in (("plain", plain), ("weighted", weighted), ("focal", focal)):
        names, predicted = _predict_from_artifacts(run.paths.model_dir, tiny_model_dir, texts)
        assert names == ["alert", "plain"]
        hits = [p for p, t in zip(predicted, truth, strict=True) if t == "alert"]
        recall[name] = sum(names[p] == "alert" for p in hits) / len(hits)
        # The container's own evaluation printed the same recall, on a metric line SageMaker parses.
        assert metrics(run.paths)["eval_recall_0"] == pytest.approx(recall[name])
        line = re.compile(next(d["Regex"] for d in metric_definitions() if d["Name"] == "eval_min_recall"))
        assert [float(m.group(1)) for m in line.finditer(run.output)][-1] == pytest.approx(
            min(recall[name], metrics(run.paths)["eval_recall_1"]), abs=1e-5)
    print(f"minority recall: unweighted {recall['plain']:.2f}, balanced weights {recall['weighted']:.2f}, "
          f"focal {recall['focal']:.2f}")
    assert recall["weighted"] >= recall["plain"] + 0.15  # measured 0.30 -> 0.79
    assert recall["focal"] >= recall["plain"] + 0.1  # measured 0.30 -> 0.49

    # The Trainer's loss is the class-weighted loss: a known batch, computed by hand from its logits.
    trainer = weighted.trainer
    model = trainer.model.eval()
    batch = classification.Collator(0)(trainer.train_dataset[:12])
    counts = json.loads((weighted.paths.model_dir / "metrics.json").read_text())["data"][0]["class_counts"]
    w = [400 / (2 * counts["alert"]), 400 / (2 * counts["plain"])]
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch)).item()
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    log_p = torch.log_softmax(logits, -1)
    labels = batch["labels"].tolist()
    by_hand = sum(-w[y] * log_p[i, y].item() for i, y in enumerate(labels)) / len(labels)
    unweighted = sum(-log_p[i, y].item() for i, y in enumerate(labels)) / len(labels)
    assert loss == pytest.approx(by_hand, rel=1e-5) and abs(by_hand - unweighted) > 1e-3
    assert plain.trainer.compute_loss_func.weights is None

    saved = json.loads((weighted.paths.model_dir / classification.LABELS_FILE).read_text())
    assert saved == {"id2label": {"0": "alert", "1": "plain"}, "label2id": {"alert": 0, "plain": 1}}

    # merge_adapter: the merged plain model carries the trained head and predicts exactly as the adapter does.
    from transformers import AutoModelForSequenceClassification

    from ftcloud_train.modeling import save_merged

    save_merged(str(tiny_model_dir), weighted.paths.model_dir, tmp_path / "merged", "fp32", False,
                labels=["alert", "plain"], pad_token_id=0)
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    tok = weighted.trainer.processing_class
    with torch.no_grad():
        merged_predictions = merged(**tok(texts, padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
    assert merged_predictions == _predict_from_artifacts(weighted.paths.model_dir, tiny_model_dir, texts)[1]
    assert merged.config.id2label == {0: "alert", 1: "plain"}
