"""Spike detector on real labeled sentences, hours compressed through event time. Pure, fast."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from streamer.alerting.detector import SpikeDetector
from streamer.alerting.events import AlertEvent
from streamer.alerting.incidents import IncidentTracker
from streamer.alerting.metrics import AlertMetrics
from streamer.alerting.rule import wilson_lower
from streamer.alerting.state import StateError, restore, snapshot
from streamer.config import AlertsConfig
from tests.alerting.scenario import Corpus, StreamBuilder, by_time, jitter, load_corpus

T0 = 1_764_000_000_000  # event-time origin (ms)
HOUR_S = 3600.0
CFG = AlertsConfig(enabled=True)  # production defaults: 5 min vs 6 h, 30 s buckets, 60 s lateness


@pytest.fixture(scope="module")
def corpus(shared_data: Path) -> Corpus:
    return load_corpus(shared_data)


def run(records: list[dict[str, Any]], cfg: AlertsConfig = CFG, *, flush: bool = True) -> list[AlertEvent]:
    det = SpikeDetector(cfg)
    events = det.process_many(records)
    if flush:  # let the clock run past the end so the last windows are judged
        last = max(r["source"]["timestamp"] for r in records)
        events += det.advance_to(
            last + int((cfg.short_window_s + cfg.allowed_lateness_s + 2 * cfg.bucket_s) * 1000)
        )
    assert det.stats.invalid == 0, det.stats.last_invalid
    return events


def share(records: list[dict[str, Any]], kind: str, name: str, lo_ms: int, hi_ms: int) -> tuple[int, float]:
    """Negative share of a scope in [lo, hi), straight from the records (independent of the detector)."""
    n = neg = 0
    for r in records:
        ts = r["source"]["timestamp"]
        if not lo_ms <= ts < hi_ms:
            continue
        if kind == "topic" and r["labels"]["topic"]["label"] != name:
            continue
        n += 1
        neg += r["labels"]["sentiment"]["label"] == "negative"
    return n, (neg / n if n else 0.0)


def assert_really_moved(records: list[dict[str, Any]], ev: AlertEvent) -> None:
    """A global/topic alert is only right if that scope's share clearly rose over its past hours."""
    short = int(CFG.short_window_s * 1000)
    _, now = share(records, ev.scope_kind, ev.scope, ev.at_ms - short, ev.at_ms)
    _, before = share(records, ev.scope_kind, ev.scope, ev.at_ms - int(3 * HOUR_S * 1000), ev.at_ms - short)
    assert now >= max(CFG.absolute_floor, 2 * before), (ev.scope, now, before)


def scoped(events: list[AlertEvent], kind: str, name: str | None = None) -> list[AlertEvent]:
    return [e for e in events if e.scope_kind == kind and (name is None or e.scope == name)]


def test_wilson_lower_bound_keeps_small_counts_quiet() -> None:
    z = SpikeDetector(CFG).z
    # 3 of 4 negative: the point estimate is 75 %, but the bound is near the calm baseline.
    assert wilson_lower(3, 4, z) < 0.25
    assert wilson_lower(30, 40, z) > 0.55
    assert wilson_lower(0, 0, z) == 0.0
    assert wilson_lower(5, 5, z) < 1.0


def test_calm_hours_raise_no_alert(corpus: Corpus) -> None:
    sb = StreamBuilder(corpus)
    calm = sb.calm(T0, 4 * HOUR_S, every_s=1.5)
    det = SpikeDetector(CFG)
    events = det.process_many(calm)
    assert events == []
    # It did judge plenty of scopes (not vacuously quiet): global, topics, some tickers.
    assert det.stats.evaluations > 5000
    assert det.global_scope.last.count > 150
    assert 0.05 < det.global_scope.last.baseline_share < 0.3
    assert len(det.topics) == 20
    assert len(det.entity_scopes) > 200


