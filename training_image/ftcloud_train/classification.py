"""Classification as a trainer task: rows of ``text`` + ``label`` train a sequence-classification head.

The base model is loaded with ``AutoModelForSequenceClassification`` (a fresh ``score`` head on
the last non-pad token) through the same path as causal LMs (4-bit for QLoRA); PEFT's SEQ_CLS
task trains the head in full next to the adapter. This module is the task's own part:

* labels: the sorted label names of the training rows become ids 0..K-1 (numeric labels sort
  as numbers); the mapping is in the model config and in ``labels.json`` next to the weights;
* samples: ``input_ids`` (BOS as the tokenizer adds it, no EOS: the head reads the last real
  token), one integer ``labels``, ``length``; the over-length policy applies as for generation;
* the loss (:class:`ClassificationLoss`, handed to the Trainer as ``compute_loss_func``):
  cross-entropy or focal loss, each with optional class weights;
* evaluation: accuracy, macro-F1, recall of every class and the lowest of them
  (``eval_min_recall``: on imbalanced data the number that shows whether the minority is found).

Why weights or focal loss: with 90% of rows in one class, always answering that class already
scores 90% accuracy, and plain cross-entropy gets there first. Class weights make every class
count as much in total; focal loss scales each row by ``(1 - p_true) ** gamma`` so the many rows
the model already gets right stop dominating the gradient.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcloud.spec import parse_class_weights
from ftcloud_train.data import DataError, DataReport, Row, Tokenized, apply_length_policy
from ftcloud_train.datasource import normalize
from ftcloud_train.job import UserError

TEXT_FIELD = "text"
LABEL_FIELD = "label"
#: Written next to the model: ``{"id2label": {"0": name, ...}, "label2id": {name: 0, ...}}``.
LABELS_FILE = "labels.json"
#: Metrics the evaluation adds (the Trainer prefixes ``eval_``); per-class recall is ``recall_<id>``.
METRICS = ("accuracy", "macro_f1", "min_recall")


@dataclass
class ClassificationReport(DataReport):
    """The data report plus the class balance of the split."""

    labels: list[str] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        total = max(sum(self.class_counts.values()), 1)
        balance = ", ".join(f"{name}: {n} ({100 * n / total:.1f}%)" for name, n in self.class_counts.items())
        return (
            f"{self.split}: {self.rows} rows (classification, {len(self.labels)} labels) -> {self.samples} samples, "
            f"{self.tokens} tokens; over max_length={self.max_length}: {self.truncated} truncated, "
            f"{self.dropped_overlength} dropped; longest row {self.longest} tokens; classes {balance}"
            + (f" (e.g. {', '.join(self.examples)})" if self.examples else "")
        )


# ---------------------------------------------------------------------------- labels
def text_and_label(row: Row) -> tuple[str, str]:
    """The row's text and label name, checked by the one loader (errors name the row and field)."""
    canonical = normalize(row, "classification")
    return canonical[TEXT_FIELD], str(canonical[LABEL_FIELD]).strip()


