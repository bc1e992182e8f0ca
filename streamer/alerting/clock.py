"""The event clock: a watermark per partition ("lane"), the clock at their minimum.

Pure (processing time is passed in). A lane is one input partition as seen through one
labels-topic partition: (labels partition, source topic, source partition); a record without
a source partition is its labels partition's lane. Why both: the daemon works input
partitions at different speeds and keys labels by message key, so every labels partition
interleaves several input partitions, minutes of event time apart during a catch-up, and
one input partition's labels are spread over all labels partitions, which the engine reads
at their own pace. The one order that holds is an input partition's labels within one labels
partition (the daemon publishes each input partition in offset order; Kafka keeps a
partition's order): within a lane event time only moves forward (up to the input's own
disorder), which is what a watermark needs (Flink, Kafka Streams, Beam).

``watermark = max(previous, min over waited-for lanes of their highest event time - lateness)``

A lane is not waited for once it delivered nothing for ``idle_s`` (processing time), or once
it is more than ``max_lag_ms`` of event time behind the fastest lane (its records behind the
clock are then ``capped``, not ``late``). Quiet is not idle while there is still work for the
lane: :meth:`EventClock.hold` names the input partitions the serving group has a backlog on
and the labels partitions the engine has not read to their end (``backlog``), and their lanes
are waited for however long they were quiet; a busy box that starves one partition for a
minute mid catch-up then delays the clock instead of making that partition's labels late. An input partition announced with
:meth:`EventClock.expect` before its first label holds the clock where it is until it delivers
(through any labels partition) or goes idle, so a partition whose first label comes a moment
after the others' is not late by construction.

Per input partition the clock also remembers which source offsets it has seen, as a few
``[lo, hi)`` ranges (offsets are dense, so a handful of ranges cover millions of records): a
label whose source offset was seen is a redelivery (at-least-once) and is dropped as
``duplicate``. Memory is bounded: at most ``max_lanes`` lanes and as many input partitions
(least recently seen forgotten first), ``max_ranges`` ranges each (oldest forgotten first);
each is counted.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Lane = tuple[int, str, int]  # (labels partition, source topic, source partition)
Source = tuple[str, int]  # (source topic, source partition)
Verdict = Literal["ok", "late", "capped", "duplicate"]
DEFAULT_LANE: Lane = (0, "", -1)
EXPECTED = -1  # labels partition of an announced input partition's placeholder lane


class OffsetRanges:
    """Offsets seen, as sorted disjoint ``[lo, hi)`` ranges; the oldest is forgotten beyond ``max_ranges``."""

    def __init__(self, max_ranges: int, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self.max_ranges = max_ranges
        self.lo: list[int] = []
        self.hi: list[int] = []
        for lo, hi in ranges:
            self.lo.append(lo)
            self.hi.append(hi)
        self.forgotten = 0

    def add(self, offset: int) -> bool:
        """Record ``offset``; False if it was seen before."""
        lo, hi = self.lo, self.hi
        if hi and offset == hi[-1]:  # the common case: the next offset of the newest range
            hi[-1] = offset + 1
            return True
        i = bisect.bisect_right(lo, offset) - 1
        if i >= 0 and offset < hi[i]:
            return False
        joins_left = i >= 0 and hi[i] == offset
        joins_right = i + 1 < len(lo) and lo[i + 1] == offset + 1
        if joins_left and joins_right:
            hi[i] = hi[i + 1]
            del lo[i + 1], hi[i + 1]
        elif joins_left:
            hi[i] = offset + 1
        elif joins_right:
            lo[i + 1] = offset
        else:
            lo.insert(i + 1, offset)
            hi.insert(i + 1, offset + 1)
            if len(lo) > self.max_ranges:
                del lo[0], hi[0]
                self.forgotten += 1
        return True

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self.lo, self.hi, strict=True))


@dataclass
class LaneState:
    max_ts_ms: int | None = None  # highest event time accepted; None until the first one
    last_seen_s: float | None = None  # processing time of its last record (or of expect())


class EventClock:
    """Watermark over lanes; ``admit`` decides each record, ``expire`` applies idleness."""

    def __init__(
        self,
        lateness_ms: int,
        *,
        idle_s: float | None = None,
        max_lag_ms: int | None = None,
        max_lanes: int = 1024,
        max_ranges: int = 64,
    ) -> None:
        self.lateness_ms = lateness_ms
        self.idle_s = idle_s
        self.max_lag_ms = max_lag_ms
        self.max_lanes = max_lanes
        self.max_ranges = max_ranges
        # Least recently seen first, both.
        self.lanes: OrderedDict[Lane, LaneState] = OrderedDict()
        self.seen: OrderedDict[Source, OffsetRanges] = OrderedDict()
        self.watermark_ms: int | None = None
        self.fastest_ms: int | None = None
        self.forgotten_lanes = 0
        self.forgotten_sources = 0
        self._forgotten_ranges = 0
        self._floor_ms: int | None = None  # lowest lane time the watermark was computed from
        self._now_s: float | None = None
        self._held_sources: frozenset[Source] = frozenset()
        self._held_labels: frozenset[int] = frozenset()

    @property
    def max_ts_ms(self) -> int | None:
        """Highest event time accepted on any lane."""
        return self.fastest_ms

    @property
    def forgotten_ranges(self) -> int:
        return self._forgotten_ranges + sum(r.forgotten for r in self.seen.values())

    def _lane(self, lane: Lane) -> LaneState:
        st = self.lanes.get(lane)
        if st is not None:
            self.lanes.move_to_end(lane)
            return st
        if len(self.lanes) >= self.max_lanes:
            self.lanes.popitem(last=False)
            self.forgotten_lanes += 1
        st = self.lanes[lane] = LaneState()
        return st

    def _offsets(self, source: Source) -> OffsetRanges:
        ranges = self.seen.get(source)
        if ranges is not None:
            self.seen.move_to_end(source)
            return ranges
        if len(self.seen) >= self.max_lanes:
            _, gone = self.seen.popitem(last=False)
            self._forgotten_ranges += gone.forgotten
            self.forgotten_sources += 1
        ranges = self.seen[source] = OffsetRanges(self.max_ranges)
        return ranges

    def expect(self, sources: Iterable[Source], now_s: float) -> None:
        """Announce input partitions that exist: the clock waits for each until it delivers or idles."""
        known = {(lane[1], lane[2]) for lane in self.lanes}
        for topic, part in sources:
            if (topic, part) not in known:
                self._lane((EXPECTED, topic, part)).last_seen_s = now_s
        self._now_s = now_s
        self._recompute()

    def lagging(self, st: LaneState) -> bool:
        """Too far behind the fastest lane to be waited for."""
        return (
            self.max_lag_ms is not None
            and st.max_ts_ms is not None
            and self.fastest_ms is not None
            and st.max_ts_ms < self.fastest_ms - self.max_lag_ms
        )

    def hold(self, sources: Iterable[Source] = (), labels_partitions: Iterable[int] = ()) -> None:
        """Lanes of these input partitions, or read through these labels partitions, have work
        still coming (a backlog to label, labels not read yet): never idle until the next call."""
        self._held_sources = frozenset(sources)
        self._held_labels = frozenset(labels_partitions)

    @property
    def held(self) -> tuple[frozenset[Source], frozenset[int]]:
        return self._held_sources, self._held_labels

    def _idle(self, lane: Lane, st: LaneState) -> bool:
        if self.idle_s is None or self._now_s is None:
            return False
        if (lane[1], lane[2]) in self._held_sources or lane[0] in self._held_labels:
            return False
        return st.last_seen_s is None or self._now_s - st.last_seen_s >= self.idle_s

    def is_late(self, ts_ms: int) -> bool:
        return self.watermark_ms is not None and ts_ms < self.watermark_ms

    def admit(self, lane: Lane, ts_ms: int, offset: int | None = None, now_s: float | None = None) -> Verdict:
        """Decide one record: counted (``ok``, the clock moves), or dropped with the reason.

        ``offset`` is its source offset (de-duplicated per source topic and partition).
        """
        if offset is not None and lane[1] and not self._offsets((lane[1], lane[2])).add(offset):
            return "duplicate"
        if lane not in self.lanes and (EXPECTED, lane[1], lane[2]) in self.lanes:
            del self.lanes[(EXPECTED, lane[1], lane[2])]  # the announced partition delivered
        st = self._lane(lane)
        if now_s is not None:
            st.last_seen_s = now_s
            self._now_s = now_s
        if self.watermark_ms is not None and ts_ms < self.watermark_ms:
            return "capped" if self.lagging(st) else "late"
        old = st.max_ts_ms
        if old is None or ts_ms > old:
            st.max_ts_ms = ts_ms
            if self.fastest_ms is None or ts_ms > self.fastest_ms:
                self.fastest_ms = ts_ms
            floor = self._floor_ms
            if (
                old is None
                or floor is None
                or old <= floor
                or (self.max_lag_ms is not None and floor < ts_ms - self.max_lag_ms)
            ):
                self._recompute()
        return "ok"

    def expire(self, now_s: float) -> bool:
        """Apply idleness at ``now_s``; True if the watermark moved."""
        self._now_s = now_s
        before = self.watermark_ms
        self._recompute()
        return self.watermark_ms != before

    def advance_to(self, ts_ms: int) -> bool:
        """Move every lane to ``ts_ms`` (a quiet stream); False if that is not ahead of the clock."""
        if self.fastest_ms is None or ts_ms <= self.fastest_ms:
            return False
        self.fastest_ms = ts_ms
        for st in self.lanes.values():
            if st.max_ts_ms is not None and st.max_ts_ms < ts_ms:
                st.max_ts_ms = ts_ms
        self._recompute()
        return True

    def waiting_for(self) -> list[Lane]:
        """The lanes the watermark is held at (the slowest waited-for ones)."""
        held = [(k, s.max_ts_ms) for k, s in self.lanes.items() if self._waited(k, s)]
        if not held:
            return []
        low = min(-(2**62) if t is None else t for _, t in held)
        return sorted(k for k, t in held if (-(2**62) if t is None else t) == low)

    def to_json(self) -> dict[str, Any]:
        """Lanes, offsets and watermark as JSON (processing times are not carried over)."""
        return {
            "watermark_ms": self.watermark_ms,
            "fastest_ms": self.fastest_ms,
            "forgotten_lanes": self.forgotten_lanes,
            "forgotten_sources": self.forgotten_sources,
            "forgotten_ranges": self.forgotten_ranges,
            "lanes": [[*lane, st.max_ts_ms] for lane, st in self.lanes.items()],
            "seen": [
                [topic, part, [list(r) for r in ranges.ranges()]]
                for (topic, part), ranges in self.seen.items()
            ],
        }

    def load(self, d: Mapping[str, Any]) -> None:
        """The state ``to_json`` wrote (into a fresh clock)."""
        self.watermark_ms = None if d["watermark_ms"] is None else int(d["watermark_ms"])
        self.fastest_ms = None if d["fastest_ms"] is None else int(d["fastest_ms"])
        self.forgotten_lanes = int(d["forgotten_lanes"])
        self.forgotten_sources = int(d["forgotten_sources"])
        self._forgotten_ranges = int(d["forgotten_ranges"])
        self.lanes.clear()
        for labels_part, topic, part, max_ts in d["lanes"]:
            lane = (int(labels_part), str(topic), int(part))
            self.lanes[lane] = LaneState(None if max_ts is None else int(max_ts), None)
        self.seen.clear()
        for topic, part, ranges in d["seen"]:
            self.seen[(str(topic), int(part))] = OffsetRanges(
                self.max_ranges, ((int(lo), int(hi)) for lo, hi in ranges)
            )
        self._recompute()

    def _waited(self, lane: Lane, st: LaneState) -> bool:
        return not self._idle(lane, st) and not self.lagging(st)

    def _recompute(self) -> None:
        if self.fastest_ms is None:
            return
        floor: int | None = None
        for lane, st in self.lanes.items():
            if not self._waited(lane, st):
                continue
            if st.max_ts_ms is None:  # expected, not delivered yet: hold the clock
                self._floor_ms = None
                return
            if floor is None or st.max_ts_ms < floor:
                floor = st.max_ts_ms
        self._floor_ms = floor
        candidate = (self.fastest_ms if floor is None else floor) - self.lateness_ms
        if self.watermark_ms is None or candidate > self.watermark_ms:
            self.watermark_ms = candidate