def test_ticker_burst_fires_within_one_short_window_and_resolves(corpus: Corpus) -> None:
    sb = StreamBuilder(corpus)
    calm = sb.calm(T0, 3 * HOUR_S + 1200, every_s=1.0)
    burst_at = T0 + int(3 * HOUR_S * 1000)
    burst = sb.ticker_burst("NOK", burst_at, duration_s=150, count=30)
    events = run(by_time(calm, burst))

    nok = scoped(events, "entity", "NOK")
    assert [e.state for e in nok] == ["firing", "resolved"], nok
    fired, resolved = nok
    assert burst_at < fired.at_ms <= burst_at + int(CFG.short_window_s * 1000)
    burst_end = burst_at + 150_000
    assert burst_end < resolved.at_ms <= burst_end + int((CFG.short_window_s + CFG.bucket_s) * 1000)
    assert fired.alert_id == resolved.alert_id
    assert resolved.started_at_ms == fired.started_at_ms
    assert resolved.resolved_at_ms == resolved.at_ms
    # The alert carries its evidence.
    assert fired.count >= CFG.min_count
    assert fired.negative_share >= CFG.absolute_floor
    assert fired.statistic_value > fired.threshold == pytest.approx(fired.baseline_share + CFG.min_lift)
    assert 0 < len(fired.examples) <= CFG.max_examples
    burst_ids = {r["id"] for r in burst}
    assert {e["id"] for e in fired.examples} <= burst_ids
    assert fired.first_source is not None
    assert fired.last_source is not None
    assert fired.first_source["timestamp"] <= fired.last_source["timestamp"] < fired.at_ms
    doc = fired.to_json()
    json.dumps(doc)
    assert doc["scope_kind"] == "entity"
    assert doc["scope"] == "NOK"
    assert doc["state"] == "firing"

    # One ticker's bad news moves the market's share measurably, but by less than the
    # configured lift: no global alert.
    assert scoped(events, "global") == []
    stream = by_time(calm, burst)
    _, during = share(stream, "global", "all", burst_end - int(CFG.short_window_s * 1000), burst_end)
    _, before = share(stream, "global", "all", T0, burst_at)
    assert before + 0.03 < during < before + CFG.min_lift
    # A topic may fire only if its own share really moved (the burst's topics are mixed).
    for ev in scoped(events, "topic"):
        if ev.state == "firing":
            assert_really_moved(stream, ev)


def test_topic_wave_fires_that_topic_only(corpus: Corpus) -> None:
    sb = StreamBuilder(corpus)
    calm = sb.calm(T0, 3 * HOUR_S + 1200, every_s=1.5)
    wave_at = T0 + int(3 * HOUR_S * 1000)
    wave = sb.topic_wave("Fed | Central Banks", wave_at, duration_s=240)
    events = run(by_time(calm, wave))
    fed = scoped(events, "topic", "Fed | Central Banks")
    assert [e.state for e in fed] == ["firing", "resolved"]
    assert wave_at < fed[0].at_ms <= wave_at + int(CFG.short_window_s * 1000)
    assert scoped(events, "global") == []
    assert {(e.scope_kind, e.scope) for e in events} == {("topic", "Fed | Central Banks")}


def test_market_selloff_fires_global(corpus: Corpus) -> None:
    sb = StreamBuilder(corpus)
    calm = sb.calm(T0, 3 * HOUR_S + 1200, every_s=1.5)
    at = T0 + int(3 * HOUR_S * 1000)
    events = run(by_time(calm, sb.market_selloff(at, duration_s=300, count=200)))
    glob = scoped(events, "global")
    assert [e.state for e in glob] == ["firing", "resolved"]
    assert at < glob[0].at_ms <= at + int(CFG.short_window_s * 1000)
    assert glob[0].negative_share > 2 * glob[0].baseline_share


