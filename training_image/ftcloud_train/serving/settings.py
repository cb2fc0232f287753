"""The server's knobs, read once from the environment (names and defaults: ``ftcloud.contract``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ftcloud.contract import (
    DEFAULT_SERVE_HOST,
    DEFAULT_SERVE_PORT,
    ROOT_ENV,
    SERVE_ENV_DEFAULTS,
    SERVE_HOST_ENV,
    SERVE_PORT_ENV,
    ContainerPaths,
)

LOAD_IN_CHOICES = ("auto", "none", "8bit", "4bit")


class SettingsError(ValueError):
    """An environment variable has a value the server cannot use."""


def _env(name: str, env: dict[str, str]) -> str:
    return env.get(name, SERVE_ENV_DEFAULTS.get(name, "")).strip()


def _number(name: str, env: dict[str, str], kind: type, minimum: float):
    raw = _env(name, env)
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a{'n integer' if kind is int else ' number'}; "
                            f"unset it for the default {SERVE_ENV_DEFAULTS[name]}") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be >= {minimum}; unset it for the default {SERVE_ENV_DEFAULTS[name]}")
    return value


@dataclass(frozen=True)
class ServeSettings:
    host: str
    port: int
    model_dir: Path
    ml_root: Path
    max_batch_size: int
    max_wait_ms: float
    max_queue: int
    request_timeout_s: float
    cache_size: int
    cache_ttl_s: float
    base_model: str | None
    load_in: str

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, port: int | None = None, host: str | None = None) -> ServeSettings:
        env = dict(os.environ if env is None else env)
        paths = ContainerPaths.from_env(env.get(ROOT_ENV))
        if port is None:
            raw = env.get(SERVE_PORT_ENV, "").strip() or str(DEFAULT_SERVE_PORT)
            try:
                port = int(raw)
            except ValueError:
                raise SettingsError(f"{SERVE_PORT_ENV}={raw!r} is not a port number") from None
        load_in = _env("FTCLOUD_LOAD_IN", env).lower() or "auto"
        if load_in not in LOAD_IN_CHOICES:
            raise SettingsError(f"FTCLOUD_LOAD_IN={load_in!r} must be one of {', '.join(LOAD_IN_CHOICES)}")
        return cls(
            host=host or env.get(SERVE_HOST_ENV, "").strip() or DEFAULT_SERVE_HOST,
            port=port,
            model_dir=paths.model_dir,
            ml_root=paths.root,
            max_batch_size=_number("FTCLOUD_MAX_BATCH_SIZE", env, int, 1),
            max_wait_ms=_number("FTCLOUD_MAX_WAIT_MS", env, float, 0),
            max_queue=_number("FTCLOUD_MAX_QUEUE", env, int, 1),
            request_timeout_s=_number("FTCLOUD_REQUEST_TIMEOUT_S", env, float, 0.001),
            cache_size=_number("FTCLOUD_CACHE_SIZE", env, int, 0),
            cache_ttl_s=_number("FTCLOUD_CACHE_TTL_S", env, float, 0),
            base_model=_env("FTCLOUD_BASE_MODEL", env) or None,
            load_in=load_in,
        )
