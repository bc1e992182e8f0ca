from __future__ import annotations

import pytest

from streamer.offsets import OffsetTracker, PartitionOffsets


def test_watermark_waits_for_every_earlier_offset() -> None:
    p = PartitionOffsets()
    for off in (10, 11, 12, 13):
        p.track(off)
    assert p.watermark is None
    p.ack(12)
    p.ack(11)
    assert p.watermark is None  # 10 still outstanding
    p.ack(10)
    assert p.watermark == 13  # 10, 11, 12 done; 13 not
    p.ack(13)
    assert p.watermark == 14
    assert p.in_flight == 0


def test_gaps_in_offsets_are_fine() -> None:
    """Compaction and transaction markers leave holes; only fetched offsets matter."""
    p = PartitionOffsets()
    for off in (5, 9, 20):
        p.track(off)
    p.ack(5)
    p.ack(20)
    assert p.watermark == 6
    p.ack(9)
    assert p.watermark == 21


def test_offsets_must_increase() -> None:
    p = PartitionOffsets()
    p.track(3)
    with pytest.raises(ValueError, match="must increase"):
        p.track(3)
    p.ack(3)
    with pytest.raises(ValueError, match="must increase"):
        p.track(2)


def test_discard_from_forgets_the_dropped_tail() -> None:
    p = PartitionOffsets()
    for off in range(5):
        p.track(off)
    p.ack(0)
    p.ack(3)  # acked but after a gap: must not advance past 1
    p.discard_from(2)
    assert p.in_flight == 1
    p.ack(1)
    assert p.watermark == 2


def test_tracker_commits_only_moved_watermarks_and_ignores_revoked() -> None:
    t = OffsetTracker()
    a, b = ("in", 0), ("in", 1)
    t.track(a, 0)
    t.track(b, 0)
    t.ack(a, 0)
    assert t.to_commit() == {a: 1}
    t.mark_committed({a: 1})
    assert t.to_commit() == {}
    t.drop([b])
    t.ack(b, 0)  # late ack for a revoked partition: ignored, not resurrected
    assert t.partitions() == [a]
    assert t.to_commit([a, b]) == {}
