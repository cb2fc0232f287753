"""The data card: what a preparation read, did and wrote, as JSON (for tools) and Markdown (for people)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_card(root: Path, card: dict[str, Any], part: str | None = None) -> None:
    """``data_card.json`` + ``data_card.md`` (or ``cards/<part>.json`` + ``.md``) under ``root``."""
    stem = root / "cards" / part if part else root / "data_card"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(card, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    stem.with_suffix(".md").write_text(render_markdown(card))


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(card: dict[str, Any]) -> str:
    c = card["counts"]
    lines = [f"# Data card{' (' + card['part'] + ')' if card.get('part') else ''}", "",
             f"- Format: **{card['format']}**",
             f"- Rows read: {c['read']}, kept after cleaning: {c['kept']}, written: {c['written']}",
             f"- Content hash: `{card.get('content_hash', '')}`",
             f"- Cache key: `{card.get('cache_key', '')}` (pipeline version {card.get('pipeline_version', '')})", "",
             "## Sources", ""]
    lines += _table(("source", "file format", "rows", "sha256"),
                    [(s["source"], s["file_format"], s["rows"], s.get("sha256", "-")[:16]) for s in card["sources"]])
    lines += ["## Steps", ""]
    step_rows = [(f"changed: {k}", v) for k, v in c["changed"].items()]
    step_rows += [(f"dropped: {k}", v) for k, v in c["dropped"].items()]
    step_rows += [(f"redacted: {k}", v) for k, v in c.get("pii_redacted", {}).items()]
    lines += _table(("step", "rows"), step_rows or [("(nothing changed or dropped)", 0)])
    if card.get("glossary"):
        g = card["glossary"]
        lines += [f"## Glossary ({', '.join(g['sources'])})", ""]
        lines += _table(("abbreviation", "expanded"), list(g["replaced"].items()) or [("(none found)", 0)])
    lines += ["## Splits", ""]
    split_rows = []
    for name, s in card["splits"].items():
        ch = s.get("chars", {})
        tok = s.get("tokens", {})
        split_rows.append((name, s["rows"], ch.get("mean", "-"), ch.get("p50", "-"), ch.get("p99", "-"),
                           ch.get("max", "-"), tok.get("p50", "-"), tok.get("p99", "-"), tok.get("max", "-"),
                           ", ".join(f"{k}: {v}" for k, v in s.get("classes", {}).items()) or "-"))
    lines += _table(("file", "rows", "chars mean", "chars p50", "chars p99", "chars max", "tokens p50",
                     "tokens p99", "tokens max", "classes"), split_rows)
    if card.get("class_balance"):
        lines += ["## Class balance", ""]
        lines += _table(("stage", "classes"),
                        [("after cleaning", json.dumps(card["class_balance"]["after_cleaning"]))]
                        + [(f"{name}: {k.replace('_', ' ')}", json.dumps(v))
                           for name, post in card.get("post_processing", {}).items()
                           for k, v in post.items() if k.startswith("class_balance")])
    for name, post in card.get("post_processing", {}).items():
        if post.get("augmentation") or post.get("smote"):
            lines += [f"## Augmentation and features ({name})", ""]
            lines += [f"- {k}: {v}" for k, v in post.get("augmentation", {}).items()]
            if post.get("smote"):
                s = post["smote"]
                lines += [f"- SMOTE features: `{s['features']}` shape {s['shape']}, classes {json.dumps(s['class_balance_after'])}"]
            lines.append("")
    if card.get("token_cache"):
        tc = card["token_cache"]
        lines += ["## Token cache", "",
                  f"Tokenizer `{tc['tokenizer']}`, training settings `{json.dumps(tc['training'], sort_keys=True)}`. "
                  "A job launched with this tokenizer and these settings loads these samples instead of "
                  "tokenizing; other values tokenize again.", ""]
        lines += _table(("split", "samples", "file"),
                        [(name, e["samples"], e["file"]) for name, e in tc["entries"].items()])
    lines += ["## Options", "", "```json", json.dumps(card["options"], indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)
