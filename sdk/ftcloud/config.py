"""The user config file: which backend and platform stack commands use by default.

Lives at ``$FTCLOUD_HOME/config.json`` (``~/.ftcloud`` unless ``FTCLOUD_HOME`` is set).
``ftcloud platform use STACK`` writes it; ``ftcloud platform use local`` switches back.
It also caches the stack outputs last discovered, so ``launch --dry-run`` needs no AWS call.
Import-light (json only).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftcloud.errors import UsageError

HOME_ENV = "FTCLOUD_HOME"
_FIX_HINT = ("Fix or delete the file: without it ftcloud uses the local backend, "
             "and 'ftcloud platform use STACK' writes a valid one.")


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def ftcloud_home() -> Path:
    """Root of the user's ftcloud state (config file, local job store)."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".ftcloud").expanduser()


def config_path() -> Path:
    return ftcloud_home() / "config.json"


@dataclass
class UserConfig:
    backend: str = "local"
    stack: str | None = None
    region: str | None = None
    profile: str | None = None
    #: Outputs of ``stack`` as last read from CloudFormation: {"stack", "region", "outputs", "fetched_at"}.
    platform_cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls) -> UserConfig:
        path = config_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"{path}: cannot read the ftcloud config ({exc}).",
                hint=_FIX_HINT,
            ) from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> UserConfig:
        """Check the shape of a parsed config: a hand-edited file must fail here, naming the field,
        not later as an AttributeError deep inside a command."""
        if not isinstance(data, dict):
            raise UsageError(
                f"{path}: the ftcloud config must be a JSON object ({{\"backend\": \"local\", ...}}), "
                f"found a JSON {_json_type(data)}.",
                hint=_FIX_HINT,
            )
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("backend", "stack", "region", "profile"):
            value = known.get(key)
            if value is not None and not isinstance(value, str):
                raise UsageError(
                    f"{path}: field '{key}' must be a string or null, found a JSON {_json_type(value)}.",
                    hint=_FIX_HINT,
                )
        if known.get("platform_cache") is None:
            known.pop("platform_cache", None)
        elif not isinstance(known["platform_cache"], dict):
            raise UsageError(
                f"{path}: field 'platform_cache' must be a JSON object, found a JSON "
                f"{_json_type(known['platform_cache'])}.",
                hint=_FIX_HINT,
            )
        if known.get("backend") is None:
            known.pop("backend", None)
        return cls(**known)

    def save(self) -> Path:
        path = config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic replace: a crash never leaves a half-written config.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(asdict(self), fh, indent=2, sort_keys=True, default=str)
        os.replace(tmp, path)
        return path

    def cached_outputs(self, stack: str, region: str | None) -> dict[str, str] | None:
        cache = self.platform_cache or {}
        if cache.get("stack") == stack and (region is None or cache.get("region") == region):
            return dict(cache.get("outputs") or {})
        return None
