"""The alert engine: labels topic in, alert JSON out (README "Alerts").

It reads every partition of the labels topic itself (no consumer group: the detector
must see the whole stream, so it runs once per deployment), ``read_committed``, so labels
of aborted transactions are never counted. On start it

1. reads the compacted state topic to its end: the last published state per scope;
2. replays the labels topic from ``now - baseline_window - lateness`` (``offsets_for_times``)
   to the end offsets seen at start, without publishing: this rebuilds every baseline;
3. reconciles (``state.reconcile``): alerts still firing keep their id, alerts that ended
   while it was down are resolved, old alerts are never fired again; open incidents are
   rebuilt from the scopes' state records;

then follows the topic live. Start-up and live both merge the labels partitions in event
time (``merge``); the detector's clock keeps one watermark per input partition (``clock``),
so labels of a partition worked behind the others are on time, and redelivered labels are
dropped by their source offset. Each incident change goes to the alerts topic (key
``kind:scope`` of the scope that opened it) and each scope's new state to the state topic,
in that order (``publish``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streamer.alerting.backlog import BacklogTracker
from streamer.alerting.detector import SpikeDetector
from streamer.alerting.events import AlertEvent
from streamer.alerting.incidents import Decisions, IncidentTracker
from streamer.alerting.merge import EventTimeMerge
from streamer.alerting.metrics import AlertMetrics, default_metrics
from streamer.alerting.publish import DropLog, Publisher
from streamer.alerting.rebuild import (
    FETCH_RECORDS,
    Item,
    decode,
    read_open_incidents,
    read_state,
    recover_unrecorded,
    replay_labels,
)
from streamer.alerting.state import ScopeAlertRecord, reconcile
from streamer.config import AlertsConfig, KafkaConfig
from streamer.errors import UsageError
from streamer.kafka.admin import TopicError, create_topics, topic_partitions, wait_for_leaders
from streamer.kafka.clients import client_kwargs, make_reader

log = structlog.get_logger("sentiwire.alerts")

STOP_WAIT_S = 10.0
SETTLE_ROUNDS = 3  # empty fetches after which a partition counts as caught up regardless


def _source_topic(doc: dict[str, Any]) -> str | None:
    src = doc.get("source")
    topic = src.get("topic") if isinstance(src, dict) else None
    return topic if isinstance(topic, str) and topic else None


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
        serving_group: str | None = None,
        input_topics: Sequence[str] = (),
    ) -> None:
        """``serving_group`` is the daemon's consumer group (``input.group_id``): its backlog
        keeps quiet input partitions waited for (``backlog``); None judges idleness by wall clock.
        ``input_topics`` (``input.topics``): their partitions are waited for from the start, so a
        partition the daemon has not labeled yet when the engine replays is not late later."""
        self.config = config
        self.serving_group = serving_group
        self.input_topics = list(input_topics)
        self.kafka = kafka
        self.labels_topic = labels_topic
        self.metrics = metrics if metrics is not None else default_metrics()
        self.detector = SpikeDetector(config)
        self.incidents = IncidentTracker.for_config(self.detector.rule, config)
        self._clock = clock
        self._on_event = on_event
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._publisher: Publisher | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = False
        self._published: dict[str, ScopeAlertRecord] = {}
        self._topic_partitions: dict[str, list[int]] = {}
        self._merge: EventTimeMerge[TopicPartition, Item] | None = None
        self._sources: set[str] = set()  # input topics whose partitions the clock knows
        self._inputs: list[TopicPartition] = []  # their partitions, for the backlog poll
        self._backlog = BacklogTracker(config.stalled_partition_s)
        self._backlog_error: str | None = None
        self._busy: frozenset[tuple[str, int]] = frozenset()  # input partitions with a backlog
        self._backlog_task: asyncio.Task[None] | None = None
        self._stalled_said: frozenset[tuple[str, int]] = frozenset()
        self._stopping = False
        self._client_kw: dict[str, Any] = {}
        self._drops = DropLog(labels_topic)
        self.replayed = 0
        self.failure: BaseException | None = None

    @property
    def ready(self) -> bool:
        return self._ready and (self._task is None or not self._task.done())

    @property
    def published_events(self) -> int:
        """Records written to the alerts topic (one per incident change)."""
        return 0 if self._publisher is None else self._publisher.alerts_published

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Rebuild state (state topic + replay), publish what reconciling requires, then follow live."""
        base = self._client_kw = {**client_kwargs(self.kafka), "client_id": self.config.client_id}
        await self._ensure_topics(base)
        self._producer = AIOKafkaProducer(**base, acks="all", enable_idempotence=True, linger_ms=0)
        self._consumer = make_reader(self.kafka, client_id=self.config.client_id)
        self._publisher = Publisher(
            self._producer,
            self.config,
            self.labels_topic,
            self.metrics,
            clock=self._clock,
            on_event=self._on_event,
        )
        try:
            await self._producer.start()
            await self._consumer.start()
            self._published = await self._read_state_topic()
            await self._recover_unrecorded()
            self._publisher.published = self._published
            await self._expect_sources(set(self.input_topics))
            await self._replay()
            await self._reconcile()
            await self._expect_sources(self._sources_in_lanes())
        except BaseException:
            await self.stop()
            raise
        self._ready = True
        self._task = asyncio.create_task(self._follow(), name="alert-engine")
        if self.serving_group is not None:
            self._backlog_task = asyncio.create_task(
                self._watch_backlog(self.serving_group), name="alert-engine-backlog"
            )
        log.info(
            "alert engine ready",
            labels_topic=self.labels_topic,
            replayed=self.replayed,
            active=len(self.detector.active_alerts()),
            incidents=len(self.incidents.open_incidents()),
            scopes=len(self.detector.scopes()),
            partitions=len(self.detector.clock.lanes),
        )

    async def stop(self) -> None:
        """Let the live loop finish the step it is in (an alert and its state records go out
        together), then close the clients; cancel it if it does not within ``STOP_WAIT_S``."""
        self._ready = False
        self._stopping = True
        if self._backlog_task is not None:
            self._backlog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._backlog_task
            self._backlog_task = None
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._task), STOP_WAIT_S)
            if not self._task.done():
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
        return await read_state(self._consumer, self._partitions(self.config.state_topic))

    def _horizon_ms(self) -> int:
        horizon_s = self.config.baseline_window_s + self.config.allowed_lateness_s + self.config.bucket_s
        return int((self._clock() - horizon_s) * 1000)

    async def _recover_unrecorded(self) -> None:
        assert self._consumer is not None
        tps = self._partitions(self.config.alerts_topic)
        paged = await read_open_incidents(self._consumer, tps, self._horizon_ms())
        recovered = recover_unrecorded(self._published, paged)
        if recovered:
            log.warning(
                "paged scopes without a state record recovered from the alerts topic", scopes=recovered
            )

    async def _replay(self) -> None:
        """Feed the last baseline window to the detector, partitions merged in event time."""
        assert self._consumer is not None
        since_ms = self._horizon_ms()
        t0 = time.monotonic()
        self.replayed = await replay_labels(
            self._consumer, self._partitions(self.labels_topic), self.detector, since_ms
        )
        self.metrics.update(self.detector, self.config.max_metric_entities, now_ms=int(self._clock() * 1000))
        log.info(
            "alert state rebuilt from labels",
            records=self.replayed,
            since_ms=since_ms,
            seconds=round(time.monotonic() - t0, 3),
            late=self.detector.stats.late,
            duplicates=self.detector.stats.duplicate,
        )

    async def _reconcile(self) -> None:
        det = self.detector
        result = reconcile(det, self._published)
        # Incidents open before the restart: every scope published as firing, by incident.
        members: list[tuple[str, AlertEvent]] = []
        for rec in self._published.values():
            if rec.state == "firing":
                ev = det.current_event(rec.scope_kind, rec.scope) or self._firing_from_record(rec)
                members.append((rec.incident_id or rec.alert_id, ev))
        self.incidents.restore(members)
        resolved = [self._resolved_from_record(rec) for rec in result.to_resolve]
        fired = [e for kind, name in result.to_fire if (e := det.current_event(kind, name)) is not None]
        for scopes in (resolved, fired):
            if scopes:
                await self._publish(self.incidents.observe(scopes, until_ms=det.judged_until_ms), scopes)
        log.info(
            "alert state reconciled",
            kept_firing=result.adopted,
            resolved_while_down=len(result.to_resolve),
            fired_while_down=len(result.to_fire),
            suppressed_refire=result.suppressed,
            open_incidents=len(self.incidents.open_incidents()),
        )

    def _resolved_from_record(self, rec: ScopeAlertRecord) -> AlertEvent:
        now_ms = int(self._clock() * 1000)
        at = self.detector.watermark_ms or now_ms
        return self.detector.resolved_event(rec.scope_kind, rec.scope, rec.alert_id, rec.started_at_ms, at)

    def _firing_from_record(self, rec: ScopeAlertRecord) -> AlertEvent:
        ev = self._resolved_from_record(rec)
        return AlertEvent(**{**ev.__dict__, "state": "firing", "resolved_at_ms": None})

    def _sources_in_lanes(self) -> set[str]:
        return {topic for _, topic, _ in self.detector.clock.lanes if topic}

    async def _expect_sources(self, topics: set[str]) -> None:
        """Let the clock wait for every partition of input topics it has seen labels of."""
        for topic in sorted(topics - self._sources):
            self._sources.add(topic)
            try:
                tps = await topic_partitions(self._client_kw, topic)
            except (
                TopicError,
                KafkaError,
                OSError,
            ) as exc:  # not on this cluster: lanes appear as they deliver
                log.info("input topic partitions unknown to the alert engine", topic=topic, error=str(exc))
                continue
            self.detector.expect_sources([(topic, tp.partition) for tp in tps], time.monotonic())
            self._inputs.extend(tps)

    # -- backlog -------------------------------------------------------------------
    async def _watch_backlog(self, group: str) -> None:
        """Every ``backlog_poll_s``: the input partitions the serving group still has to label.

        Its own task and clients, so a slow coordinator never holds up the live loop. When the
        offsets cannot be read (no Describe on the group, a broker away) the last answer stands
        for ``stalled_partition_s``, then the clock falls back to wall-clock idleness; said once.
        """
        admin: AIOKafkaAdminClient | None = None
        ends_reader: AIOKafkaConsumer | None = None
        failing_since: float | None = None
        timeout_s = self.kafka.request_timeout_ms / 1000
        try:
            while not self._stopping:
                inputs = list(self._inputs)
                now = time.monotonic()
                try:
                    if inputs:
                        if admin is None:
                            admin = AIOKafkaAdminClient(**self._client_kw)
                            await admin.start()
                        if ends_reader is None:
                            ends_reader = make_reader(self.kafka, client_id=self.config.client_id)
                            await ends_reader.start()
                        committed = await asyncio.wait_for(
                            admin.list_consumer_group_offsets(group, partitions=inputs), timeout_s
                        )
                        ends = await asyncio.wait_for(ends_reader.end_offsets(inputs), timeout_s)
                        self._backlog_read(group, now, committed, ends)
                        failing_since = None
                except (TimeoutError, KafkaError, OSError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    if error != self._backlog_error:
                        log.warning(
                            "serving group offsets unreadable: the alert clock keeps the last answer, "
                            "then judges idle input partitions by wall clock only",
                            group=group,
                            error=error,
                        )
                    self._backlog_error = error
                    failing_since = now if failing_since is None else failing_since
                    if now - failing_since >= self.config.stalled_partition_s:
                        self._busy = frozenset()
                except Exception:  # never leave a hold standing behind a broken watch
                    log.exception("serving group backlog watch failed; idle input partitions by wall clock")
                    self._busy = frozenset()
                await asyncio.sleep(self.config.backlog_poll_s)
        finally:
            with contextlib.suppress(Exception):
                if admin is not None:
                    await admin.close()
            with contextlib.suppress(Exception):
                if ends_reader is not None:
                    await ends_reader.stop()

    def _backlog_read(
        self,
        group: str,
        now_s: float,
        committed: dict[TopicPartition, Any],
        ends: dict[TopicPartition, int],
    ) -> None:
        if self._backlog_error is not None:
            log.info("serving group offsets readable again", group=group)
            self._backlog_error = None
        self._busy = self._backlog.update(
            now_s,
            {(tp.topic, tp.partition): om.offset for tp, om in committed.items()},
            {(tp.topic, tp.partition): end for tp, end in ends.items()},
        )
        self.metrics.input_backlog.set(sum(self._backlog.behind.values()))
        if self._backlog.stalled - self._stalled_said:
            log.warning(
                "input partitions not worked by the serving group: the alert clock no longer waits for them",
                group=group,
                partitions=sorted(f"{t}-{p}" for t, p in self._backlog.stalled),
                stalled_partition_s=self.config.stalled_partition_s,
            )
        self._stalled_said = self._backlog.stalled

    async def _labels_backlog(self, tps: list[TopicPartition]) -> dict[int, int | None]:
        """Per labels partition, records this engine has not read yet (read_committed: up to the
        last stable offset); None where that offset is not known yet."""
        assert self._consumer is not None
        out: dict[int, int | None] = {}
        for tp in tps:
            end = self._consumer.last_stable_offset(tp)
            out[tp.partition] = None if end is None else max(0, end - await self._consumer.position(tp))
        return out

    async def _unread_labels(self, tps: list[TopicPartition]) -> list[int]:
        """Labels partitions this engine has not read to their end yet."""
        return [p for p, n in (await self._labels_backlog(tps)).items() if n]

    # -- live ----------------------------------------------------------------------
    async def _caught_up(self, tp: TopicPartition) -> bool:
        """Nothing more to read on ``tp`` right now (read_committed: up to the last stable offset)."""
        assert self._consumer is not None
        end = self._consumer.last_stable_offset(tp)
        return end is not None and await self._consumer.position(tp) >= end

    async def _labels_behind(self) -> int | None:
        backlog = await self._labels_backlog(self._partitions(self.labels_topic))
        if any(n is None for n in backlog.values()):
            return None
        behind = sum(n for n in backlog.values() if n is not None)
        return behind + (self._merge.buffered if self._merge is not None else 0)

    def _step(
        self, ready: list[Item], now_s: float, advance_ms: int | None
    ) -> tuple[list[AlertEvent], Decisions]:
        """Off the event loop: count what is ready, let idle partitions go, judge what is due."""
        det = self.detector
        events = det.process_from(ready, now_s=now_s)
        events += det.tick(now_s)
        if advance_ms is not None:
            events += det.advance_to(advance_ms)
        return events, self.incidents.observe(events, until_ms=det.judged_until_ms)

    async def _follow(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        tps = self._partitions(self.labels_topic)
        merge = self._merge = EventTimeMerge(tps)
        empty_rounds = dict.fromkeys(tps, 0)
        last_data = time.monotonic()
        invalid_seen = self.detector.stats.invalid
        try:
            while not self._stopping:
                want = merge.wanting()
                batch = (
                    await consumer.getmany(*want, timeout_ms=500, max_records=FETCH_RECORDS) if want else {}
                )
                settled = set()
                for tp in want:
                    records = batch.get(tp) or []
                    if records:
                        merge.push(tp, decode(records, self.detector.stats))
                        empty_rounds[tp] = 0
                        last_data = time.monotonic()
                        continue
                    empty_rounds[tp] += 1
                    if empty_rounds[tp] >= SETTLE_ROUNDS or await self._caught_up(tp):
                        settled.add(tp)
                ready = merge.pop_ready(settled)
                self.detector.hold(self._busy, await self._unread_labels(tps))
                new_sources = {t for doc, _ in ready if (t := _source_topic(doc)) is not None}
                if new_sources - self._sources:
                    await self._expect_sources(new_sources)
                advance_ms = None
                if (
                    not ready
                    and not merge.buffered
                    and time.monotonic() - last_data >= self.config.idle_advance_s
                ):
                    # Quiet stream: let event time follow the wall clock so alerts can resolve.
                    advance_ms = int(self._clock() * 1000)
                # Off the event loop: in-process, the daemon's pipeline and probes share that loop.
                # Only this task touches the detector, one call at a time.
                events, decided = await asyncio.to_thread(self._step, ready, time.monotonic(), advance_ms)
                if events or decided.incidents or decided.record:
                    await self._publish(decided, events)
                if self.detector.stats.invalid > invalid_seen:
                    log.warning(
                        "labels records skipped by the alert engine",
                        count=self.detector.stats.invalid - invalid_seen,
                        last_reason=self.detector.stats.last_invalid,
                    )
                    invalid_seen = self.detector.stats.invalid
                self._drops.report(self.detector)
                self.metrics.buffered.set(merge.buffered)
                self.metrics.update(
                    self.detector, self.config.max_metric_entities, now_ms=int(self._clock() * 1000)
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = exc
            log.exception("alert engine stopped")
            raise

    async def _publish(self, decided: Decisions, events: list[AlertEvent]) -> None:
        assert self._publisher is not None
        behind = await self._labels_behind() if decided.incidents else None
        await self._publisher.publish(
            self.detector, self.incidents, decided.incidents, decided.record, events, labels_behind=behind
        )