def label_names(rows: Sequence[Row]) -> list[str]:
    """Sorted label names (numerically when every label is a whole number); at least two."""
    names = {text_and_label(row)[1] for row in rows}
    if len(names) < 2:
        raise DataError(
            f"task=classification needs at least two labels in the training rows; found {sorted(names)} "
            f"in {len(rows)} rows."
        )
    numeric = all(_is_int(n) for n in names)
    return sorted(names, key=(lambda n: (int(n), n)) if numeric else None)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def label_mapping(names: Sequence[str]) -> dict[str, dict]:
    return {"id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}


def save_labels(directory: Path, names: Sequence[str]) -> Path:
    from ftcloud_train.report import write_json_atomic

    path = Path(directory) / LABELS_FILE
    write_json_atomic(path, label_mapping(names))
    return path


def read_labels(directory: Path) -> list[str]:
    id2label = json.loads((Path(directory) / LABELS_FILE).read_text())["id2label"]
    return [id2label[str(i)] for i in range(len(id2label))]


# ---------------------------------------------------------------------------- samples
def build_split(
    rows: Sequence[Row], split: str, spec, tokenizer, labels: Sequence[str] | None = None
) -> tuple[list[dict], ClassificationReport]:
    """Tokenize ``rows`` into samples (``input_ids``, ``labels``: one id, ``length``).

    ``labels``: the training split's label names; ``None`` derives them from ``rows`` (the train
    split). A row whose label the training rows do not have is an error naming it.
    """
    names = list(labels) if labels is not None else label_names(rows)
    ids = {name: i for i, name in enumerate(names)}
    report = ClassificationReport(
        split=split, data_format="classification", rows=len(rows), max_length=spec.max_length, labels=names
    )
    counts: Counter[str] = Counter()
    samples: list[dict] = []
    for row in rows:
        text, label = text_and_label(row)
        if label not in ids:
            raise DataError(
                f"{row.source}: label {label!r} does not occur in the training rows (labels: {', '.join(names)}). "
                "Every class must have training rows."
            )
        input_ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        # labels mirror the ids only so that the shared over-length policy can cut the sample
        sample = apply_length_policy(
            Tokenized(input_ids, input_ids, row.source), spec.max_length, spec.overlength, report
        )
        if sample is None:
            continue
        counts[label] += 1
        report.tokens += len(sample.input_ids)
        samples.append({"input_ids": list(sample.input_ids), "labels": ids[label], "length": len(sample.input_ids)})
    report.samples = len(samples)
    report.target_tokens = len(samples)  # one target per row: its label
    report.class_counts = {name: counts[name] for name in names}
    if not samples:
        raise DataError(f"{split}: no usable samples out of {len(rows)} rows ({report.summary()}).")
    return samples, report


def resolve_batching(requested: str) -> str:
    """Classification rows are never packed: the head reads each row's own last token."""
    return "padded" if requested == "padded" else "length_grouped"


class Collator:
    """Right-pads ``input_ids`` (with an attention mask) and stacks the integer labels."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), longest), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[i, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
            attention_mask[i, :n] = 1
        labels = torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# ---------------------------------------------------------------------------- loss
def resolve_class_weights(value: str, names: Sequence[str], counts: Mapping[str, int]) -> list[float] | None:
    """One weight per label id from the spec's ``class_weights`` (None: unweighted).

    ``balanced`` gives ``n_rows / (n_classes * n_class_rows)`` (scikit-learn's formula): every
    class weighs as much in total, and the weights average to 1 over the rows.
    """
    parsed = parse_class_weights(value)
    if parsed == "none":
        return None
    if parsed == "balanced":
        total = sum(counts.get(n, 0) for n in names)
        return [total / (len(names) * counts[n]) if counts.get(n) else 0.0 for n in names]
    if isinstance(parsed, list):
        if len(parsed) != len(names):
            raise DataError(
                f"class_weights={value!r} gives {len(parsed)} weights for {len(names)} labels "
                f"({', '.join(names)}, in this order). Give one weight per label, or label=weight pairs."
            )
        return parsed
    unknown = sorted(set(parsed) - set(names))
    missing = [n for n in names if n not in parsed]
    if unknown or missing:
        raise DataError(
            f"class_weights={value!r} does not match the labels {', '.join(names)}"
            + (f": unknown {', '.join(unknown)}" if unknown else "")
            + (f"; missing {', '.join(missing)}" if missing else "")
            + ". Name every label once."
        )
    return [parsed[n] for n in names]


def classification_loss(logits, labels, weights=None, loss: str = "cross_entropy", gamma: float = 2.0,
                        num_items_in_batch=None):
    """Sum over rows of ``weight[y] * (1 - p_y) ** gamma * -log p_y`` (gamma 0 for cross-entropy),
    divided by the number of rows.

    Dividing by the row count (the Trainer's ``num_items_in_batch``: all rows of the accumulated
    batch on every device) rather than by the sum of weights keeps gradient accumulation and DDP
    exact; with ``balanced`` weights, which average to 1 over the data, the scale matches plain
    cross-entropy.
    """
    import torch

    log_p = torch.log_softmax(logits.float(), dim=-1).gather(1, labels.view(-1, 1)).squeeze(1)
    per_row = -log_p
    if loss == "focal":
        per_row = per_row * (1.0 - log_p.exp()).clamp(min=0.0).pow(gamma)
    if weights is not None:
        per_row = per_row * torch.as_tensor(weights, dtype=per_row.dtype, device=per_row.device)[labels]
    count = num_items_in_batch if num_items_in_batch is not None else labels.numel()
    if isinstance(count, torch.Tensor):
        count = count.to(per_row.device)
    return per_row.sum() / count


@dataclass
class ClassificationLoss:
    """The Trainer's ``compute_loss_func``: ``(outputs, labels, num_items_in_batch) -> loss``."""

    weights: list[float] | None = None
    loss: str = "cross_entropy"
    gamma: float = 2.0

    def __call__(self, outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
        return classification_loss(logits, labels, self.weights, self.loss, self.gamma, num_items_in_batch)


# ---------------------------------------------------------------------------- metrics
def scores(predictions: Sequence[int], labels: Sequence[int], num_labels: int) -> dict[str, float]:
    """Accuracy, macro-F1, per-class recall (``recall_<id>``) and the lowest recall."""
    tp = [0] * num_labels
    predicted = [0] * num_labels
    actual = [0] * num_labels
    for p, y in zip(predictions, labels, strict=True):
        predicted[p] += 1
        actual[y] += 1
        tp[p] += int(p == y)
    out: dict[str, float] = {"accuracy": sum(tp) / max(len(labels), 1)}
    f1s, recalls = [], []
    for k in range(num_labels):
        recall = tp[k] / actual[k] if actual[k] else 0.0
        precision = tp[k] / predicted[k] if predicted[k] else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        out[f"recall_{k}"] = recall
        if actual[k]:
            recalls.append(recall)  # a class absent from these rows has no recall to be low
    out["macro_f1"] = sum(f1s) / num_labels
    out["min_recall"] = min(recalls) if recalls else 0.0
    return out


def compute_metrics(num_labels: int):
    """The Trainer's ``compute_metrics`` over the evaluation rows."""

    def compute(eval_prediction) -> dict[str, float]:
        import numpy as np

        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        predictions = np.asarray(logits).argmax(-1).tolist()
        return scores(predictions, np.asarray(eval_prediction.label_ids).tolist(), num_labels)

    return compute


def metric_keys(logs: Mapping[str, Any]) -> list[str]:
    """The classification metrics present in a Trainer log (for the metric lines)."""
    return [
        key for key in logs
        if key.startswith("eval_") and (key[5:] in METRICS or key[5:].startswith("recall_"))
    ]


def trainer_kwargs(spec, names: Sequence[str], counts: Mapping[str, int]) -> dict[str, Any]:
    """What the recipe hands the Trainer for this task: the loss and the metrics."""
    try:
        weights = resolve_class_weights(spec.class_weights, names, counts)
    except DataError as exc:  # the hyperparameter does not fit the data: the user's to fix, no traceback
        raise UserError(f"hyperparameter {exc}") from None
    return {
        "compute_loss_func": ClassificationLoss(weights, spec.loss, spec.focal_gamma),
        "compute_metrics": compute_metrics(len(names)),
    }
