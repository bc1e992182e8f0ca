"""The serving group's backlog, as the alert clock reads it: which quiet partitions to wait for."""

from __future__ import annotations

from streamer.alerting.backlog import BacklogTracker

P0, P1, P2 = ("news", 0), ("news", 1), ("news", 2)


def test_partitions_with_uncommitted_input_are_busy_until_caught_up() -> None:
    t = BacklogTracker(stall_s=300.0)
    ends = {P0: 100, P1: 100, P2: 100}
    assert t.update(0.0, {P0: 100, P1: 40}, ends) == {P1}  # P2: never committed, nothing to go by
    assert t.behind == {P0: 0, P1: 60}
    assert t.update(5.0, {P0: 100, P1: 100, P2: -1}, ends) == set()  # -1: no offset for the group
    assert t.behind == {P0: 0, P1: 0}


def test_a_partition_whose_commit_does_not_move_is_let_go_after_the_stall_limit() -> None:
    t = BacklogTracker(stall_s=300.0)
    ends = {P0: 100, P1: 100}
    assert t.update(0.0, {P0: 10, P1: 10}, ends) == {P0, P1}
    assert t.update(200.0, {P0: 50, P1: 10}, ends) == {P0, P1}
    assert t.update(301.0, {P0: 50, P1: 10}, ends) == {P0}  # P1 has not moved for 301 s
    assert t.stalled == {P1}
    assert t.update(302.0, {P0: 50, P1: 11}, ends) == {P0, P1}  # it moves again: waited for again
    assert t.stalled == set()
    assert t.update(400.0, {P0: 60, P1: 11}, {P0: 100}) == {P0}  # P1 gone from the input
    assert t.behind == {P0: 40}


def test_a_backlog_that_appears_after_a_quiet_spell_gets_the_full_stall_limit() -> None:
    t = BacklogTracker(stall_s=300.0)
    assert t.update(0.0, {P0: 100}, {P0: 100}) == set()
    assert t.update(1000.0, {P0: 100}, {P0: 100}) == set()  # caught up for 1000 s
    assert t.update(1005.0, {P0: 100}, {P0: 110}) == {P0}  # new input: 300 s from last caught up
    assert t.update(1299.0, {P0: 100}, {P0: 110}) == {P0}
    assert t.update(1301.0, {P0: 100}, {P0: 110}) == set()
