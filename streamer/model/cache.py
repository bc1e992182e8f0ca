"""Response cache: identical texts (as the tokenizer normalizes them) skip inference.

Financial feeds repeat themselves (syndicated headlines, retweets). The key is the bundle
version + a hash of the normalized text, so two texts the model cannot tell apart share an
entry and nothing from another model version is ever returned; a reload builds a new
classifier and so starts empty. Bounded by entries and by an estimate of the bytes held;
least recently used first out. Thread-safe: concurrent batches share it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")

# Bytes counted per entry besides its labels: key digest, dict and tuple overheads (an estimate).
ENTRY_OVERHEAD_BYTES = 240
BYTES_PER_SCORE = 72  # a float object and its dict slot


def cache_key(version: str, normalized: str) -> bytes:
    return (
        hashlib.blake2b(
            normalized.encode("utf-8", "surrogatepass"), digest_size=16, person=b"sentiwire"
        ).digest()
        + version.encode()
    )


class LabelCache(Generic[V]):
    """LRU of values (a text's labels) by :func:`cache_key`; ``max_entries`` 0 disables it."""

    def __init__(self, max_entries: int, max_bytes: int, entry_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entry_bytes = entry_bytes
        self._data: OrderedDict[bytes, V] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes >= self.entry_bytes

    def __len__(self) -> int:
        return len(self._data)

    @property
    def size_bytes(self) -> int:
        return len(self._data) * self.entry_bytes

    def get(self, key: bytes) -> V | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
            return hit

    def put(self, key: bytes, value: V) -> int:
        """Store ``value``; returns how many entries were evicted to make room."""
        if not self.enabled:
            return 0
        evicted = 0
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            limit = min(self.max_entries, self.max_bytes // self.entry_bytes)
            while len(self._data) > limit:
                self._data.popitem(last=False)
                evicted += 1
            self.evictions += evicted
        return evicted