def test_small_count_flurry_raises_nothing(corpus: Corpus) -> None:
    sb = StreamBuilder(corpus)
    calm = sb.calm(T0, 2 * HOUR_S, every_s=1.5)
    at = T0 + int(1.5 * HOUR_S * 1000)
    # 3 negatives out of 4 messages about a ticker, then 8 negatives within a minute.
    flurry = sb.ticker_burst("ACME", at, duration_s=60, count=3)
    flurry.append(sb.record(corpus.tweets[0][0], "neutral", "Markets", at + 30_000, tickers=["ACME"]))
    flurry += sb.ticker_burst("BETA", at + 600_000, duration_s=60, count=8)
    det = SpikeDetector(CFG)
    events = det.process_many(by_time(calm, flurry))
    assert events == []
    # Because of the minimum count and the bound, not for lack of evaluation.
    assert det.entity_scopes["ACME"].last.count > 0 or det.entity_scopes["BETA"].last.count > 0


def test_out_of_order_within_lateness_gives_the_same_alerts(corpus: Corpus) -> None:
    sb = StreamBuilder(corpus)
    calm = sb.calm(T0, 2 * HOUR_S, every_s=1.5)
    burst = sb.ticker_burst("NOK", T0 + int(1.5 * HOUR_S * 1000), duration_s=150, count=40)
    ordered = by_time(calm, burst)
    lateness_ms = int(CFG.allowed_lateness_s * 1000)
    shuffled = list(jitter(ordered, lateness_ms))
    assert shuffled != ordered
    det = SpikeDetector(CFG)
    events = det.process_many(shuffled)
    assert det.stats.late == 0
    assert [e.to_json() for e in events] == [e.to_json() for e in run(ordered, flush=False)]
    assert [e.state for e in scoped(events, "entity", "NOK")] == ["firing", "resolved"]


def test_beyond_lateness_is_counted_late_not_used(corpus: Corpus) -> None:
    sb = StreamBuilder(corpus)
    calm = sb.calm(T0, 1200, every_s=1.5)
    det = SpikeDetector(CFG)
    det.process_many(calm)
    before = det.global_scope.buckets.copy()
    old = sb.record("late", "negative", "Macro", calm[-1]["source"]["timestamp"] - 120_000)
    det.process(old)
    assert det.stats.late == 1
    assert det.global_scope.buckets.keys() == before.keys()


def test_snapshot_restore_round_trips_and_does_not_refire(corpus: Corpus) -> None:
    sb = StreamBuilder(corpus)
    calm = sb.calm(T0, 2 * HOUR_S, every_s=1.5)
    burst_at = T0 + int(1.5 * HOUR_S * 1000)
    stream = by_time(calm, sb.ticker_burst("NOK", burst_at, duration_s=150, count=40))
    whole = run(stream, flush=False)
    assert [e.state for e in whole] == ["firing", "resolved"]

    # Stop right after the alert fired (mid-incident), restore, continue.
    det = SpikeDetector(CFG)
    first: list[AlertEvent] = []
    cut = 0
    for cut, rec in enumerate(stream, 1):  # noqa: B007
        first += det.process(rec)
        if first:
            break
    assert [e.state for e in first] == ["firing"]
    blob = json.loads(json.dumps(snapshot(det)))
    again = restore(CFG, blob)
    assert snapshot(again) == blob
    assert set(again.active_alerts()) == {("entity", "NOK")}
    rest = again.process_many(stream[cut:])
    assert [e.state for e in rest] == ["resolved"]  # no second firing
    assert [e.to_json() for e in first + rest] == [e.to_json() for e in whole]


def test_restore_refuses_other_windows(corpus: Corpus) -> None:
    det = SpikeDetector(CFG)
    det.process_many(StreamBuilder(corpus).calm(T0, 600, every_s=2))
    other = CFG.model_copy(update={"short_window_s": 600.0})
    with pytest.raises(StateError, match="other windows"):
        restore(other, snapshot(det))


def test_cooldown_suppresses_a_second_burst(corpus: Corpus) -> None:
    sb = StreamBuilder(corpus)
    calm = sb.calm(T0, 3 * HOUR_S, every_s=1.5)
    b1 = T0 + int(2 * HOUR_S * 1000)
    b2 = b1 + 600_000  # 10 min later: after the first resolves, inside a 15 min cooldown
    stream = by_time(
        calm,
        sb.ticker_burst("NOK", b1, duration_s=120, count=30),
        sb.ticker_burst("NOK", b2, duration_s=120, count=30),
    )
    assert [e.state for e in scoped(run(stream), "entity", "NOK")] == ["firing", "resolved"]
    no_cooldown = CFG.model_copy(update={"cooldown_s": 0.0})
    again = scoped(run(stream, no_cooldown), "entity", "NOK")
    assert [e.state for e in again] == ["firing", "resolved", "firing", "resolved"]
    assert again[2].at_ms > b2


