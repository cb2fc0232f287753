"""Which text fields of a canonical row are inputs (what the model reads) and which are outputs.

Rows arrive in the loader's canonical shape (``ftcloud_train.datasource.normalize``):

* ``chat``: ``{"messages": [{"role", "content"}, ...]}`` - system/user/tool turns are inputs,
  assistant turns outputs;
* ``alpaca``: ``instruction`` and ``input`` are inputs, ``output`` the output;
* ``prompt_completion``: ``prompt`` / ``completion``;
* ``text``: ``text`` (an input: there is no separate answer);
* ``classification``: ``text`` (input) and ``label`` (never rewritten).

Steps rewrite text through :func:`map_texts`, which returns a new row and leaves labels, roles
and any other keys as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

INPUT_FIELDS = {
    "alpaca": ("instruction", "input"),
    "prompt_completion": ("prompt",),
    "text": ("text",),
    "classification": ("text",),
}
OUTPUT_FIELDS = {
    "alpaca": ("output",),
    "prompt_completion": ("completion",),
    "text": (),
    "classification": (),
}
INPUT_ROLES = ("system", "user", "tool")


def map_texts(row: dict[str, Any], fmt: str, fn: Callable[[str], str], targets: str = "all") -> dict[str, Any]:
    """A copy of ``row`` with ``fn`` applied to its text fields (``targets``: ``inputs`` or ``all``)."""
    inputs_only = targets == "inputs"
    if fmt == "chat":
        messages = []
        for msg in row["messages"]:
            content = msg.get("content")
            if isinstance(content, str) and (not inputs_only or msg.get("role") in INPUT_ROLES):
                msg = {**msg, "content": fn(content)}
            messages.append(msg)
        return {**row, "messages": messages}
    out = dict(row)
    names = INPUT_FIELDS[fmt] if inputs_only else INPUT_FIELDS[fmt] + OUTPUT_FIELDS[fmt]
    for name in names:
        value = out.get(name)
        if isinstance(value, str):
            out[name] = fn(value)
    return out


def texts(row: dict[str, Any], fmt: str, targets: str = "all") -> list[str]:
    """The text fields of ``row`` (inputs first), as they are."""
    if fmt == "chat":
        inputs_only = targets == "inputs"
        return [m["content"] for m in row["messages"]
                if isinstance(m.get("content"), str) and (not inputs_only or m.get("role") in INPUT_ROLES)]
    names = INPUT_FIELDS[fmt] if targets == "inputs" else INPUT_FIELDS[fmt] + OUTPUT_FIELDS[fmt]
    return [row[n] for n in names if isinstance(row.get(n), str)]


def required_empty(row: dict[str, Any], fmt: str) -> bool:
    """True when a field the format needs is empty after cleaning (an empty answer teaches nothing)."""
    if fmt == "chat":
        return any(not (m.get("content") or "").strip() for m in row["messages"] if m.get("role") != "system")
    required = {"alpaca": ("instruction", "output"), "prompt_completion": ("prompt", "completion"),
                "text": ("text",), "classification": ("text",)}[fmt]
    return any(not str(row.get(n) or "").strip() for n in required)


def label_of(row: dict[str, Any], fmt: str) -> str | None:
    """The class of a classification row (as a string key), else ``None``."""
    if fmt != "classification":
        return None
    return str(row.get("label"))
