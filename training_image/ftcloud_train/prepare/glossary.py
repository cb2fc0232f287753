"""Domain abbreviation expansion from YAML glossaries ("MI" -> "Myocardial Infarction").

Rules that keep it safe on real text:

* whole words only: a key matches where neither side touches a letter, digit or underscore, so
  "MI" never fires inside "MIT", "MIND", "admin" or "MI5";
* exact case unless the entry says ``ignore_case: true`` ("mi" in Spanish text stays);
* an abbreviation already explained, as in "Myocardial Infarction (MI)", is left alone;
* longest key first, one pass: an expansion is never expanded again.

Glossary files::

    name: cardiology                  # optional
    abbreviations:
      MI: Myocardial Infarction
      prn: {expansion: as needed, ignore_case: true}
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcloud_train.prepare.options import BUILTIN_GLOSSARIES, OptionsError

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def load_yaml_mapping(path: Path, what: str, flag: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping; errors name the file, line and flag."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise OptionsError(f"{flag} {path}: no such file. Give the path of a {what} YAML file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionsError(f"{flag} {path}: cannot read it ({exc}).") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise OptionsError(f"{where}: invalid YAML in the {what} ({getattr(exc, 'problem', exc)}).") from None
    if not isinstance(data, dict):
        raise OptionsError(f"{path}: a {what} must be a YAML mapping, got {type(data).__name__}.")
    return data


@dataclass
class Glossary:
    """Abbreviation -> expansion, with per-entry case handling and replacement counts."""

    entries: dict[str, tuple[str, bool]] = field(default_factory=dict)  # key -> (expansion, ignore_case)
    sources: list[str] = field(default_factory=list)
    replaced: Counter = field(default_factory=Counter)

    @classmethod
    def load(cls, names: list[str]) -> Glossary:
        """Merge glossaries in order (``medical`` or a file path); later ones win on a key."""
        glossary = cls()
        for name in names:
            path = ASSETS / BUILTIN_GLOSSARIES[name] if name in BUILTIN_GLOSSARIES else Path(name).expanduser()
            data = load_yaml_mapping(path, "glossary", "--glossary")
            entries = data.get("abbreviations")
            if not isinstance(entries, dict) or not entries:
                raise OptionsError(f"{path}: expected a non-empty 'abbreviations:' mapping (KEY: expansion).")
            for key, value in entries.items():
                glossary.entries[str(key)] = _entry(path, str(key), value)
            glossary.sources.append(name if name in BUILTIN_GLOSSARIES else str(path))
        glossary._compile()
        return glossary

    @classmethod
    def from_mapping(cls, entries: dict[str, Any]) -> Glossary:
        glossary = cls({str(k): _entry(Path("<mapping>"), str(k), v) for k, v in entries.items()})
        glossary._compile()
        return glossary

    def _compile(self) -> None:
        self._exact: dict[str, str] = {k: e for k, (e, ic) in self.entries.items() if not ic}
        self._folded: dict[str, tuple[str, str]] = {k.lower(): (k, e) for k, (e, ic) in self.entries.items() if ic}
        self._patterns = []
        for table, flags in ((self._exact, 0), ({k: k for k, _ in self._folded.values()}, re.IGNORECASE)):
            if table:
                keys = sorted(table, key=len, reverse=True)
                alternation = "|".join(re.escape(k) for k in keys)
                # The left word boundary is checked in _replace: a leading lookbehind makes the
                # regex engine try it at every position, 3x slower on long texts.
                self._patterns.append(re.compile(rf"(?:{alternation})(?!\w)", flags))

    def expand(self, text: str) -> str:
        """``text`` with every glossary abbreviation expanded (counted in :attr:`replaced`)."""
        for pattern in self._patterns:
            text = pattern.sub(self._replace, text)
        return text

    def _replace(self, match: re.Match) -> str:
        found = match.group(0)
        start = match.start()
        if start and (match.string[start - 1].isalnum() or match.string[start - 1] == "_"):
            return found  # inside a word: "admin", "SMILE"
        if found in self._exact:
            key, expansion = found, self._exact[found]
        else:
            key, expansion = self._folded[found.lower()]
        before = match.string[max(0, start - len(expansion) - 2):start]
        if before.lower() == f"{expansion} (".lower():  # "Myocardial Infarction (MI)": already explained
            return found
        self.replaced[key] += 1
        return expansion


def _entry(path: Path, key: str, value: Any) -> tuple[str, bool]:
    if isinstance(value, str) and value.strip():
        return value.strip(), False
    if isinstance(value, dict) and isinstance(value.get("expansion"), str) and value["expansion"].strip():
        return value["expansion"].strip(), bool(value.get("ignore_case", False))
    raise OptionsError(
        f"{path}: abbreviations.{key} must be a non-empty string or {{expansion: ..., ignore_case: true}}, "
        f"got {value!r}."
    )