def test_confidence_weighting_ignores_unsure_negatives(corpus: Corpus) -> None:
    sb = StreamBuilder(corpus)
    calm = sb.calm(T0, 2 * HOUR_S, every_s=1.5)
    unsure = sb.ticker_burst("NOK", T0 + int(1.5 * HOUR_S * 1000), duration_s=150, count=40, score=0.45)
    stream = by_time(calm, unsure)
    assert [e.state for e in scoped(run(stream), "entity", "NOK")] == ["firing", "resolved"]
    weighted = CFG.model_copy(update={"min_negative_confidence": 0.6})
    assert scoped(run(stream, weighted), "entity", "NOK") == []


def test_entity_scopes_are_bounded_lru_and_firing_kept(corpus: Corpus) -> None:
    cfg = CFG.model_copy(update={"max_entities": 5, "max_metric_entities": 2})
    sb = StreamBuilder(corpus)
    calm = sb.calm(T0, 2 * HOUR_S, every_s=1.5)
    burst_at = T0 + int(1.5 * HOUR_S * 1000)
    burst = sb.ticker_burst("NOK", burst_at, duration_s=150, count=40)
    det = SpikeDetector(cfg)
    registry = CollectorRegistry()
    metrics = AlertMetrics(registry)
    fired_seen = False
    for rec in by_time(calm, burst):
        events = det.process(rec)
        metrics.observe_events(events)
        metrics.update(det, cfg.max_metric_entities)
        assert len(det.entity_scopes) <= 5
        entity_series = {s for k, s in metrics.exported_scopes() if k == "entity"}
        active = {name for (k, name) in det.active_alerts() if k == "entity"}
        assert len(entity_series) <= max(2, len(active))
        assert active <= entity_series
        if active:
            fired_seen = True
            assert "NOK" in det.entity_scopes  # never evicted while firing
            assert (
                registry.get_sample_value("sentiwire_spike_active", {"scope_kind": "entity", "scope": "NOK"})
                == 1
            )
    assert fired_seen
    assert det.stats.evicted > 100
    assert registry.get_sample_value("sentiwire_spikes_total", {"scope_kind": "entity"}) == 1
    assert registry.get_sample_value("sentiwire_alert_evicted_entities_total") == det.stats.evicted
    share = registry.get_sample_value("sentiwire_negative_share", {"scope_kind": "global", "scope": "all"})
    assert share == pytest.approx(det.global_scope.last.share)
    # At most 2 entity series, whatever churned through.
    samples = [s for m in registry.collect() if m.name == "sentiwire_negative_share" for s in m.samples]
    assert sum(1 for s in samples if s.labels["scope_kind"] == "entity") <= 2


