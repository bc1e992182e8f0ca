"""Dynamic batching and length bucketing. Pure: no clock of its own, no I/O.

A batch closes at ``max_batch_size`` items or ``max_wait`` after its first item, whichever
comes first. Inside a batch, texts are grouped by token length so a few long texts do not
make every short one pay for their padding (the bench reports the padding waste).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

import numpy as np

from streamer.inference import Encoded

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


def plan_buckets(lengths: Sequence[int], *, max_waste: float = 0.25, min_bucket: int = 8) -> list[np.ndarray]:
    """Split row indices into length-sorted buckets.

    Greedy over rows sorted by length: a new bucket starts when adding the next (longer) row
    would leave more than ``max_waste`` of the bucket's padded tokens as padding, and the
    bucket already holds ``min_bucket`` rows (fewer, larger ONNX calls beat many tiny ones).
    Every index appears exactly once.
    """
    n = len(lengths)
    if n == 0:
        return []
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lens, kind="stable")
    buckets: list[np.ndarray] = []
    start = 0
    total = 0
    for pos in range(n):
        length = int(lens[order[pos]])
        count = pos - start + 1
        padded = count * max(length, 1)
        waste = (padded - (total + length)) / padded
        if count - 1 >= min_bucket and waste > max_waste:
            buckets.append(order[start:pos])
            start, total = pos, 0
        total += length
    buckets.append(order[start:n])
    return buckets


def padding_waste(lengths: Sequence[int], buckets: Sequence[np.ndarray] | None = None) -> float:
    """Share of fed tokens that are padding (one bucket = the whole batch when None)."""
    lens = np.asarray(lengths, dtype=np.int64)
    if lens.size == 0:
        return 0.0
    groups = [np.arange(lens.size)] if buckets is None else list(buckets)
    padded = sum(int(len(g) * lens[g].max()) for g in groups if len(g))
    return 0.0 if padded == 0 else 1.0 - float(lens.sum()) / padded


def take_rows(enc: Encoded, rows: np.ndarray) -> Encoded:
    """Rows of a right-padded batch, trimmed to the longest of them."""
    width = max(int(enc.lengths[rows].max()), 1) if len(rows) else 0
    mask = enc.attention_mask[rows]
    if mask[:, width:].any():  # not right-padded: keep the full width rather than cut tokens
        width = mask.shape[1]
    return Encoded(
        input_ids=np.ascontiguousarray(enc.input_ids[rows, :width]),
        attention_mask=np.ascontiguousarray(mask[:, :width]),
        truncated=enc.truncated[rows],
        lengths=enc.lengths[rows],
    )
