"""Result cache: LRU + TTL, keyed on model version + adapter + canonical request.

Only deterministic requests (greedy decoding) are cached: a sampled answer is meant to vary.
Hits and misses are counted for the stats endpoint and the logs.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class ResultCache:
    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.ttl_s > 0

    @staticmethod
    def key(model_version: str, adapter: str, canonical_request: str) -> str:
        return hashlib.sha256(f"{model_version}\0{adapter}\0{canonical_request}".encode()).hexdigest()

    def get(self, key: str) -> Any | None:
        if not self.enabled:
            return None
        with self._lock:
            item = self._items.get(key)
            if item is not None and self._clock() - item[0] <= self.ttl_s:
                self._items.move_to_end(key)
                self.hits += 1
                return item[1]
            if item is not None:  # expired
                del self._items[key]
            self.misses += 1
            return None

    def put(self, key: str, value: Any) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._items[key] = (self._clock(), value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {
            "enabled": self.enabled,
            "entries": len(self._items),
            "max_entries": self.max_entries,
            "ttl_s": self.ttl_s,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hits / total, 4) if total else None,
        }
