"""Merging the parts of a sharded preparation (one per Processing instance) into one output.

A sharded run leaves ``train/<part>.jsonl``, ``validation/<part>.jsonl`` (or
``folds/<k>/{train,validation}/<part>.jsonl``) and ``cards/<part>.json`` side by side. Training
can read ``train/`` and ``validation/`` as channels directly; :func:`merge_parts` also writes the
single-run layout (``train.jsonl``, ``validation.jsonl``, one data card with summed counts), e.g.
after downloading the prefix. Duplicates are removed within each shard, not across shards: the
card says so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from ftcloud_train.prepare.options import OptionsError


def _add(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            _add(total.setdefault(key, {}), value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value


def merge_parts(root: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Concatenate every part under ``root`` (in part-name order) into ``out``; returns the merged card."""
    from ftcloud_train.prepare.card import write_card
    from ftcloud_train.prepare.pipeline import _file_stats, _publish, content_hash

    root, out = Path(root), Path(out).expanduser().resolve()
    cards = sorted((root / "cards").glob("*.json"))
    if not cards:
        raise OptionsError(f"{root}: no cards/<part>.json here; this is not the output of a sharded 'data prepare'.")
    parts = [json.loads(p.read_text()) for p in cards]
    fmt = parts[0]["format"]
    if any(p["format"] != fmt for p in parts):
        raise OptionsError(f"{root}: the parts have different formats ({sorted({p['format'] for p in parts})}).")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        merged_files: Counter = Counter()
        for split_dir in sorted({p.parent for p in root.rglob("*.jsonl")}):
            rel = split_dir.relative_to(root).as_posix()  # train | validation | folds/2/train
            target = tmp / f"{rel}.jsonl"
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as fh:
                for part_file in sorted(split_dir.glob("*.jsonl")):
                    with open(part_file, "rb") as src:
                        shutil.copyfileobj(src, fh)
                    merged_files[target.relative_to(tmp).as_posix()] += 1
        counts: dict[str, Any] = {}
        for p in parts:
            _add(counts, p["counts"])
        card = {
            "format": fmt,
            "parts": [p.get("part") for p in parts],
            "sources": [s for p in parts for s in p["sources"]],
            "options": parts[0]["options"],
            "counts": counts,
            "glossary": None,
            "splits": {rel: _file_stats(tmp / rel, fmt, parts[0]["options"].get("tokenizer"))
                       for rel in sorted(merged_files)},
            "post_processing": {},
            "notes": ["Merged from per-instance parts: duplicates were removed within each part, not across parts."],
        }
        glossaries = [p["glossary"] for p in parts if p.get("glossary")]
        if glossaries:
            replaced: Counter = Counter()
            for g in glossaries:
                replaced.update(g["replaced"])
            card["glossary"] = {"sources": glossaries[0]["sources"], "replaced": dict(replaced.most_common())}
        if fmt == "classification":
            balance: Counter = Counter()
            for p in parts:
                balance.update(p.get("class_balance", {}).get("after_cleaning", {}))
            card["class_balance"] = {"after_cleaning": dict(sorted(balance.items()))}
        card["content_hash"] = content_hash(tmp)
        write_card(tmp, card)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card
