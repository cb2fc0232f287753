"""Streaming train/validation splits and k-fold assignment, stratified by label, in O(classes) memory.

A row's fate is decided when it arrives, so nothing is held back:

* split: each class keeps its own count; a row goes to validation with a random draw that is
  corrected by how far that class is from its share, so every class ends within one row of
  ``fraction`` of its rows (exact stratification) while the choice stays random and seeded;
* k-fold: each class deals its rows out over a fresh random permutation of the K folds every
  K rows, so fold sizes per class differ by at most one.

Generative formats are one "class"; classification rows stratify by label.
"""

from __future__ import annotations

import random
from collections import defaultdict


class StratifiedSplitter:
    def __init__(self, fraction: float, seed: int = 0):
        self.fraction = fraction
        self._rng = random.Random(seed)
        self._seen: dict[str, int] = defaultdict(int)
        self._held: dict[str, int] = defaultdict(int)

    def is_validation(self, label: str | None) -> bool:
        key = label or ""
        self._seen[key] += 1
        deficit = self._seen[key] * self.fraction - self._held[key]  # validation rows this class is owed
        take = deficit >= 1 or (deficit > 0 and self._rng.random() < deficit)
        if take:
            self._held[key] += 1
        return take


class FoldAssigner:
    def __init__(self, k: int, seed: int = 0):
        self.k = k
        self._rng = random.Random(seed)
        self._queues: dict[str, list[int]] = defaultdict(list)

    def fold(self, label: str | None) -> int:
        """The 0-based fold whose validation part the row belongs to."""
        queue = self._queues[label or ""]
        if not queue:
            queue.extend(self._rng.sample(range(self.k), self.k))
        return queue.pop()
