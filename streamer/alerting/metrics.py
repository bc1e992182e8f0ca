"""Prometheus series of the spike detector, on the default registry the daemon serves.

Label cardinality is bounded: global and topic scopes always (a topic head has a fixed label
set), entities only for the ``max_metric_entities`` most active in the short window plus any
that is firing; series of scopes that drop out are removed, not left stale.
"""

from __future__ import annotations

import contextlib
import threading

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from streamer.alerting.detector import ScopeState, SpikeDetector
from streamer.alerting.events import AlertEvent

OUTCOMES = ("counted", "late", "capped", "duplicate", "invalid")
FORGOTTEN = ("lanes", "sources", "offset_ranges")


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.negative_share = Gauge(
            "sentiwire_negative_share",
            "Negative share of the short alert window per scope (event time)",
            ["scope_kind", "scope"],
            registry=registry,
        )
        self.baseline_share = Gauge(
            "sentiwire_negative_share_baseline",
            "Baseline negative share the short window is compared with, per scope",
            ["scope_kind", "scope"],
            registry=registry,
        )
        self.spike_active = Gauge(
            "sentiwire_spike_active",
            "1 while a negative-sentiment spike alert is firing for the scope",
            ["scope_kind", "scope"],
            registry=registry,
        )
        self.spikes_total = Counter(
            "sentiwire_spikes_total", "Spike alerts fired, by scope kind", ["scope_kind"], registry=registry
        )
        self.records_total = Counter(
            "sentiwire_alert_records_total",
            "Labeled records seen by the alert engine, by outcome: counted, or dropped as late, "
            "capped (its partition too far behind to wait for), duplicate (a redelivered source offset), invalid",
            ["outcome"],
            registry=registry,
        )
        self.event_time_lag = Gauge(
            "sentiwire_alert_event_time_lag_seconds",
            "Wall clock minus the alert engine's event-time watermark (how far behind real time it judges)",
            registry=registry,
        )
        self.input_backlog = Gauge(
            "sentiwire_alert_input_backlog_records",
            "Input records the serving group has not labeled yet, as the alert engine reads it "
            "(the clock waits for partitions with a backlog instead of calling them idle)",
            registry=registry,
        )
        self.buffered = Gauge(
            "sentiwire_alert_buffered_records",
            "Labels read but not yet handed to the detector (event-time merge of the labels partitions)",
            registry=registry,
        )
        self.partitions = Gauge(
            "sentiwire_alert_partitions",
            "Event-time lanes (input partition x labels partition) the alert engine's clock tracks",
            registry=registry,
        )
        self.forgotten_total = Counter(
            "sentiwire_alert_forgotten_total",
            "Bounded-memory entries the alert engine forgot: a lane's clock (lanes), an input partition's "
            "seen offsets (sources), a range of seen offsets (offset_ranges)",
            ["table"],
            registry=registry,
        )
        self.incident_active = Gauge(
            "sentiwire_incident_active",
            "1 while an incident is open, on the scope that opened it (related scopes are on the alert)",
            ["scope_kind", "scope"],
            registry=registry,
        )
        self.incidents_total = Counter(
            "sentiwire_incidents_total",
            "Incidents opened, by whether they were decided long after their window (backfill)",
            ["backfill"],
            registry=registry,
        )
        self.tracked_entities = Gauge(
            "sentiwire_alert_tracked_entities",
            "Entity scopes held in memory by the detector",
            registry=registry,
        )
        self.evicted_total = Counter(
            "sentiwire_alert_evicted_entities_total",
            "Entity scopes evicted (least recently seen) to bound memory",
            registry=registry,
        )
        for kind in ("global", "topic", "entity"):
            self.spikes_total.labels(kind)
        for outcome in OUTCOMES:
            self.records_total.labels(outcome)
        for table in FORGOTTEN:
            self.forgotten_total.labels(table)
        for backfill in ("true", "false"):
            self.incidents_total.labels(backfill)
        self._exported: set[tuple[str, str]] = set()
        self._incidents: set[tuple[str, str]] = set()
        self._seen = dict.fromkeys((*OUTCOMES, "evicted", *FORGOTTEN), 0)

    def observe_events(self, events: list[AlertEvent]) -> None:
        for ev in events:
            if ev.state == "firing":
                self.spikes_total.labels(ev.scope_kind).inc()

    def update(self, detector: SpikeDetector, max_entities: int, *, now_ms: int | None = None) -> None:
        """Export the latest evaluation of each exported scope; drop series that fell out."""
        keep: list[ScopeState] = [detector.global_scope, *detector.topics.values()]
        entities = list(detector.entity_scopes.values())
        firing = [s for s in entities if s.active is not None]
        busiest = sorted(
            (s for s in entities if s.active is None and s.last.count > 0),
            key=lambda s: (-s.last.count, s.name),
        )
        keep += firing + busiest[: max(0, max_entities - len(firing))]
        wanted: set[tuple[str, str]] = set()
        for s in keep:
            if s.last.at_ms == 0:
                continue  # never evaluated yet
            key = (s.kind, s.name)
            wanted.add(key)
            self.negative_share.labels(*key).set(s.last.share)
            self.baseline_share.labels(*key).set(s.last.baseline_share)
            self.spike_active.labels(*key).set(1.0 if s.active is not None else 0.0)
        for key in self._exported - wanted:
            for g in (self.negative_share, self.baseline_share, self.spike_active):
                with contextlib.suppress(KeyError):
                    g.remove(*key)
        self._exported = wanted
        st = detector.stats
        outcomes = {
            "counted": st.counted,
            "late": st.late,
            "capped": st.capped,
            "duplicate": st.duplicate,
            "invalid": st.invalid,
        }
        for outcome, now in outcomes.items():
            self._inc(self.records_total.labels(outcome), outcome, now)
        self._inc(self.evicted_total, "evicted", st.evicted)
        clock = detector.clock
        for table, now in zip(
            FORGOTTEN, (clock.forgotten_lanes, clock.forgotten_sources, clock.forgotten_ranges), strict=True
        ):
            self._inc(self.forgotten_total.labels(table), table, now)
        self.tracked_entities.set(len(detector.entity_scopes))
        self.partitions.set(len(clock.lanes))
        if now_ms is not None and clock.watermark_ms is not None:
            self.event_time_lag.set(max(0.0, (now_ms - clock.watermark_ms) / 1000))

    def _inc(self, counter: Counter, name: str, now: int) -> None:
        if now > self._seen[name]:
            counter.inc(now - self._seen[name])
        self._seen[name] = now

    def set_incidents(self, primaries: set[tuple[str, str]]) -> None:
        """The scopes that opened the incidents open now."""
        for key in primaries:
            self.incident_active.labels(*key).set(1.0)
        for key in self._incidents - primaries:
            with contextlib.suppress(KeyError):
                self.incident_active.remove(*key)
        self._incidents = set(primaries)

    def observe_incidents(self, opened_backfill: list[bool]) -> None:
        for backfill in opened_backfill:
            self.incidents_total.labels("true" if backfill else "false").inc()

    def exported_scopes(self) -> set[tuple[str, str]]:
        return set(self._exported)


_default: AlertMetrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> AlertMetrics:
    """The process's one set of alert metrics on the default REGISTRY (registering twice fails)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = AlertMetrics(REGISTRY)
        return _default
