"""Writing decisions out: one alerts-topic record per incident change, one state record per scope.

Each record says when it was decided as well as what it is about: ``timing`` holds the
event time of the window (``event_time``), the wall clock at the decision
(``processing_time``), the difference (``lag_s``) and the labels the engine had not read
yet (``labels_behind``); ``backfill`` is true when ``lag_s`` exceeds ``backfill_after_s``
(a backlog caught up, a lagging replica): the desk learns that the alert is about the past.
The same goes to the log line. The alert record goes out before the scopes' state records,
so a crash in between re-sends the alert on restart (at-least-once, never lost).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaProducer

from streamer.alerting.clock import EXPECTED, Lane
from streamer.alerting.detector import SpikeDetector
from streamer.alerting.events import AlertEvent
from streamer.alerting.incidents import IncidentEvent, IncidentTracker
from streamer.alerting.metrics import AlertMetrics
from streamer.alerting.state import ScopeAlertRecord, record_for, scope_key
from streamer.config import AlertsConfig

log = structlog.get_logger("sentiwire.alerts")

LOG_EVENT = {
    "firing": "negative sentiment spike",
    "updated": "negative sentiment spike updated",
    "resolved": "negative sentiment spike resolved",
}


def timing(at_ms: int, now_ms: int, backfill_after_s: float, labels_behind: int | None) -> dict[str, Any]:
    """When a decision about the window ending at ``at_ms`` was made, and whether that is backfill."""
    lag_s = round(max(0, now_ms - at_ms) / 1000, 3)
    return {
        "event_time": at_ms,
        "processing_time": now_ms,
        "lag_s": lag_s,
        "labels_behind": labels_behind,
        "backfill": lag_s > backfill_after_s,
    }


class Publisher:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        config: AlertsConfig,
        labels_topic: str,
        metrics: AlertMetrics,
        *,
        clock: Callable[[], float] = time.time,
        on_event: Callable[[AlertEvent], None] | None = None,
    ) -> None:
        self.producer = producer
        self.config = config
        self.labels_topic = labels_topic
        self.metrics = metrics
        self.clock = clock
        self.on_event = on_event
        self.published: dict[str, ScopeAlertRecord] = {}
        self.alerts_published = 0

    async def publish(
        self,
        detector: SpikeDetector,
        tracker: IncidentTracker,
        incidents: Sequence[IncidentEvent],
        record: Sequence[AlertEvent],
        events: Sequence[AlertEvent],
        *,
        labels_behind: int | None = None,
    ) -> None:
        """Page ``incidents``, write the state records of ``record``; ``events``: every scope decision."""
        cfg = self.config
        now_ms = int(self.clock() * 1000)
        opened: list[bool] = []
        for inc in incidents:
            doc = inc.to_json()
            when = timing(inc.at_ms, now_ms, cfg.backfill_after_s, labels_behind)
            doc["backfill"] = when["backfill"]
            doc["timing"] = when
            doc["emitted_at"] = now_ms
            doc["labels_topic"] = self.labels_topic
            key = scope_key(*inc.key).encode()
            await self.producer.send_and_wait(cfg.alerts_topic, orjson.dumps(doc), key=key)
            self.alerts_published += 1
            if inc.state == "firing":
                opened.append(bool(when["backfill"]))
            self._log(inc, when)
        for ev in record:
            state = record_for(
                detector,
                ev.scope_kind,
                ev.scope,
                state=ev.state,
                alert_id=ev.alert_id,
                started_at_ms=ev.started_at_ms,
                resolved_at_ms=ev.resolved_at_ms,
                incident_id=tracker.last_incident_of(ev.key),
            )
            await self.producer.send_and_wait(
                cfg.state_topic, orjson.dumps(state.to_json()), key=state.key.encode()
            )
            self.published[state.key] = state
        if self.on_event is not None:
            for ev in events:
                self.on_event(ev)
        self.metrics.observe_events(list(events))
        self.metrics.observe_incidents(opened)
        self.metrics.set_incidents({inc.primary for inc in tracker.open_incidents()})

    def _log(self, inc: IncidentEvent, when: dict[str, Any]) -> None:
        p = inc.primary
        log.warning(
            LOG_EVENT[inc.state],
            alert_id=p.alert_id,
            incident_id=inc.incident_id,
            scope_kind=p.scope_kind,
            scope=p.scope,
            negative_share=round(p.negative_share, 4),
            baseline_share=round(p.baseline_share, 4),
            count=p.count,
            statistic=round(p.statistic_value, 4),
            threshold=round(p.threshold, 4),
            related=[f"{r['scope_kind']}:{r['scope']}" for r in inc.related],
            backfill=when["backfill"],
            event_time=when["event_time"],
            lag_s=when["lag_s"],
            labels_behind=when["labels_behind"],
        )


class DropLog:
    """Late, capped and duplicate labels are logged (at most every ``every_s``), never silent."""

    def __init__(self, labels_topic: str, every_s: float = 10.0) -> None:
        self.labels_topic = labels_topic
        self.every_s = every_s
        self._logged = (0, 0, 0)
        self._at: float | None = None

    def _lane(self, lane: Lane) -> str:
        labels_part, topic, part = lane
        if labels_part == EXPECTED:
            return f"{topic}-{part} (no label yet)"
        return f"{topic or '?'}-{part} via {self.labels_topic}-{labels_part}"

    def report(self, detector: SpikeDetector) -> None:
        st = detector.stats
        now = (st.late, st.capped, st.duplicate)
        if now == self._logged or (self._at is not None and time.monotonic() - self._at < self.every_s):
            return
        late, capped, dup = (a - b for a, b in zip(now, self._logged, strict=True))
        self._logged, self._at = now, time.monotonic()
        if late or capped:
            log.warning(
                "labels records dropped by the alert engine",
                late=late,
                capped=capped,
                duplicate=dup,
                last=st.last_late,
                watermark_ms=detector.watermark_ms,
                waiting_for=[self._lane(lane) for lane in detector.clock.waiting_for()[:5]],
            )
        elif dup:
            log.info("redelivered labels dropped by the alert engine", duplicate=dup)
