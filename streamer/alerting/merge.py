"""Records of several labels partitions put back in event-time order, with bounded buffers.

Pure. The engine fetches only partitions whose buffer is empty, so at most one fetch per
partition is held here. Records are released smallest event time first while every
partition either has something buffered or is *settled* — read to its end (start-up) or
caught up with what the broker holds now (live): nothing older can come from it right now.
A label that comes later on a settled partition is still judged on its own lane's watermark
(``clock``), so the merge only makes the order good; correctness never depends on it.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Collection, Hashable, Iterable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)
T = TypeVar("T")


class EventTimeMerge(Generic[P, T]):
    def __init__(self, partitions: Iterable[P]) -> None:
        self.buffers: dict[P, deque[tuple[int, int, T]]] = {p: deque() for p in partitions}
        self._seq = 0  # ties keep arrival order

    @property
    def buffered(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    def wanting(self) -> list[P]:
        """Partitions with nothing buffered: the ones to fetch next."""
        return [p for p, b in self.buffers.items() if not b]

    def push(self, partition: P, items: Iterable[tuple[int, T]]) -> None:
        buf = self.buffers.setdefault(partition, deque())
        for ts, item in items:
            buf.append((ts, self._seq, item))
            self._seq += 1

    def pop_ready(self, settled: Collection[P]) -> list[T]:
        """Release in event-time order until a partition that is not settled runs dry."""
        if any(not b and p not in settled for p, b in self.buffers.items()):
            return []
        heap = [(b[0][0], b[0][1], p) for p, b in self.buffers.items() if b]
        heapq.heapify(heap)
        out: list[T] = []
        while heap:
            _, _, p = heapq.heappop(heap)
            buf = self.buffers[p]
            out.append(buf.popleft()[2])
            if buf:
                heapq.heappush(heap, (buf[0][0], buf[0][1], p))
            elif p not in settled:
                break
        return out

    def drain(self) -> list[T]:
        """Everything buffered, in event-time order (a merge that ends)."""
        return self.pop_ready(self.buffers.keys())
