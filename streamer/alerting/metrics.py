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
            "Labeled records seen by the alert engine, by outcome (counted, late, invalid)",
            ["outcome"],
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
        for outcome in ("counted", "late", "invalid"):
            self.records_total.labels(outcome)
        self._exported: set[tuple[str, str]] = set()
        self._seen = {"records": 0, "late": 0, "invalid": 0, "evicted": 0}

    def observe_events(self, events: list[AlertEvent]) -> None:
        for ev in events:
            if ev.state == "firing":
                self.spikes_total.labels(ev.scope_kind).inc()

    def update(self, detector: SpikeDetector, max_entities: int) -> None:
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
        counted = st.records - st.late
        for name, now, outcome in (
            ("records", counted, "counted"),
            ("late", st.late, "late"),
            ("invalid", st.invalid, "invalid"),
        ):
            if now > self._seen[name]:
                self.records_total.labels(outcome).inc(now - self._seen[name])
            self._seen[name] = now
        if st.evicted > self._seen["evicted"]:
            self.evicted_total.inc(st.evicted - self._seen["evicted"])
        self._seen["evicted"] = st.evicted
        self.tracked_entities.set(len(detector.entity_scopes))

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
