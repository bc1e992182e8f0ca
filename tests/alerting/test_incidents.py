"""One incident per burst, on real sentences: the scope that explains it, the others related."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streamer.alerting.console import format_alert
from streamer.alerting.detector import SpikeDetector
from streamer.alerting.events import AlertEvent, Overlap, make_event
from streamer.alerting.incidents import IncidentEvent, IncidentTracker
from streamer.config import AlertsConfig
from tests.alerting.scenario import Corpus, StreamBuilder, by_time, load_corpus

T0 = 1_764_000_000_000
HOUR_S = 3600.0
CFG = AlertsConfig(enabled=True)


@pytest.fixture(scope="module")
def corpus(shared_data: Path) -> Corpus:
    return load_corpus(shared_data)


def run(
    records: list[dict[str, Any]], cfg: AlertsConfig = CFG
) -> tuple[list[AlertEvent], list[IncidentEvent], IncidentTracker]:
    det = SpikeDetector(cfg)
    tracker = IncidentTracker.for_config(det.rule, cfg)
    events = det.process_many(records)
    events += det.advance_to(max(r["source"]["timestamp"] for r in records) + 900_000)
    return events, tracker.observe(events, until_ms=det.judged_until_ms).incidents, tracker


def big_ticker_burst(corpus: Corpus) -> list[dict[str, Any]]:
    """140 negative headlines about TSLA in 4 min: enough to move its topics and the market too."""
    sb = StreamBuilder(corpus)
    calm = sb.calm(T0, 3 * HOUR_S + 1200, every_s=1.0)
    return by_time(calm, sb.ticker_burst("TSLA", T0 + int(3 * HOUR_S * 1000), 240, 140))


def test_ticker_burst_that_moves_topics_and_market_is_one_incident(corpus: Corpus) -> None:
    events, incidents, tracker = run(big_ticker_burst(corpus))
    # Per scope, the detector still judges each: the entity, the market and several topics fire.
    firing = {(e.scope_kind, e.scope) for e in events if e.state == "firing"}
    assert ("entity", "TSLA") in firing
    assert ("global", "all") in firing
    assert sum(1 for k, _ in firing if k == "topic") >= 3
    # Paged: one incident, opened by the ticker, every other firing scope related to it.
    assert {i.incident_id for i in incidents} == {incidents[0].incident_id}
    states = [i.state for i in incidents]
    assert states[0] == "firing"
    assert states[-1] == "resolved"
    assert set(states[1:-1]) <= {"updated"}
    assert incidents[0].primary.key == ("entity", "TSLA")
    final = incidents[-1]
    related = {(r["scope_kind"], r["scope"]) for r in final.related}
    assert related == firing - {("entity", "TSLA")}
    glob = next(r for r in final.related if r["scope_kind"] == "global")
    assert glob["relation"] == "explained_by"
    assert glob["via"] == "entity:TSLA"
    assert glob["shared_negatives"] > 0
    assert tracker.open_incidents() == []
    # The resolve carries every related scope as resolved.
    assert {r["state"] for r in final.related} == {"resolved"}
    doc = json.loads(json.dumps(final.to_json()))
    assert doc["state"] == "resolved"
    assert doc["incident_id"] == incidents[0].incident_id
    assert doc["resolved_at"] == final.at_ms


def test_console_shows_the_incident_with_related_scopes_under_it(corpus: Corpus) -> None:
    _, incidents, _ = run(big_ticker_burst(corpus))
    opened = next(i for i in incidents if i.state == "firing")
    grown = [i for i in incidents if i.state == "updated"][-1]
    first = json.loads(json.dumps({**grown.to_json(), "state": "firing"}))
    lines = format_alert(first).split("\n")
    assert lines[0].startswith("FIRING")
    assert "entity TSLA" in lines[0]
    assert len(lines) == 1 + len(grown.related)
    assert all(line.startswith(" " * 10 + "+ ") for line in lines[1:])
    assert any("global all" in line and "explained by entity TSLA" in line for line in lines[1:])
    update = format_alert(json.loads(json.dumps(grown.to_json())))
    assert update.startswith("UPDATED")
    assert "\n" not in update
    assert "related: " in update
    assert opened.primary.key == ("entity", "TSLA")


def test_topic_wave_and_small_ticker_bursts_stay_their_own_single_incidents(corpus: Corpus) -> None:
    sb = StreamBuilder(corpus)
    calm = sb.calm(T0, 3 * HOUR_S + 1200, every_s=1.5)
    wave = sb.topic_wave("Fed | Central Banks", T0 + int(3 * HOUR_S * 1000), duration_s=240)
    _, incidents, _ = run(by_time(calm, wave))
    assert [(i.state, i.primary.key) for i in incidents] == [
        ("firing", ("topic", "Fed | Central Banks")),
        ("resolved", ("topic", "Fed | Central Banks")),
    ]
    assert all(i.related == () for i in incidents)


def test_grouping_off_pages_every_scope(corpus: Corpus) -> None:
    events, incidents, _ = run(big_ticker_burst(corpus), CFG.model_copy(update={"group_incidents": False}))
    fired = [e.key for e in events if e.state == "firing"]
    assert [i.primary.key for i in incidents if i.state == "firing"] == fired
    assert all(i.related == () for i in incidents)


def test_restored_incident_keeps_its_id_and_resolves_once(corpus: Corpus) -> None:
    events, incidents, _ = run(big_ticker_burst(corpus))
    opened = incidents[0]
    firing = [e for e in events if e.state == "firing"]
    resolved = [e for e in events if e.state == "resolved"]
    det = SpikeDetector(CFG)
    tracker = IncidentTracker(det.rule)
    tracker.restore([(opened.incident_id, e) for e in firing])
    assert [i.incident_id for i in tracker.open_incidents()] == [opened.incident_id]
    out = tracker.observe(resolved).incidents
    assert [(i.state, i.incident_id) for i in out] == [("resolved", opened.incident_id)]


def _event(
    kind: str, name: str, at: int, n: float, neg: float, base: float, *overlaps: Overlap
) -> AlertEvent:
    rule = SpikeDetector(CFG).rule
    ev = rule.evaluate(at, n, neg, base, 1000.0)
    return replace(
        make_event(CFG, kind, name, "firing", ev, f"{kind}:{name}:{at}", at, None, None, []),
        overlaps=overlaps,
    )


def test_a_topic_waits_its_grace_and_the_ticker_that_explains_it_opens_the_incident() -> None:
    """The topic crosses its threshold a bucket before the ticker whose headlines lift it."""
    rule = SpikeDetector(CFG).rule
    t0 = 1_764_000_000_000
    topic = _event("topic", "Earnings", t0, 80, 34, 0.15)
    topic_next = rule.evaluate(t0 + 30_000, 82, 36, 0.15, 1000.0)
    nok = _event("entity", "NOK", t0 + 30_000, 22, 22, 0.14, Overlap("topic", "Earnings", 20, 20, topic_next))
    tracker = IncidentTracker.for_config(rule, CFG)  # grace: 2 buckets of 30 s
    first = tracker.observe([topic], until_ms=t0)
    assert first.incidents == []  # waiting for a ticker
    assert first.record == []  # and its state is not recorded as paged yet
    second = tracker.observe([nok], until_ms=t0 + 30_000)
    assert [(i.state, i.primary.key, i.incident_id) for i in second.incidents] == [
        ("firing", ("entity", "NOK"), nok.alert_id)
    ]
    (related,) = second.incidents[0].related
    assert (related["scope"], related["relation"], related["via"]) == (
        "Earnings",
        "explained_by",
        "entity:NOK",
    )
    assert {e.key for e in second.record} == {("topic", "Earnings"), ("entity", "NOK")}
    assert tracker.last_incident_of(("topic", "Earnings")) == nok.alert_id


def test_a_topic_alone_pages_after_its_grace() -> None:
    rule = SpikeDetector(CFG).rule
    t0 = 1_764_000_000_000
    topic = _event("topic", "Earnings", t0, 80, 34, 0.15)
    tracker = IncidentTracker.for_config(rule, CFG)
    assert tracker.observe([topic], until_ms=t0 + 30_000).incidents == []
    paged = tracker.observe([], until_ms=t0 + 60_000)
    assert [(i.state, i.primary.key, i.at_ms) for i in paged.incidents] == [
        ("firing", ("topic", "Earnings"), t0)
    ]
    assert [e.key for e in paged.record] == [("topic", "Earnings")]
