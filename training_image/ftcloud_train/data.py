"""Training data: read a channel, detect and validate its row format, tokenize with loss masks.

Files are read by :mod:`ftcloud_train.datasource`, the loader the SDK validates with before launch:
``.jsonl``, ``.json`` (an array of rows, one row, or an object with one list of rows; JSON Lines
saved as ``.json`` too), ``.csv``, ``.tsv`` and ``.parquet``, streamed, every row tagged ``file:line``.

Supported row formats:

* ``chat``: ``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}``
* ``alpaca``: ``{"instruction": ..., "input": ..., "output": ...}`` (``input`` optional)
* ``prompt_completion``: ``{"prompt": ..., "completion": ...}``
* ``text``: ``{"text": ...}``

Chat and alpaca rows go through the tokenizer's chat template; the loss covers only the
assistant / completion tokens (``completion_only_loss``), and every sample ends with EOS so
the fine-tuned model learns to stop, except one that ``overlength=truncate`` cuts: it keeps its
first ``max_length`` tokens and no EOS, because an EOS at an arbitrary cut would teach the model
to stop mid-answer (and, as the cut always falls at ``max_length``, to stop by length). Such
samples are counted and named in the data report. The recipe keeps the samples in the token cache
(:mod:`ftcloud_train.token_cache`), keyed by everything that decides them, so it never goes stale.
Classification rows (``text`` + ``label``) go to :mod:`ftcloud_train.classification`.

Why no stopword removal, stemming or SMOTE (which classic NLP guides recommend): an LLM is
trained on natural text and must generate natural text; removing words teaches it to write
broken sentences, and SMOTE interpolates feature vectors, which has no meaning for token
sequences. Clean by deduplicating, fixing encodings and dropping empty rows; balance classes by
re-sampling rows or weighting the loss.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# One parser for the SDK and the container: reading, formats and row checks live in datasource.
from ftcloud_train.datasource import CHAT_ROLES, DATA_SUFFIXES, DataError, iter_records, normalize  # noqa: F401
from ftcloud_train.datasource import Record as Row
from ftcloud_train.datasource import detect_format as _detect_format

IGNORE_INDEX = -100


@dataclass
class DataReport:
    """What happened to the rows: always reported, never silent."""

    split: str
    data_format: str = ""
    rows: int = 0
    samples: int = 0
    truncated: int = 0
    dropped_overlength: int = 0
    dropped_no_target: int = 0
    tokens: int = 0
    target_tokens: int = 0
    max_length: int = 0
    longest: int = 0
    examples: list[str] = field(default_factory=list)  # a few row locations that were affected

    def summary(self) -> str:
        return (
            f"{self.split}: {self.rows} rows ({self.data_format}) -> {self.samples} samples, "
            f"{self.tokens} tokens ({self.target_tokens} trained on); over max_length={self.max_length}: "
            f"{self.truncated} truncated, {self.dropped_overlength} dropped; "
            f"{self.dropped_no_target} dropped with no completion tokens; longest row {self.longest} tokens"
            + (" (truncated samples end without EOS: they do not teach stopping)" if self.truncated else "")
            + (f" (e.g. {', '.join(self.examples)})" if self.examples else "")
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


# ---------------------------------------------------------------------- reading
def read_rows(directory: Path, channel: str) -> list[Row]:
    """All rows of every data file under ``directory``, each tagged with ``channel/file:line``."""
    if not directory.is_dir():
        raise DataError(f"channel '{channel}' is missing: expected a directory at {directory}.")
    rows = list(iter_records([directory], label=channel))
    if not rows:
        raise DataError(f"channel '{channel}' ({directory}) has data files but no rows.")
    return rows


# ---------------------------------------------------------------------- formats
def detect_format(rows: list[Row], requested: str) -> str:
    """The row format of ``rows`` (see :func:`ftcloud_train.datasource.detect_format`)."""
    return _detect_format(rows, requested)


def to_messages(row: Row, fmt: str) -> list[dict[str, str]] | None:
    """Chat messages for chat/alpaca rows (validated); ``None`` for the other formats."""
    canonical = normalize(row, fmt)
    if fmt == "chat":
        return canonical["messages"]
    if fmt == "alpaca":
        prompt = canonical["instruction"].strip()
        if canonical["input"]:
            prompt = f"{prompt}\n\n{canonical['input'].strip()}"
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": canonical["output"]}]
    return None


# ---------------------------------------------------------------------- tokenization
@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]
    source: str


def tokenize_row(row: Row, fmt: str, tokenizer, completion_only: bool) -> Tokenized:
    messages = to_messages(row, fmt)
    if messages is not None and getattr(tokenizer, "chat_template", None):
        return _tokenize_chat(row, messages, tokenizer, completion_only)
    if messages is not None:  # no chat template: a plain instruction layout
        prompt = "".join(f"### {m['role'].capitalize()}:\n{m['content']}\n\n" for m in messages[:-1])
        prompt += "### Assistant:\n"
        return _tokenize_pair(row, prompt, messages[-1]["content"], tokenizer, completion_only)
    if fmt == "prompt_completion":
        return _tokenize_pair(row, row.data["prompt"], row.data["completion"], tokenizer, completion_only)
    return _tokenize_pair(row, "", row.data["text"], tokenizer, completion_only=False)


def _tokenize_pair(row: Row, prompt: str, completion: str, tokenizer, completion_only: bool) -> Tokenized:
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"] if prompt else []
    if not prompt_ids and tokenizer.bos_token_id is not None and _adds_bos(tokenizer):
        prompt_ids = [tokenizer.bos_token_id]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    completion_ids = _with_eos(completion_ids, tokenizer)
    ids = prompt_ids + completion_ids
    labels = ([IGNORE_INDEX] * len(prompt_ids) if completion_only else list(prompt_ids)) + completion_ids
    return Tokenized(ids, labels, row.source)


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def _with_eos(ids: list[int], tokenizer) -> list[int]:
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        return ids + [eos]
    return ids


def _render(tokenizer, messages, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _tokenize_chat(row: Row, messages, tokenizer, completion_only: bool) -> Tokenized:
    """Render the conversation once; mark the character spans of assistant turns as targets.

    Each assistant span runs from the end of the rendered prefix (with the generation prompt)
    to the end of the rendered conversation including that turn, so it covers the content and
    the template's end-of-turn token. This works for any prefix-stable chat template.
    """
    text = _render(tokenizer, messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        upto = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not text.startswith(upto) or not upto.startswith(prefix):
            raise DataError(
                f"{row.source}: the tokenizer's chat template is not prefix-stable, so assistant turns "
                "cannot be located for completion-only loss. Set completion_only_loss=false."
            )
        spans.append((len(prefix), len(upto)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    if completion_only:
        labels = [
            tok if any(start < end and s <= start < e for s, e in spans) else IGNORE_INDEX
            for tok, (start, end) in zip(ids, offsets, strict=True)
        ]
    else:
        labels = list(ids)
    # The model must learn to stop: make sure the sample ends with EOS, and that it is a target.
    eos = tokenizer.eos_token_id
    if eos is not None and eos not in ids[-2:]:
        ids.append(eos)
        labels.append(eos)
    return Tokenized(ids, labels, row.source)


def apply_length_policy(sample: Tokenized, max_length: int, policy: str, report: DataReport) -> Tokenized | None:
    n = len(sample.input_ids)
    report.longest = max(report.longest, n)
    if n <= max_length:
        return sample
    if policy == "error":
        raise DataError(
            f"{sample.source}: {n} tokens, longer than max_length={max_length}. Raise max_length, "
            "or set overlength=truncate (keep the first max_length tokens) or overlength=drop."
        )
    if len(report.examples) < 3:
        report.examples.append(sample.source)
    if policy == "drop":
        report.dropped_overlength += 1
        return None
    report.truncated += 1
    return Tokenized(sample.input_ids[:max_length], sample.labels[:max_length], sample.source)


def build_split(rows: list[Row], split: str, spec, tokenizer, labels: list[str] | None = None
                ) -> tuple[list[dict], DataReport]:
    """Tokenize ``rows`` into training samples (``input_ids``, ``labels``, ``length``).

    ``task=classification`` goes to :func:`ftcloud_train.classification.build_split` (``labels``:
    the training split's label names, for the validation split)."""
    if spec.task == "classification":
        from ftcloud_train import classification

        return classification.build_split(rows, split, spec, tokenizer, labels)
    fmt = detect_format(rows, spec.data_format)
    if fmt == "classification":
        raise DataError(
            f"{rows[0].source}: the rows are classification rows ('text' + 'label') but task={spec.task}. "
            "Set task: classification to train a classifier, or drop the 'label' field to train on the text."
        )
    report = DataReport(split=split, data_format=fmt, rows=len(rows), max_length=spec.max_length)
    samples: list[dict] = []
    for row in rows:
        tok = tokenize_row(row, fmt, tokenizer, spec.completion_only_loss)
        tok = apply_length_policy(tok, spec.max_length, spec.overlength, report)
        if tok is None:
            continue
        targets = sum(1 for t in tok.labels if t != IGNORE_INDEX)
        if targets == 0:
            report.dropped_no_target += 1
            continue
        report.tokens += len(tok.input_ids)
        report.target_tokens += targets
        samples.append({"input_ids": tok.input_ids, "labels": tok.labels, "length": len(tok.input_ids)})
    report.samples = len(samples)
    if not samples:
        raise DataError(
            f"{split}: no usable samples out of {len(rows)} rows ({report.summary()}). "
            "Raise max_length or check that rows have completions."
        )
    return samples, report


def split_holdout(rows: list[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """A deterministic held-out split (at least one row each way when there is room)."""
    if fraction <= 0 or len(rows) < 2:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(rows) - 1, max(1, math.floor(len(rows) * fraction)))
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]
