"""Text cleaning: pure ``str -> str`` functions, each cheap when there is nothing to do.

The pipeline applies them field by field (:func:`ftcloud_train.prepare.fields.map_texts`) and
counts the rows each one changed.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter
from functools import lru_cache

# Control characters except tab and newline (C0, DEL, C1), zero-width and BOM characters.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_SPACE_AROUND_NEWLINE = re.compile(r" *\n *")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_unicode(text: str, form: str) -> str:
    """NFC (compose; safe for every language) or NFKC (also folds compatibility forms: ligatures,
    full-width letters, superscripts). ``none`` leaves the text alone."""
    if form == "none" or text.isascii():
        return text
    return unicodedata.normalize(form, text)


def clean_whitespace(text: str) -> str:
    """Drop control and zero-width characters, normalise newlines, collapse runs of spaces and
    of blank lines, strip the ends. Keeps single newlines (paragraphs, code, lists)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Fast paths (most rows are clean): printable text has no control or zero-width characters,
    # and plain ASCII text without double spaces or tabs has no runs to collapse.
    if not text.isprintable():
        text = _CONTROL.sub("", text)
    if not text.isascii() or "  " in text or "\t" in text:
        text = _SPACES.sub(" ", text)
    if "\n" in text:
        text = _SPACE_AROUND_NEWLINE.sub("\n", text)
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


_SCRIPT_STYLE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_BLOCK_TAG = re.compile(r"<\s*(br|/p|/div|/li|/h[1-6]|/tr)\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<!--.*?-->", re.DOTALL)


def strip_html(text: str) -> str:
    """Remove tags (script/style with their contents), turn block ends into newlines, decode entities.
    A lone ``<`` as in ``a < b`` is not a tag and stays."""
    if "<" not in text and "&" not in text:
        return text
    text = _SCRIPT_STYLE.sub("", text)
    text = _BLOCK_TAG.sub("\n", text)
    text = _TAG.sub("", text)
    return html.unescape(text)


# ---------------------------------------------------------------------- PII
EMAIL_TOKEN = "[EMAIL]"
PHONE_TOKEN = "[PHONE]"
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
# A phone-shaped run: optional +country, digit groups joined by space, dot, dash or parentheses.
_PHONE = re.compile(r"[+(\d][\d\s().-]{6,}\d(?!\w)")  # the left boundary is checked in redact_pii (faster)


def _is_phone(candidate: str) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    # 9-15 digits (E.164 allows 15); a date (2024-01-02) or a decimal number is not a phone number.
    if not 9 <= digits <= 15:
        return False
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", candidate.strip()) or re.fullmatch(r"\d+\.\d+", candidate):
        return False
    return candidate.startswith("+") or any(sep in candidate for sep in " -.(") or 10 <= digits <= 11


def redact_pii(text: str, counts: Counter) -> str:
    """Replace e-mail addresses and phone numbers; ``counts['email'|'phone']`` grows by what was found."""
    if "@" in text:
        text, n = _EMAIL.subn(EMAIL_TOKEN, text)
        counts["email"] += n

    def phone(match: re.Match) -> str:
        start, candidate = match.start(), match.group(0)
        if start and (match.string[start - 1].isalnum() or match.string[start - 1] in "_+"):
            # Starts inside a word or number ("ID12 555-123-4567"): look again after the first separator.
            cut = next((i for i in range(1, len(candidate))
                        if not candidate[i - 1].isalnum() and candidate[i] in "+(0123456789"), None)
            return candidate if cut is None else candidate[:cut] + _PHONE.sub(phone, candidate[cut:])
        if _is_phone(candidate):
            counts["phone"] += 1
            return PHONE_TOKEN
        return match.group(0)

    return _PHONE.sub(phone, text)


# ---------------------------------------------------------------------- stopwords
_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


@lru_cache(maxsize=1)
def english_stopwords() -> frozenset[str]:
    """scikit-learn's English stopword list (318 words)."""
    from sklearn.feature_extraction._stop_words import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def remove_stopwords(text: str, stopwords: frozenset[str] | None = None) -> str:
    """Classification only: drop stopwords (case-insensitive), keep the other words in order.
    Never for generative data: the model would learn to write without them."""
    stop = stopwords if stopwords is not None else english_stopwords()
    kept = [w for w in _WORD.findall(text) if w.lower() not in stop]
    return re.sub(r" ([^\w\s])", r"\1", " ".join(kept))