def test_invalid_records_are_counted_with_the_field_named() -> None:
    det = SpikeDetector(CFG)
    assert det.process({"labels": {"sentiment": {"label": "negative"}}}) == []
    assert det.stats.invalid == 1
    assert "source.timestamp" in (det.stats.last_invalid or "")
    det.process({"source": {"timestamp": T0}, "labels": {}})
    assert "labels.sentiment.label" in (det.stats.last_invalid or "")
    det.process({"source": {"timestamp": "yesterday"}, "labels": {}})
    assert "source.timestamp must be a number" in (det.stats.last_invalid or "")
    assert det.stats.invalid == 3


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ({"baseline_window_s": 100.0}, "baseline_window_s"),
        ({"bucket_s": 600.0}, "bucket_s"),
        ({"resolve_lift": 0.5}, "resolve_lift"),
        ({"confidence": 1.5}, "confidence"),
        ({"entity_aliases": {"TSLA": [" "]}}, "entity_aliases"),
        ({"unknown_knob": 1}, "unknown_knob"),
        ({"max_partition_lag_s": 10.0}, "max_partition_lag_s"),
        ({"idle_partition_s": 0}, "idle_partition_s"),
        ({"incident_grace_buckets": -1}, "incident_grace_buckets"),
        ({"max_lanes": 0}, "max_lanes"),
    ],
)
def test_config_errors_name_the_field(update: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        AlertsConfig.model_validate({**CFG.model_dump(), **update})


def worked_at_different_speeds(
    records: list[dict[str, Any]], speeds: tuple[float, ...]
) -> list[dict[str, Any]]:
    """Arrival order of a daemon working each input partition at its own speed (a backlog)."""
    seen = [0] * len(speeds)
    keyed = []
    for i, r in enumerate(records):
        p = r["source"]["partition"]
        keyed.append((seen[p] / speeds[p], i))
        seen[p] += 1
    return [records[i] for _, i in sorted(keyed)]


def test_backlog_worked_at_different_speeds_per_partition(corpus: Corpus) -> None:
    """The issue's shape: 7 h of event time, 3 input partitions worked at different speeds."""
    # Seed 8: with the default seed this rate has one calm topic window (12 of 27 negative)
    # that fires even in event-time order; this test is about the partitions, not that.
    sb = StreamBuilder(corpus, seed=8)
    calm = sb.calm(T0, 7 * HOUR_S, every_s=2.5)
    burst_at = T0 + int(6.5 * HOUR_S * 1000)
    burst = sb.ticker_burst("NOK", burst_at, duration_s=240, count=40)
    flurry = sb.ticker_burst("ACME", T0 + int(4 * HOUR_S * 1000), duration_s=60, count=3)
    flurry.append(
        sb.record(
            corpus.tweets[0][0], "neutral", "Markets", flurry[0]["source"]["timestamp"] + 1, tickers=["ACME"]
        )
    )
    stream = by_time(calm, burst, flurry)
    arrival = worked_at_different_speeds(stream, (1.0, 0.8, 0.55))
    labels_partition = {r["id"]: zlib.crc32(r["id"].encode()) % 3 for r in arrival}
    end = max(r["source"]["timestamp"] for r in stream) + 1_200_000

    det = SpikeDetector(CFG)
    events = [e for r in arrival for e in det.process(r, partition=labels_partition[r["id"]])]
    events += det.advance_to(end)
    print(f"lanes: {len(stream)} records, late {det.stats.late}, capped {det.stats.capped}")
    assert det.stats.late == det.stats.capped == det.stats.duplicate == 0
    assert det.stats.counted == len(stream)
    nok = scoped(events, "entity", "NOK")
    assert [e.state for e in nok] == ["firing", "resolved"]
    assert burst_at < nok[0].at_ms <= burst_at + int(CFG.short_window_s * 1000)
    # The burst's own headlines may lift a topic too; nothing fires outside the burst.
    for ev in events:
        if ev.state == "firing":
            assert burst_at < ev.at_ms <= burst_at + 240_000 + int(CFG.short_window_s * 1000), ev
    # Paged: one incident, about NOK.
    incidents = (
        IncidentTracker.for_config(det.rule, CFG).observe(events, until_ms=det.judged_until_ms).incidents
    )
    print("incidents:", [(i.state, i.primary.key, [r["scope"] for r in i.related]) for i in incidents])
    assert {(i.incident_id, i.primary.key) for i in incidents} == {(nok[0].alert_id, ("entity", "NOK"))}

    # The same arrival judged on one watermark over the whole stream (before per-partition
    # clocks): most records are thrown away as late and the burst is not seen.
    one = SpikeDetector(CFG)
    blind = [{**r, "source": {"timestamp": r["source"]["timestamp"]}} for r in arrival]
    missed = one.process_many(blind) + one.advance_to(end)
    print(f"one watermark: late {one.stats.late} ({one.stats.late / len(stream):.0%})")
    assert one.stats.late > len(stream) // 3
    assert ("entity", "NOK") not in {(e.scope_kind, e.scope) for e in missed}
