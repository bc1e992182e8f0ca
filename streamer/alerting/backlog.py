"""Which input partitions the serving group still has to label. Pure (offsets and time passed in).

Why: a lane of the event clock that delivered nothing for ``idle_partition_s`` stops holding
the clock back; that is right for a partition that went quiet, wrong for one the daemon has
simply not worked for a while (a loaded box, a rebalance, a replica that starts minutes
later) - its labels then arrive behind the watermark and are dropped as late. The group's
committed offset against the partition's end offset tells the two apart: an input partition
with ``committed < end`` has labels still to come, so the clock keeps waiting for it.

A partition whose committed offset has not moved for ``stall_s`` is let go all the same (a
daemon stuck on it, or an input whose last offsets can never be committed, must not stop
alerts on every other partition); so is one the group never committed (nothing says it will).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Source = tuple[str, int]  # (input topic, partition)


@dataclass
class _Progress:
    committed: int
    since_s: float  # processing time the commit last moved, was first seen, or was caught up


class BacklogTracker:
    """``update`` with the group's committed and the end offsets; returns the partitions to wait for."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._progress: dict[Source, _Progress] = {}
        self.behind: dict[Source, int] = {}  # records still to label, per partition with a commit
        self.stalled: frozenset[Source] = frozenset()

    def update(
        self, now_s: float, committed: Mapping[Source, int], ends: Mapping[Source, int]
    ) -> frozenset[Source]:
        busy: set[Source] = set()
        stalled: set[Source] = set()
        self.behind = {}
        for src, end in ends.items():
            offset = committed.get(src)
            if offset is None or offset < 0:  # never committed: nothing to go by
                self._progress.pop(src, None)
                continue
            self.behind[src] = max(0, end - offset)
            prog = self._progress.get(src)
            if prog is None or prog.committed != offset:
                prog = self._progress[src] = _Progress(offset, now_s)
            if offset >= end:  # caught up: a backlog that appears later gets its own stall_s
                prog.since_s = now_s
                continue
            if now_s - prog.since_s < self.stall_s:
                busy.add(src)
            else:
                stalled.add(src)
        for src in set(self._progress) - set(ends):
            del self._progress[src]
        self.stalled = frozenset(stalled)
        return frozenset(busy)
