"""Exact and near-duplicate detection that keeps hashes, never rows (one pass, bounded memory).

* Exact: a 16-byte BLAKE2 digest of the cleaned row's canonical JSON; the first occurrence wins.
* Near: a MinHash signature of the row's word 3-grams (datasketch), looked up in an LSH index
  before it is inserted; a row whose estimated Jaccard similarity to a kept row is at least the
  threshold is dropped. The index holds band hashes of kept rows only.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

_WORDS = re.compile(r"\w+")
NUM_PERM = 64
SHINGLE = 3


def row_digest(row: dict[str, Any]) -> bytes:
    return hashlib.blake2b(json.dumps(row, sort_keys=True, ensure_ascii=False).encode(), digest_size=16).digest()


class ExactDedup:
    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def is_duplicate(self, row: dict[str, Any]) -> bool:
        digest = row_digest(row)
        if digest in self._seen:
            return True
        self._seen.add(digest)
        return False


def shingles(text: str, n: int = SHINGLE) -> set[bytes]:
    words = _WORDS.findall(text.lower())
    if len(words) < n:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


class NearDedup:
    """MinHash/LSH near-duplicate filter; ``is_duplicate(text)`` also remembers a kept text."""

    def __init__(self, threshold: float = 0.85, num_perm: int = NUM_PERM, seed: int = 1):
        from datasketch import MinHash, MinHashLSH

        self._minhash = MinHash
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._num_perm = num_perm
        self._seed = seed
        # Permutations are drawn once, then shared by every signature (datasketch would redraw them).
        self._template = MinHash(num_perm=num_perm, seed=seed)
        self._count = 0

    def is_duplicate(self, text: str) -> bool:
        grams = shingles(text)
        if not grams:
            return False
        m = self._minhash(num_perm=self._num_perm, seed=self._seed, permutations=self._template.permutations,
                          scheme=self._template.scheme)
        m.update_batch(list(grams))
        if self._lsh.query(m):
            return True
        self._lsh.insert(self._count, m, check_duplication=False)
        self._count += 1
        return False
