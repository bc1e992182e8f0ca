"""Dynamic batching. Pure: no clock of its own, no I/O.

A batch closes at ``max_batch_size`` items or ``max_wait`` after its first item, whichever
comes first (length bucketing inside a batch is the model's job: streamer/model/buckets.py).
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class BatchAccumulator(Generic[T]):
    """Collects items; the caller supplies the time (monotonic seconds)."""

    def __init__(self, max_size: int, max_wait_s: float) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._items: list[T] = []
        self._opened_at: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now: float) -> list[T] | None:
        """Add one item; return the closed batch if it just reached max_size."""
        if not self._items:
            self._opened_at = now
        self._items.append(item)
        if len(self._items) >= self.max_size:
            return self.take()
        return None

    def deadline(self) -> float | None:
        """When the open batch must close, or None when empty."""
        return None if self._opened_at is None else self._opened_at + self.max_wait_s

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def take(self) -> list[T]:
        items, self._items, self._opened_at = self._items, [], None
        return items
