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
                hint="Fix or delete the file, then run 'ftcloud platform use STACK' again.",
            ) from None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
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
