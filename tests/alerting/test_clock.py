"""The event clock on its own: lanes, idleness, the lag limit, de-duplication, bounded tables."""

from __future__ import annotations

from streamer.alerting.clock import EventClock, OffsetRanges
from streamer.alerting.merge import EventTimeMerge

L = 60_000  # lateness, ms
A, B, C = (0, "news", 0), (1, "news", 1), (2, "news", 2)


def test_a_lane_behind_the_others_is_on_time_and_holds_the_clock() -> None:
    clock = EventClock(L)
    clock.admit(A, 10_000_000)
    clock.admit(B, 10_000_000)
    for ts in range(10_000_000, 19_000_000, 100_000):  # A runs 2.5 h ahead, B stays
        assert clock.admit(A, ts) == "ok"
    assert clock.watermark_ms == 10_000_000 - L  # held at B
    assert clock.waiting_for() == [B]
    assert clock.admit(B, 10_000_000 - L + 1) == "ok"  # behind A by hours: on time on its lane
    for ts in range(10_000_000, 19_000_000, 100_000):  # B catches up; the clock follows it
        assert clock.admit(B, ts) == "ok"
    assert clock.watermark_ms == 18_900_000 - L


def test_a_lane_first_seen_behind_the_clock_is_late_unless_expected() -> None:
    clock = EventClock(L)
    clock.admit(A, 10_000_000)
    assert clock.admit(B, 1_000_000) == "late"  # nobody said B exists: the clock did not wait


def test_expected_partition_holds_the_clock_until_it_delivers_or_idles() -> None:
    clock = EventClock(L, idle_s=30.0)
    clock.expect([("news", 0), ("news", 1)], now_s=0.0)
    clock.admit(A, 5_000_000, now_s=1.0)
    assert clock.watermark_ms is None  # B announced, nothing from it yet
    assert clock.admit(B, 1_000_000, now_s=2.0) == "ok"  # far behind A, but not late
    assert clock.watermark_ms == 1_000_000 - L
    clock.admit(A, 6_000_000, now_s=3.0)
    assert not clock.expire(20.0)
    assert clock.expire(33.0)  # B quiet for 31 s: the clock follows A
    assert clock.watermark_ms == 6_000_000 - L
    assert clock.admit(B, 1_000_001, now_s=34.0) == "late"


def test_quiet_lane_with_work_still_coming_is_not_idle() -> None:
    clock = EventClock(L, idle_s=30.0)
    clock.admit(A, 1_000_000, now_s=0.0)
    clock.admit(B, 1_000_000, now_s=0.0)
    clock.hold(sources=[("news", 1)])  # the serving group has a backlog on news-1
    for i, ts in enumerate(range(1_000_000, 5_000_000, 100_000)):
        clock.admit(A, ts, now_s=float(i))
    assert not clock.expire(100.0)  # B quiet for 100 s, but held: the clock waits
    assert clock.waiting_for() == [B]
    assert clock.admit(B, 1_000_001, now_s=101.0) == "ok"  # its labels come late in wall clock only
    clock.hold(labels_partitions=[1])  # backlog gone, its labels partition not read to the end
    assert not clock.expire(200.0)
    clock.hold()  # nothing still coming: idleness applies again
    assert clock.expire(200.0)
    assert clock.watermark_ms == 4_900_000 - L
    assert clock.admit(B, 1_000_002, now_s=201.0) == "late"


def test_held_lane_too_far_behind_is_still_not_waited_for() -> None:
    clock = EventClock(L, idle_s=30.0, max_lag_ms=3_600_000)
    clock.admit(A, 0, now_s=0.0)
    clock.admit(B, 0, now_s=0.0)
    clock.hold(sources=[("news", 1)])
    clock.admit(A, 7_200_000, now_s=1.0)
    assert clock.watermark_ms == 7_200_000 - L


def test_lane_too_far_behind_is_not_waited_for_and_its_records_are_capped() -> None:
    clock = EventClock(L, max_lag_ms=3_600_000)
    clock.admit(A, 0)
    clock.admit(B, 0)
    clock.admit(A, 7_200_000)  # B is now 2 h behind, limit 1 h
    assert clock.watermark_ms == 7_200_000 - L
    assert clock.admit(B, 100_000) == "capped"
    assert clock.admit(C, 100_000) == "late"  # a new lane is not "lagging", just late


def test_single_lane_is_the_classic_watermark() -> None:
    clock = EventClock(L)
    clock.admit(A, 1_000_000)
    assert clock.admit(A, 1_000_000 - L) == "ok"  # exactly at the lateness
    assert clock.admit(A, 1_000_000 - L - 1) == "late"
    assert clock.advance_to(2_000_000)
    assert clock.watermark_ms == 2_000_000 - L
    assert not clock.advance_to(1_500_000)


def test_redelivered_offsets_are_duplicates_with_bounded_ranges() -> None:
    clock = EventClock(L, max_ranges=4)
    for off in range(100):
        assert clock.admit(A, 1_000 + off, offset=off) == "ok"
    assert clock.admit(A, 1_050, offset=50) == "duplicate"
    assert clock.seen[("news", 0)].ranges() == [(0, 100)]
    assert (
        clock.admit((2, "news", 0), 1_051, offset=51) == "duplicate"
    )  # same source via another labels partition
    r = OffsetRanges(3)
    for off in (10, 12, 14, 11, 13):  # out of order, merges into one range
        assert r.add(off)
    assert r.ranges() == [(10, 15)]
    assert not r.add(12)
    for off in (20, 30, 40):  # three more gaps: the oldest range is forgotten
        r.add(off)
    assert r.ranges() == [(20, 21), (30, 31), (40, 41)]
    assert r.forgotten == 1
    assert r.add(12)  # forgotten, so taken as new (it is far behind the watermark anyway)


def test_lanes_are_bounded_least_recently_seen_first() -> None:
    clock = EventClock(L, max_lanes=2)
    clock.admit(A, 0, offset=0)
    clock.admit(B, 0, offset=0)
    clock.admit(A, 1, offset=1)
    clock.admit(C, 1, offset=0)  # B is the least recently seen
    assert set(clock.lanes) == {A, C}
    assert set(clock.seen) == {("news", 0), ("news", 2)}
    assert clock.forgotten_lanes == clock.forgotten_sources == 1


def test_clock_state_round_trips() -> None:
    clock = EventClock(L)
    clock.admit(A, 5, offset=1)
    clock.admit(B, 7, offset=3)
    again = EventClock(L)
    again.load(clock.to_json())
    assert again.to_json() == clock.to_json()
    assert again.admit(A, 6, offset=1) == "duplicate"


def test_merge_releases_in_event_time_order_while_every_partition_can_answer() -> None:
    merge: EventTimeMerge[int, str] = EventTimeMerge([0, 1])
    merge.push(0, [(1, "a1"), (5, "a5"), (9, "a9")])
    assert merge.pop_ready(settled=set()) == []  # partition 1 may still hold older records
    merge.push(1, [(2, "b2"), (6, "b6")])
    assert merge.pop_ready(settled=set()) == ["a1", "b2", "a5", "b6"]  # stops when 1 runs dry
    assert merge.wanting() == [1]
    assert merge.pop_ready(settled={1}) == ["a9"]  # 1 is caught up: nothing older can come now
    assert merge.buffered == 0
