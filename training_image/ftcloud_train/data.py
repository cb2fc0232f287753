"""Training data: read a channel, detect and validate its row format, tokenize with loss masks.

Files: ``.jsonl`` holds one JSON object per line. ``.json`` holds one JSON document, pretty-printed
or not: an array of row objects, a single row object, or an object with exactly one list of rows
(``{"data": [...]}``); a ``.json`` file that is JSON Lines after all (one object per line) is read
as such. ``.csv`` and ``.parquet`` hold one row per record.

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
samples are counted and named in the data report. Tokenization happens in memory on every run:
there is no on-disk preprocessing cache to go stale.

Why no stopword removal, stemming or SMOTE (which classic NLP guides recommend): an LLM is
trained on natural text and must generate natural text; removing words teaches it to write
broken sentences, and SMOTE interpolates feature vectors, which has no meaning for token
sequences. Clean by deduplicating, fixing encodings and dropping empty rows; balance classes by
re-sampling rows or weighting the loss.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IGNORE_INDEX = -100
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
FORMAT_KEYS = {
    "chat": ("messages",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
CHAT_ROLES = ("system", "user", "assistant", "tool")


class DataError(ValueError):
    """The data is wrong in a way the user must fix; the message names file, line and field."""


@dataclass
class Row:
    data: dict[str, Any]
    source: str  # "train/data.jsonl:17"


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
def data_files(directory: Path) -> list[Path]:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    return files


def read_rows(directory: Path, channel: str) -> list[Row]:
    """All rows of every data file under ``directory``, each tagged with ``file:line``."""
    if not directory.is_dir():
        raise DataError(f"channel '{channel}' is missing: expected a directory at {directory}.")
    files = data_files(directory)
    if not files:
        found = ", ".join(sorted(p.name for p in directory.iterdir())[:5]) or "nothing"
        raise DataError(
            f"channel '{channel}' ({directory}) has no data files; found {found}. "
            f"Provide {', '.join(DATA_SUFFIXES)} files."
        )
    rows: list[Row] = []
    for path in files:
        label = f"{channel}/{path.relative_to(directory)}"
        rows.extend(_read_file(path, label))
    if not rows:
        raise DataError(f"channel '{channel}' has data files but no rows: {', '.join(p.name for p in files)}.")
    return rows


def _read_file(path: Path, label: str) -> Iterable[Row]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _read_json_lines(path, label)
    elif suffix == ".json":
        yield from _read_json_document(path, label)
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            for lineno, obj in enumerate(csv.DictReader(fh), 2):
                yield Row(dict(obj), f"{label}:{lineno}")
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, obj in enumerate(pq.read_table(path).to_pylist()):
            yield Row(obj, f"{label}[{i}]")


def _read_json_lines(path: Path, label: str, not_one_document_at: int | None = None) -> Iterable[Row]:
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                if not_one_document_at is None:
                    hint = ("Each line of a .jsonl file must be one JSON object; "
                            "for a pretty-printed file use the .json suffix.")
                else:
                    hint = (f"A .json file must be one JSON document (an array of rows, one row, or an object "
                            f"with one list of rows), but this one goes on after its first value "
                            f"(line {not_one_document_at}); nor is it JSON Lines (one object per line).")
                raise DataError(f"{label}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno}). {hint}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{label}:{lineno}: expected a JSON object, got {type(obj).__name__}.")
            yield Row(obj, f"{label}:{lineno}")


def _read_json_document(path: Path, label: str) -> Iterable[Row]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # more than one value: JSON Lines saved under .json
            yield from _read_json_lines(path, label, not_one_document_at=exc.lineno)
            return
        raise DataError(f"{label}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno}).") from None
    if isinstance(data, dict) and not _is_row(data):
        lists = [key for key, value in data.items() if isinstance(value, list)]
        if len(lists) != 1:
            raise DataError(
                f"{label}: the JSON object (keys {sorted(data)}) is not a row (no format's keys: "
                + "; ".join(f"{fmt} ({', '.join(keys)})" for fmt, keys in FORMAT_KEYS.items())
                + f") and has {len(lists)} lists instead of exactly one list of rows. "
                "Make the file an array of rows, or an object whose one list holds the rows."
            )
        prefix = f"{label}[{json.dumps(lists[0])}]"
        entries = [(f"{prefix}[{i}]", obj) for i, obj in enumerate(data[lists[0]])]
    elif isinstance(data, dict):
        entries = [(label, data)]
    elif isinstance(data, list):
        entries = [(f"{label}[{i}]", obj) for i, obj in enumerate(data)]
    else:
        raise DataError(f"{label}: expected an array of row objects, got a JSON {type(data).__name__}.")
    for source, obj in entries:
        if not isinstance(obj, dict):
            raise DataError(f"{source}: expected a JSON object (a row), got {type(obj).__name__}.")
        yield Row(obj, source)


def _is_row(obj: dict) -> bool:
    """A row of some format (``{"messages": [...]}`` is a row, not a wrapper of rows)."""
    return any(all(k in obj for k in keys) for keys in FORMAT_KEYS.values())


# ---------------------------------------------------------------------- formats
def detect_format(rows: list[Row], requested: str) -> str:
    if requested != "auto":
        return requested
    first = rows[0]
    for fmt, keys in FORMAT_KEYS.items():
        if all(k in first.data for k in keys):
            return fmt
    raise DataError(
        f"{first.source}: cannot tell the row format from its keys {sorted(first.data)}. Expected one of: "
        + "; ".join(f"{fmt} ({', '.join(keys)})" for fmt, keys in FORMAT_KEYS.items())
        + ". Rename the fields, or set data_format explicitly."
    )


def to_messages(row: Row, fmt: str) -> list[dict[str, str]] | None:
    """Chat messages for chat/alpaca rows (validated); ``None`` for prompt/completion and text."""
    data = row.data
    for key in FORMAT_KEYS[fmt]:
        if key not in data or data[key] is None:
            raise DataError(
                f"{row.source}: missing field '{key}' for data_format={fmt} "
                f"(row has {sorted(data)}). Fix the row or set data_format to match all rows."
            )
    if fmt == "chat":
        messages = data["messages"]
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{row.source}: field 'messages' must be a non-empty list of {{role, content}} objects.")
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
                raise DataError(f"{row.source}: messages[{i}] must be an object with 'role' and 'content'.")
            if msg["role"] not in CHAT_ROLES:
                raise DataError(
                    f"{row.source}: messages[{i}].role is {msg['role']!r}; allowed: {', '.join(CHAT_ROLES)}."
                )
            if not isinstance(msg["content"], str):
                raise DataError(f"{row.source}: messages[{i}].content must be a string.")
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{row.source}: no 'assistant' message: there is nothing to learn from this row.")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    if fmt == "alpaca":
        for key in ("instruction", "input", "output"):
            if key in data and data[key] is not None and not isinstance(data[key], str):
                raise DataError(f"{row.source}: field '{key}' must be a string.")
        prompt = data["instruction"].strip()
        if data.get("input"):
            prompt = f"{prompt}\n\n{data['input'].strip()}"
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": data["output"]}]
    for key in FORMAT_KEYS[fmt]:
        if not isinstance(data[key], str):
            raise DataError(f"{row.source}: field '{key}' must be a string, got {type(data[key]).__name__}.")
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


def build_split(rows: list[Row], split: str, spec, tokenizer) -> tuple[list[dict], DataReport]:
    """Tokenize ``rows`` into training samples (``input_ids``, ``labels``, ``length``)."""
    fmt = detect_format(rows, spec.data_format)
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
