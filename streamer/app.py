"""Wiring and lifecycle of ``sentiwire serve``.

Start: load + verify + warm the model (a bad bundle is a start-up error), start the
producer and consumer, check the topics exist, subscribe, start the pipeline, the HTTP
port, the hot-reload watcher and (``alerts.enabled``) the alert engine.
Stop (SIGTERM/SIGINT): stop fetching, drain in-flight batches, commit, leave the group,
flush the producer, all within ``shutdown_timeout_s``; exit status 0. A pipeline failure
(broker rejects labels, producer fenced) stops the daemon with exit status 1 so the
orchestrator restarts it from the last commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiokafka.errors import KafkaError
from prometheus_client import REGISTRY, CollectorRegistry

from streamer.alerting.engine import AlertEngine
from streamer.config import ModelConfig, Settings
from streamer.enums import Delivery
from streamer.errors import ExitCode, SentiwireError, UsageError
from streamer.http import HttpServer
from streamer.kafka.clients import make_consumer, make_producer, start_with_backoff
from streamer.metrics import Metrics
from streamer.model.classifier import Classifier
from streamer.model.loading import fingerprint, load_classifier
from streamer.model.reload import ModelHolder, Reloader
from streamer.pipeline import Pipeline

log = structlog.get_logger("sentiwire.app")

# Readiness follows the brokers: one metadata request this often (it also bounds the request).
KAFKA_PROBE_INTERVAL_S = 2.0


class StartupError(UsageError):
    """The daemon cannot start as configured (model, topics); the message says which and why."""


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry = REGISTRY,
        loader: Callable[[ModelConfig], Classifier] = load_classifier,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics(registry)
        self._registry = registry
        self._loader = loader
        self._stop = asyncio.Event()
        self._stopping = False
        self.pipeline: Pipeline | None = None
        self.models: ModelHolder | None = None
        self.http: HttpServer | None = None
        self.alerts: AlertEngine | None = None
        self.started = asyncio.Event()
        self.kafka_reachable = True
        self.exit_code: int | None = None
        self.metrics.ready.set_function(lambda: 1.0 if self.ready()[0] else 0.0)

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stop requested: draining")
        self._stop.set()

    def ready(self) -> tuple[bool, str]:
        if self.models is None:
            return False, "model not loaded"
        if self.pipeline is None or not self.pipeline.joined:
            return False, "consumer has not joined its group yet"
        if self._stopping:
            return False, "shutting down"
        if not self.kafka_reachable:
            return False, "Kafka not reachable (metadata requests fail); riding it out"
        if not self.pipeline.healthy():
            return False, "pipeline failed"
        return (
            True,
            f"ok: model {self.models.current.bundle.version}, partitions {len(self.pipeline.assignment)}",
        )

    def healthy(self) -> tuple[bool, str]:
        if self.pipeline is not None and not self.pipeline.healthy() and not self._stopping:
            return False, f"pipeline failed: {self.pipeline.fatal!r}"
        if self.alerts is not None and self.alerts.failure is not None:
            return False, f"alert engine failed: {self.alerts.failure!r}"
        return True, "ok"

    async def run(self) -> int:
        self.exit_code = await self._run()
        return self.exit_code

    async def _run(self) -> int:
        s = self.settings
        try:
            clf, fp = await self._load_model()
        except StartupError as exc:
            log.error("cannot start", error=str(exc))
            return exc.exit_code
        self.models = ModelHolder(clf, fp, self.metrics)
        self.metrics.set_runtime(clf.runtime_name, clf.precision, clf.provider)
        b = clf.bundle
        log.info(
            "model loaded",
            name=b.name,
            version=b.version,
            provider=clf.provider,
            variant=clf.variant,
            runtime=clf.runtime_name,
            precision=clf.precision,
            chosen=clf.choice.reason,
            device=s.model.device,
            path=str(s.model.path),
        )
        consumer = make_consumer(s)
        exactly_once = s.delivery == Delivery.EXACTLY_ONCE
        producer = None if exactly_once else make_producer(s)
        tasks: list[asyncio.Task[Any]] = []
        engine: AlertEngine | None = None
        try:
            if s.http.enabled:  # first, so probes answer (not ready) while Kafka is awaited
                self.http = HttpServer(self._registry, self.healthy, self.ready, s.http.host, s.http.port)
                port = await self.http.start()
                log.info("http listening", host=s.http.host, port=port)
            if producer is not None:
                await start_with_backoff(producer, s.kafka, "producer")
            await start_with_backoff(consumer, s.kafka, "consumer")
            await self._check_topics(consumer)
            self.pipeline = Pipeline(
                s,
                consumer,
                producer,
                self.models,
                self.metrics,
                producer_factory=lambda tid: make_producer(s, transactional_id=tid),
            )
            consumer.subscribe(s.input.topics, listener=self.pipeline.listener())
            self.pipeline.start()
            tasks.append(
                asyncio.create_task(Reloader(s.model, self.models, self.metrics).run(), name="reload")
            )
            tasks.append(asyncio.create_task(self._watch_kafka(consumer), name="kafka-probe"))
            engine = await self._start_alerts()
        except SentiwireError as exc:
            log.error("cannot start", error=str(exc), bootstrap_servers=s.kafka.bootstrap_servers)
            await self._close(consumer, producer, tasks, engine)
            return exc.exit_code
        except KafkaError as exc:
            log.error("cannot start: Kafka", error=repr(exc), bootstrap_servers=s.kafka.bootstrap_servers)
            await self._close(consumer, producer, tasks, engine)
            return ExitCode.UNAVAILABLE
        except Exception:
            log.exception("cannot start", bootstrap_servers=s.kafka.bootstrap_servers)
            await self._close(consumer, producer, tasks, engine)
            return ExitCode.FAILED
        log.info(
            "serving",
            topics=s.input.topics,
            group_id=s.input.group_id,
            labels_topic=s.output.labels_topic,
            dead_letter_topic=s.output.dead_letter_topic,
            delivery=s.delivery,
        )
        self.started.set()
        stop_wait = asyncio.create_task(self._stop.wait())
        failed_wait = asyncio.create_task(self.pipeline.wait_failed())
        await asyncio.wait({stop_wait, failed_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        failed_wait.cancel()
        self._stopping = True
        t0 = time.monotonic()
        drained = await self.pipeline.stop(timeout_s=s.shutdown_timeout_s * 0.8)
        log.debug("pipeline stopped", seconds=round(time.monotonic() - t0, 3))
        fatal = self.pipeline.fatal
        await self._close(consumer, producer, tasks, engine)
        log.info(
            "stopped",
            drained=drained,
            seconds=round(time.monotonic() - t0, 3),
            error=repr(fatal) if fatal else None,
        )
        return ExitCode.FAILED if fatal is not None else ExitCode.OK

    async def _watch_kafka(self, consumer: Any) -> None:
        """Not ready while the brokers do not answer; clients reconnect by themselves meanwhile."""
        while True:
            await asyncio.sleep(KAFKA_PROBE_INTERVAL_S)
            error: BaseException | None = None
            try:
                async with asyncio.timeout(KAFKA_PROBE_INTERVAL_S * 2):
                    await consumer.topics()
            except (KafkaError, TimeoutError) as exc:
                error = exc
            if (error is None) != self.kafka_reachable:
                if error is None:
                    log.info("Kafka reachable again")
                else:
                    log.warning("Kafka not reachable; not ready until it is", error=repr(error))
            self.kafka_reachable = error is None

    async def _load_model(self) -> tuple[Classifier, Any]:
        cfg = self.settings.model
        fp = await asyncio.to_thread(fingerprint, cfg.path)
        try:
            clf = await asyncio.to_thread(self._loader, cfg)
        except Exception as exc:
            raise StartupError(f"model at {cfg.path}: {exc}") from exc
        return clf, fp

    async def _check_topics(self, consumer: Any) -> None:
        s = self.settings
        existing = await consumer.topics()
        wanted = [*s.input.topics, s.output.labels_topic, s.output.dead_letter_topic]
        if s.output.shadow_labels_topic is not None:
            wanted.append(s.output.shadow_labels_topic)
        missing = [t for t in wanted if t not in existing]
        hidden = await self._unauthorized(missing)
        if hidden:
            raise StartupError(
                f"not authorized for topics {hidden} as {s.kafka.sasl_username or 'this client'} on "
                f"{s.kafka.bootstrap_servers}: grant READ on the input topics and the group, WRITE on "
                "the labels and dead-letter topics (Kafka ACLs)"
            )
        if missing:
            raise StartupError(
                f"topics missing on {s.kafka.bootstrap_servers}: {missing} (create them; the daemon never does)"
            )
        await self._check_group()

    async def _check_group(self) -> None:
        """No ACL on the consumer group shows only when the group is joined, after "serving"; ask
        for its coordinator first (needs Describe, which Read implies) and refuse to start. Any
        other answer (no coordinator yet on a fresh cluster) is the group join's to retry."""
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.errors import GroupAuthorizationFailedError, KafkaError

        from streamer.kafka.clients import client_kwargs

        s = self.settings
        admin = AIOKafkaAdminClient(**client_kwargs(s.kafka))
        await admin.start()
        try:
            await admin.find_coordinator(s.input.group_id)
        except GroupAuthorizationFailedError as exc:
            raise StartupError(
                f"not authorized for consumer group {s.input.group_id!r} as "
                f"{s.kafka.sasl_username or 'this client'} on {s.kafka.bootstrap_servers}: grant READ on "
                "the group (Kafka ACLs)"
            ) from exc
        except KafkaError as exc:
            log.debug("group coordinator not known yet", group=s.input.group_id, error=repr(exc))
        finally:
            await admin.close()

    async def _unauthorized(self, topics: list[str]) -> list[str]:
        """Of topics the metadata did not list, those that exist but this principal may not see."""
        if not topics:
            return []
        from aiokafka.admin import AIOKafkaAdminClient

        from streamer.kafka.clients import client_kwargs

        admin = AIOKafkaAdminClient(**client_kwargs(self.settings.kafka))
        await admin.start()
        try:
            described = await admin.describe_topics(topics)
        finally:
            await admin.close()
        return [d["topic"] for d in described if d.get("error_code") == 29]  # TOPIC_AUTHORIZATION_FAILED

    async def _start_alerts(self) -> AlertEngine | None:
        s = self.settings
        if not s.alerts.enabled:
            return None
        engine = AlertEngine(
            s.alerts,
            s.kafka,
            s.output.labels_topic,
            serving_group=s.input.group_id,
            input_topics=s.input.topics,
        )
        self.alerts = engine
        await engine.start()
        log.info("alert engine started", alerts_topic=s.alerts.alerts_topic)
        return engine

    async def _close(
        self, consumer: Any, producer: Any, tasks: list[asyncio.Task[Any]], engine: AlertEngine | None
    ) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if engine is not None:
            with contextlib.suppress(Exception):
                await engine.stop()
        t0 = time.monotonic()
        if self.http is not None:
            await self.http.stop()
        log.debug("http stopped", seconds=round(time.monotonic() - t0, 3))
        t0 = time.monotonic()
        with contextlib.suppress(Exception):
            await consumer.stop()
        t1 = time.monotonic()
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
        log.debug("clients closed", consumer_s=round(t1 - t0, 3), producer_s=round(time.monotonic() - t1, 3))


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT (or a fatal pipeline error); returns the exit status."""
    daemon = Daemon(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    try:
        return await daemon.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
