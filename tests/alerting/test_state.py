"""Reconciling a replayed detector with what was published before a restart (state topic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.alerting.detector import SpikeDetector
from streamer.alerting.events import AlertEvent
from streamer.alerting.state import ScopeAlertRecord, StateError, reconcile, record_for
from streamer.config import AlertsConfig
from tests.alerting.scenario import StreamBuilder, by_time, load_corpus

T0 = 1_764_000_000_000
CFG = AlertsConfig(enabled=True)


@pytest.fixture(scope="module")
def firing_detector_stream(shared_data: Path) -> list[dict[str, object]]:
    sb = StreamBuilder(load_corpus(shared_data))
    return by_time(sb.calm(T0, 7200, every_s=1.5), sb.ticker_burst("NOK", T0 + 5_400_000, 150, 40))


def replay_until_firing(stream: list[dict[str, object]]) -> tuple[SpikeDetector, AlertEvent]:
    det = SpikeDetector(CFG)
    for rec in stream:
        events = det.process(rec)  # type: ignore[arg-type]
        if events:
            return det, events[0]
    raise AssertionError("never fired")


def published(
    ev: AlertEvent, det: SpikeDetector, state: str, resolved_at: int | None = None
) -> ScopeAlertRecord:
    return record_for(
        det,
        ev.scope_kind,
        ev.scope,
        state=state,  # type: ignore[arg-type]
        alert_id=ev.alert_id,
        started_at_ms=ev.started_at_ms,
        resolved_at_ms=resolved_at,
    )


def test_still_firing_keeps_the_published_alert(firing_detector_stream: list[dict[str, object]]) -> None:
    det, ev = replay_until_firing(firing_detector_stream)
    rec = published(ev, det, "firing")
    old = ScopeAlertRecord(
        rec.scope_kind, rec.scope, "firing", "entity:NOK:older-id", ev.started_at_ms - 30_000, None, 0
    )
    result = reconcile(det, {rec.key: old})
    assert result.adopted == 1
    assert result.to_fire == []
    assert result.to_resolve == []
    active = det.active_alerts()[("entity", "NOK")]
    assert active.alert_id == "entity:NOK:older-id"  # the same incident keeps its id


def test_fired_while_down_is_published(firing_detector_stream: list[dict[str, object]]) -> None:
    det, _ = replay_until_firing(firing_detector_stream)
    result = reconcile(det, {})
    assert result.to_fire == [("entity", "NOK")]
    event = det.current_event("entity", "NOK")
    assert event is not None
    assert event.state == "firing"


def test_already_resolved_is_never_fired_again(firing_detector_stream: list[dict[str, object]]) -> None:
    det, ev = replay_until_firing(firing_detector_stream)
    resolved_at = ev.at_ms + 60_000
    rec = published(ev, det, "resolved", resolved_at)
    result = reconcile(det, {rec.key: rec})
    assert result.suppressed == 1
    assert result.to_fire == []
    assert det.active_alerts() == {}
    assert det.entity_scopes["NOK"].cooldown_until_ms == resolved_at + int(CFG.cooldown_s * 1000)


def test_ended_while_down_is_resolved(firing_detector_stream: list[dict[str, object]]) -> None:
    det = SpikeDetector(CFG)
    det.process_many(firing_detector_stream[:2000])  # type: ignore[arg-type]
    stale = ScopeAlertRecord("entity", "GONE", "firing", "entity:GONE:1", T0, None, T0)
    result = reconcile(det, {stale.key: stale})
    assert result.to_resolve == [stale]
    ev = det.resolved_event("entity", "GONE", stale.alert_id, stale.started_at_ms, T0 + 1000)
    assert ev.state == "resolved"
    assert ev.alert_id == "entity:GONE:1"
    assert ev.resolved_at_ms == T0 + 1000


def test_state_record_round_trip_and_errors() -> None:
    rec = ScopeAlertRecord("topic", "Earnings", "resolved", "topic:Earnings:5", 5, 10, 910)
    assert ScopeAlertRecord.from_json(rec.to_json()) == rec
    with pytest.raises(StateError, match="state"):
        ScopeAlertRecord.from_json({**rec.to_json(), "state": "maybe"})
    with pytest.raises(StateError, match="started_at_ms"):
        ScopeAlertRecord.from_json({k: v for k, v in rec.to_json().items() if k != "started_at_ms"})


def test_paged_without_a_state_record_is_recovered_as_firing() -> None:
    """A crash between the alerts record and the scopes' state records: the alert still counts as paged."""
    from streamer.alerting.rebuild import recover_unrecorded

    older = ScopeAlertRecord("entity", "NOK", "resolved", "entity:NOK:1", 1, 2, 902)
    published = {older.key: older}
    paged = [
        {
            "alert_id": "entity:NOK:50",
            "incident_id": "entity:NOK:50",
            "scope_kind": "entity",
            "scope": "NOK",
            "state": "firing",
            "started_at": 50,
            "related": [
                {
                    "scope_kind": "global",
                    "scope": "all",
                    "alert_id": "global:all:60",
                    "started_at": 60,
                    "state": "firing",
                },
                {
                    "scope_kind": "topic",
                    "scope": "Macro",
                    "alert_id": "topic:Macro:55",
                    "started_at": 55,
                    "state": "resolved",
                },
            ],
        }
    ]
    assert recover_unrecorded(published, paged) == 2
    assert published["entity:NOK"].state == "firing"
    assert published["entity:NOK"].alert_id == "entity:NOK:50"
    assert published["global:all"].incident_id == "entity:NOK:50"
    assert "topic:Macro" not in published
    assert recover_unrecorded(published, paged) == 0  # recorded now: nothing more
