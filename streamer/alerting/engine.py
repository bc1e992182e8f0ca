"""The alert engine: labels topic in, alert JSON out (README "Alerts").

It reads every partition of the labels topic itself (no consumer group: the detector
must see the whole stream, so it runs once per deployment). On start it

1. reads the compacted state topic to its end: the last published state per scope;
2. replays the labels topic from ``now - baseline_window - lateness`` (``offsets_for_times``)
   to the end offsets seen at start, without publishing: this rebuilds every baseline;
3. reconciles (``state.reconcile``): alerts still firing keep their id, alerts that ended
   while it was down are resolved, old alerts are never fired again;

then follows the topic live. Each event goes to the alerts topic (key ``kind:scope``) and
its new state to the state topic, in that order; a crash in between re-sends the event on
restart (at-least-once, never lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamer.alerting.config import AlertsConfig
from streamer.alerting.detector import SpikeDetector
from streamer.alerting.events import AlertEvent
from streamer.alerting.metrics import AlertMetrics, default_metrics
from streamer.alerting.records import event_time
from streamer.alerting.state import ScopeAlertRecord, StateError, reconcile, record_for, scope_key
from streamer.config import KafkaConfig
from streamer.errors import UsageError
from streamer.kafka.admin import create_topics, wait_for_leaders
from streamer.kafka.clients import client_kwargs, make_reader
from streamer.kafka.reader import read_to_end

log = structlog.get_logger("sentiwire.alerts")


class AlertEngineError(UsageError):
    """The engine cannot start as configured; the message names the topic or setting."""


class AlertEngine:
    def __init__(
        self,
        config: AlertsConfig,
        kafka: KafkaConfig,
        labels_topic: str,
        metrics: AlertMetrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_event: Callable[[AlertEvent], None] | None = None,
    ) -> None:
        self.config = config
        self.kafka = kafka
        self.labels_topic = labels_topic
        self.metrics = metrics if metrics is not None else default_metrics()
        self.detector = SpikeDetector(config)
        self._clock = clock
        self._on_event = on_event
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = False
        self._published: dict[str, ScopeAlertRecord] = {}
        self._topic_partitions: dict[str, list[int]] = {}
        self.replayed = 0
        self.published_events = 0
        self.failure: BaseException | None = None

    @property
    def ready(self) -> bool:
        return self._ready and (self._task is None or not self._task.done())

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Rebuild state (state topic + replay), publish what reconciling requires, then follow live."""
        base = {**client_kwargs(self.kafka), "client_id": self.config.client_id}
        await self._ensure_topics(base)
        self._producer = AIOKafkaProducer(**base, acks="all", enable_idempotence=True, linger_ms=0)
        self._consumer = make_reader(self.kafka, client_id=self.config.client_id, read_committed=False)
        try:
            await self._producer.start()
            await self._consumer.start()
            self._published = await self._read_state_topic()
            await self._replay()
            await self._reconcile()
        except BaseException:
            await self.stop()
            raise
        self._ready = True
        self._task = asyncio.create_task(self._follow(), name="alert-engine")
        log.info(
            "alert engine ready",
            labels_topic=self.labels_topic,
            replayed=self.replayed,
            active=len(self.detector.active_alerts()),
            scopes=len(self.detector.scopes()),
        )

    async def stop(self) -> None:
        self._ready = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self._consumer = self._producer = None

    async def wait_failed(self) -> BaseException | None:
        """Returns when the live loop dies (None if it was cancelled)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)
        return self.failure

    # -- start-up ----------------------------------------------------------------
    async def _ensure_topics(self, base: dict[str, Any]) -> None:
        """Create the alerts topic and the compacted state topic if missing (never the labels topic)."""
        cfg = self.config
        admin = AIOKafkaAdminClient(**base)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            if self.labels_topic not in existing:
                raise AlertEngineError(
                    f"labels topic {self.labels_topic!r} does not exist on {self.kafka.bootstrap_servers}"
                )
            missing = [t for t in (cfg.alerts_topic, cfg.state_topic) if t not in existing]
            if missing and not cfg.create_topics:
                raise AlertEngineError(f"topics missing and alerts.create_topics is off: {sorted(missing)}")
            if missing:
                await create_topics(
                    admin,
                    dict.fromkeys(missing, 1),
                    replication_factor=cfg.topic_replication_factor,
                    config={cfg.state_topic: {"cleanup.policy": "compact"}},
                    exist_ok=True,
                )
                log.info("alert topics created", topics=missing)
            self._topic_partitions = await wait_for_leaders(
                admin, [self.labels_topic, cfg.alerts_topic, cfg.state_topic]
            )
        finally:
            await admin.close()

    def _partitions(self, topic: str) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for p in self._topic_partitions[topic]]

    async def _read_state_topic(self) -> dict[str, ScopeAlertRecord]:
        assert self._consumer is not None
        tps = self._partitions(self.config.state_topic)
        published: dict[str, ScopeAlertRecord] = {}

        def handle(rec: Any) -> None:
            key = rec.key.decode() if rec.key else None
            if key is None:
                return
            if rec.value is None:  # tombstone
                published.pop(key, None)
                return
            try:
                published[key] = ScopeAlertRecord.from_json(orjson.loads(rec.value))
            except (orjson.JSONDecodeError, StateError) as exc:
                log.warning(
                    "unreadable alert state record skipped", key=key, offset=rec.offset, error=str(exc)
                )

        await read_to_end(self._consumer, tps, handle)
        return published

    async def _replay(self) -> None:
        """Feed the last baseline window to the detector in event-time order across partitions.

        Partitions are merged (k-way, bounded buffers): a partition read to its end before
        the others would otherwise push the event clock ahead and make the rest "late".
        """
        assert self._consumer is not None
        consumer = self._consumer
        tps = self._partitions(self.labels_topic)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        horizon_s = self.config.baseline_window_s + self.config.allowed_lateness_s + self.config.bucket_s
        since_ms = int((self._clock() - horizon_s) * 1000)
        starts = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        for tp in tps:
            found = starts.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])
        t0 = time.monotonic()
        buffers: dict[TopicPartition, deque[tuple[int, dict[str, Any]]]] = {tp: deque() for tp in tps}
        done = {tp for tp in tps if await consumer.position(tp) >= ends[tp]}
        count = 0
        while True:
            need = [tp for tp in tps if tp not in done and not buffers[tp]]
            if need:
                batch = await consumer.getmany(*need, timeout_ms=1000, max_records=2000)
                for tp, records in batch.items():
                    for rec in records:
                        if rec.offset >= ends[tp]:
                            continue
                        count += 1
                        doc = self._decode(rec)
                        if doc is not None:
                            buffers[tp].append((event_time(doc), doc))
                for tp in need:
                    if await consumer.position(tp) >= ends[tp]:
                        done.add(tp)
                continue
            if not any(buffers.values()):
                break
            # Every partition still being read has something buffered: emit in event-time order
            # until one of them runs dry.
            ordered: list[dict[str, Any]] = []
            while all(buffers[tp] or tp in done for tp in tps):
                nonempty = [tp for tp in tps if buffers[tp]]
                if not nonempty:
                    break
                tp = min(nonempty, key=lambda t: buffers[t][0][0])
                ordered.append(buffers[tp].popleft()[1])
            # Events found while replaying were published before, or are settled by reconcile().
            await asyncio.to_thread(self.detector.process_many, ordered)
        self.replayed = count
        self.metrics.update(self.detector, self.config.max_metric_entities)
        log.info(
            "alert state rebuilt from labels",
            records=self.replayed,
            since_ms=since_ms,
            seconds=round(time.monotonic() - t0, 3),
        )

    async def _reconcile(self) -> None:
        result = reconcile(self.detector, self._published)
        for rec in result.to_resolve:
            await self._publish(self._resolved_from_record(rec))
        for kind, name in result.to_fire:
            event = self.detector.current_event(kind, name)
            if event is not None:
                await self._publish(event)
        log.info(
            "alert state reconciled",
            kept_firing=result.adopted,
            resolved_while_down=len(result.to_resolve),
            fired_while_down=len(result.to_fire),
            suppressed_refire=result.suppressed,
        )

    def _resolved_from_record(self, rec: ScopeAlertRecord) -> AlertEvent:
        now_ms = int(self._clock() * 1000)
        at = self.detector.watermark_ms or now_ms
        return self.detector.resolved_event(rec.scope_kind, rec.scope, rec.alert_id, rec.started_at_ms, at)

    # -- live ----------------------------------------------------------------------
    def _decode(self, rec: Any) -> dict[str, Any] | None:
        try:
            doc = orjson.loads(rec.value)
        except (orjson.JSONDecodeError, TypeError):
            self.detector.stats.invalid += 1
            self.detector.stats.last_invalid = f"{rec.topic}[{rec.partition}]@{rec.offset}: not JSON"
            return None
        if not isinstance(doc, dict):
            self.detector.stats.invalid += 1
            self.detector.stats.last_invalid = f"{rec.topic}[{rec.partition}]@{rec.offset}: not an object"
            return None
        return doc

    def _feed(self, batch: Mapping[TopicPartition, list[Any]]) -> list[AlertEvent]:
        docs = [d for records in batch.values() for rec in records if (d := self._decode(rec)) is not None]
        # A fetch holds several partitions one after another: put them back in event-time order.
        docs.sort(key=event_time)
        return self.detector.process_many(docs)

    async def _follow(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        last_data = time.monotonic()
        invalid_seen = self.detector.stats.invalid
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=1000)
                got = any(batch.values())
                # Off the event loop: in-process, the daemon's pipeline and probes share that loop.
                # Only this task touches the detector, one call at a time.
                events = await asyncio.to_thread(self._feed, batch) if got else []
                if got:
                    last_data = time.monotonic()
                elif time.monotonic() - last_data >= self.config.idle_advance_s:
                    # Quiet stream: let event time follow the wall clock so alerts can resolve.
                    events.extend(self.detector.advance_to(int(self._clock() * 1000)))
                for ev in events:
                    await self._publish(ev)
                if self.detector.stats.invalid > invalid_seen:
                    log.warning(
                        "labels records skipped by the alert engine",
                        count=self.detector.stats.invalid - invalid_seen,
                        last_reason=self.detector.stats.last_invalid,
                    )
                    invalid_seen = self.detector.stats.invalid
                self.metrics.update(self.detector, self.config.max_metric_entities)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = exc
            log.exception("alert engine stopped")
            raise

    async def _publish(self, event: AlertEvent) -> None:
        assert self._producer is not None
        key = scope_key(event.scope_kind, event.scope).encode()
        doc = event.to_json()
        doc["emitted_at"] = int(self._clock() * 1000)
        doc["labels_topic"] = self.labels_topic
        await self._producer.send_and_wait(self.config.alerts_topic, orjson.dumps(doc), key=key)
        state = record_for(
            self.detector,
            event.scope_kind,
            event.scope,
            state=event.state,
            alert_id=event.alert_id,
            started_at_ms=event.started_at_ms,
            resolved_at_ms=event.resolved_at_ms,
        )
        await self._producer.send_and_wait(self.config.state_topic, orjson.dumps(state.to_json()), key=key)
        self._published[state.key] = state
        self.published_events += 1
        self.metrics.observe_events([event])
        fields = {
            "alert_id": event.alert_id,
            "scope_kind": event.scope_kind,
            "scope": event.scope,
            "negative_share": round(event.negative_share, 4),
            "baseline_share": round(event.baseline_share, 4),
            "count": event.count,
            "statistic": round(event.statistic_value, 4),
            "threshold": round(event.threshold, 4),
        }
        if event.state == "firing":
            log.warning("negative sentiment spike", **fields)
        else:
            log.warning("negative sentiment spike resolved", **fields)
        if self._on_event is not None:
            self._on_event(event)
