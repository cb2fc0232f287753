"""Lazy imports for heavy or optional packages (the SkyPilot adaptor pattern).

``ftcloud --help`` must stay fast, so modules such as boto3 are imported on first
attribute access, never at module import time::

    from ftcloud.adaptors import boto3
    boto3.Session(...)      # boto3 is imported here, not above

A missing package raises an error that says which extra to install.
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType
from typing import Any


class LazyImport:
    """A stand-in for a module that imports it on first attribute access."""

    def __init__(self, module_name: str, install_hint: str | None = None):
        self._module_name = module_name
        self._install_hint = install_hint
        self._module: ModuleType | None = None
        self._lock = threading.Lock()

    def load(self) -> ModuleType:
        if self._module is None:
            with self._lock:
                if self._module is None:
                    try:
                        self._module = importlib.import_module(self._module_name)
                    except ImportError as exc:
                        hint = self._install_hint or f"pip install {self._module_name.split('.')[0]}"
                        raise ImportError(
                            f"ftcloud needs '{self._module_name}' for this command: {hint}"
                        ) from exc
        return self._module

    def __getattr__(self, name: str) -> Any:
        return getattr(self.load(), name)

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded"
        return f"<LazyImport {self._module_name} ({state})>"


boto3 = LazyImport("boto3", "pip install ftcloud  (boto3 is a base dependency)")
botocore_config = LazyImport("botocore.config")
botocore_exceptions = LazyImport("botocore.exceptions")
yaml = LazyImport("yaml", "pip install pyyaml")
