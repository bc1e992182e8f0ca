"""Commit watermarks. Pure bookkeeping, no Kafka client.

At-least-once means: commit position P for a partition only when every offset below P that
this consumer fetched has been acknowledged (its label, or its dead letter, is on the broker).
Offsets need not be contiguous (compaction, transaction markers), so the tracker remembers
the offsets it actually saw, in fetch order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from aiokafka import TopicPartition


class PartitionOffsets:
    """Offsets of one partition: fetched in increasing order, acknowledged in any order."""

    __slots__ = ("_acked", "_committed", "_done", "_pending")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._acked: set[int] = set()
        self._done: int | None = None  # next offset after the fully acknowledged prefix
        self._committed: int | None = None

    def track(self, offset: int) -> None:
        last = self._pending[-1] if self._pending else (self._done - 1 if self._done is not None else None)
        if last is not None and offset <= last:
            raise ValueError(f"offset {offset} tracked after {last}: offsets must increase")
        self._pending.append(offset)

    def ack(self, offset: int) -> None:
        if not self._pending or not self._pending[0] <= offset <= self._pending[-1]:
            return  # not in flight here (a late ack from before a revocation)
        self._acked.add(offset)
        while self._pending and self._pending[0] in self._acked:
            first = self._pending.popleft()
            self._acked.discard(first)
            self._done = first + 1

    def discard_from(self, offset: int) -> None:
        """Forget unacknowledged offsets >= offset (they were dropped and will be re-fetched)."""
        while self._pending and self._pending[-1] >= offset:
            self._acked.discard(self._pending.pop())

    @property
    def watermark(self) -> int | None:
        """Position safe to commit (next offset to read), or None if nothing is acknowledged yet."""
        return self._done

    @property
    def in_flight(self) -> int:
        """Offsets tracked and not yet behind the watermark (acked out of order included)."""
        return len(self._pending)

    @property
    def unacked(self) -> int:
        """Offsets tracked and not yet acknowledged: what backpressure and draining count."""
        return len(self._pending) - len(self._acked)

    def uncommitted(self) -> int | None:
        """The watermark if it moved past the last commit, else None."""
        if self._done is not None and self._done != self._committed:
            return self._done
        return None

    def mark_committed(self, position: int) -> None:
        self._committed = position

    @property
    def committed(self) -> int | None:
        return self._committed


class OffsetTracker:
    """Per-partition :class:`PartitionOffsets` for the partitions this consumer owns."""

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, PartitionOffsets] = {}

    def partition(self, tp: TopicPartition) -> PartitionOffsets:
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = PartitionOffsets()
        return part

    def track(self, tp: TopicPartition, offset: int) -> None:
        self.partition(tp).track(offset)

    def ack(self, tp: TopicPartition, offset: int) -> None:
        part = self._parts.get(tp)
        if part is not None:  # partition revoked meanwhile: its new owner re-reads it
            part.ack(offset)

    def to_commit(self, tps: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        wanted = self._parts.keys() if tps is None else [tp for tp in tps if tp in self._parts]
        out: dict[TopicPartition, int] = {}
        for tp in wanted:
            pos = self._parts[tp].uncommitted()
            if pos is not None:
                out[tp] = pos
        return out

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, pos in offsets.items():
            if tp in self._parts:
                self._parts[tp].mark_committed(pos)

    def in_flight(self, tp: TopicPartition) -> int:
        part = self._parts.get(tp)
        return part.in_flight if part is not None else 0

    def watermark(self, tp: TopicPartition) -> int | None:
        part = self._parts.get(tp)
        return part.watermark if part is not None else None

    def committed(self, tp: TopicPartition) -> int | None:
        part = self._parts.get(tp)
        return part.committed if part is not None else None

    def unacked_total(self) -> int:
        """Records fetched and not yet acknowledged, over every tracked partition."""
        return sum(part.unacked for part in self._parts.values())

    def drop(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._parts.pop(tp, None)

    def partitions(self) -> list[TopicPartition]:
        return list(self._parts)
