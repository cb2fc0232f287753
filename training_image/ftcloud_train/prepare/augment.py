"""Augmentation of training rows: synonyms from a user dictionary, EDA swap/delete, back-translation.

Only the inputs are rewritten (user/system turns, prompt, instruction, input, classification
text): an answer rewritten by random synonyms would teach wrong answers. Augmented copies are
added to the training split only (never validation: that would leak), after de-duplication (a
paraphrase is a near duplicate by design).

Back-translation runs any seq2seq model id or path (``AutoModelForSeq2SeqLM``), there and back;
transformers and torch are imported only when it is asked for.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from ftcloud_train.prepare.fields import map_texts
from ftcloud_train.prepare.options import OptionsError

_TOKEN = re.compile(r"^(\W*)(\w[\w'-]*)(\W*)$")


def load_synonyms(path: str) -> dict[str, list[str]]:
    """``word: [synonym, ...]`` (keys matched case-insensitively); errors name the file and key."""
    from ftcloud_train.prepare.glossary import load_yaml_mapping

    data = load_yaml_mapping(Path(path).expanduser(), "synonym dictionary", "--synonyms")
    table: dict[str, list[str]] = {}
    for key, value in data.items():
        words = [value] if isinstance(value, str) else value
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise OptionsError(f"{path}: synonyms for {key!r} must be a word or a non-empty list of words, got {value!r}.")
        table[str(key).lower()] = [w.strip() for w in words]
    if not table:
        raise OptionsError(f"{path}: the synonym dictionary is empty.")
    return table


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def replace_synonyms(text: str, table: dict[str, list[str]], rng: random.Random, p: float = 0.5) -> tuple[str, int]:
    """Replace dictionary words (each with probability ``p``, at least one when any is present);
    punctuation and capitalisation around a word are kept. Returns (text, replacements)."""
    tokens = text.split(" ")
    eligible = []
    for i, tok in enumerate(tokens):
        m = _TOKEN.match(tok)
        if m and m.group(2).lower() in table:
            eligible.append((i, m))
    if not eligible:
        return text, 0
    chosen = [e for e in eligible if rng.random() < p] or [rng.choice(eligible)]
    for i, m in chosen:
        pre, word, post = m.groups()
        tokens[i] = pre + _match_case(rng.choice(table[word.lower()]), word) + post
    return " ".join(tokens), len(chosen)


def eda_swap_delete(text: str, rng: random.Random, alpha: float = 0.1) -> str:
    """EDA (Wei & Zou, 2019) random swap and random deletion: swap ``max(1, alpha*n)`` word pairs,
    then delete each word with probability ``alpha`` (never all of them)."""
    words = text.split()
    if len(words) < 2:
        return text
    for _ in range(max(1, int(alpha * len(words)))):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    kept = [w for w in words if rng.random() >= alpha]
    return " ".join(kept or [rng.choice(words)])


class BackTranslator:
    """Translate texts there (``forward``) and back (``backward``, default the same model)."""

    def __init__(self, forward: str, backward: str | None = None, *, batch_size: int = 16,
                 max_new_tokens: int = 512, seed: int = 0):
        self.forward_id, self.backward_id = forward, backward or forward
        self.batch_size, self.max_new_tokens, self.seed = batch_size, max_new_tokens, seed
        self._models: dict[str, Any] = {}

    def _load(self, model_id: str) -> tuple[Any, Any]:
        if model_id not in self._models:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(model_id)
                model = AutoModelForSeq2SeqLM.from_pretrained(model_id)
            except (OSError, ValueError) as exc:
                raise OptionsError(
                    f"--back-translate {model_id}: cannot load a seq2seq model and tokenizer from it ({exc}). "
                    "Give a local directory saved with save_pretrained, or a Hugging Face model id "
                    "(e.g. Helsinki-NLP/opus-mt-en-de) with network access."
                ) from None
            model.eval()
            self._models[model_id] = (tokenizer, model)
        return self._models[model_id]

    def _translate(self, model_id: str, texts: list[str], sample: bool) -> list[str]:
        import torch

        tokenizer, model = self._load(model_id)
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start:start + self.batch_size]
            enc = tokenizer(batch, return_tensors="pt", padding=True, truncation=True)
            # A translation is about as long as its source: room for 1.5x plus a margin, not a fixed cap
            # (a model that never stops would otherwise run to the cap on every row).
            limit = min(self.max_new_tokens, int(enc["input_ids"].shape[1] * 1.5) + 8)
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=limit, do_sample=sample, num_beams=1)
            out += [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return out

    def round_trip(self, texts: list[str], copy_index: int = 0) -> list[str]:
        """Paraphrases of ``texts``: greedy for the first copy, seeded sampling for later ones."""
        if not texts:
            return []
        import torch

        sample = copy_index > 0
        if sample:
            torch.manual_seed(self.seed + copy_index)
        pivot = self._translate(self.forward_id, texts, sample)
        back = self._translate(self.backward_id, pivot, sample)
        # An empty translation (a model that emits nothing) keeps the original rather than an empty row.
        return [b if b else t for b, t in zip(back, texts, strict=True)]


class Augmenter:
    """Applies the chosen augmentations to batches of rows; counts what it did."""

    def __init__(self, options: Any, fmt: str):
        self.fmt = fmt
        self.copies = options.augment_copies
        self.rng = random.Random(options.seed)
        self.synonyms = load_synonyms(options.synonyms) if options.synonyms else None
        self.eda = options.eda
        self.translator = (BackTranslator(options.back_translate, options.back_translate_return, seed=options.seed)
                           if options.back_translate else None)
        self.counts: Counter = Counter()

    def augment(self, rows: list[dict[str, Any]], copy_index: int) -> list[dict[str, Any]]:
        """One augmented copy of each row in ``rows``."""
        out = rows
        if self.translator is not None:
            originals: list[str] = []
            for row in rows:
                map_texts(row, self.fmt, lambda t: originals.append(t) or t, "inputs")
            todo = [t for t in originals if t.strip()]
            translated = iter(self.translator.round_trip(todo, copy_index))
            out = [map_texts(row, self.fmt, lambda t: next(translated) if t.strip() else t, "inputs") for row in out]
            self.counts["back_translated"] += len(todo)
        if self.synonyms is not None:
            out = [map_texts(row, self.fmt, self._synonyms, "inputs") for row in out]
        if self.eda:
            out = [map_texts(row, self.fmt, lambda t: eda_swap_delete(t, self.rng), "inputs") for row in out]
            self.counts["eda"] += len(out)
        self.counts["rows_added"] += len(out)
        return out

    def _synonyms(self, text: str) -> str:
        new, n = replace_synonyms(text, self.synonyms or {}, self.rng)
        self.counts["synonyms_replaced"] += n
        return new
