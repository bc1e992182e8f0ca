"""The data path, wired: consume -> decode -> batch -> infer -> publish -> commit.

========================  =====================================================
step                      module
========================  =====================================================
consume (getmany)         fetcher.py (+ backpressure: pause / resume)
decode, outputs, headers  records.py (pure)
batch                     batching.py (pure) driven by scheduler.py
tokenize + infer          model/classifier.py on the scheduler's worker threads
publish, ack, commit      sinks.py (at-least-once / transactional)
offset bookkeeping        offsets.py (pure)
rebalance                 rebalance.py
========================  =====================================================

This module only builds the stages, runs their loops as tasks and stops them in order; the
shared run state is a :class:`~streamer.flow.Flow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamer.config import Settings
from streamer.enums import Delivery
from streamer.fetcher import Fetcher
from streamer.flow import Flow
from streamer.metrics import Metrics
from streamer.model.reload import ModelHolder
from streamer.offsets import OffsetTracker
from streamer.rebalance import Rebalancer
from streamer.scheduler import Scheduler
from streamer.sinks import AtLeastOnceSink, Sink, TransactionalSink

log = structlog.get_logger("sentiwire.pipeline")


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer | None,
        models: ModelHolder,
        metrics: Metrics,
        *,
        producer_factory: Callable[[str], AIOKafkaProducer] | None = None,
    ) -> None:
        """``producer`` serves at_least_once; exactly_once makes one producer per owned partition
        with ``producer_factory(transactional_id)``."""
        self.settings = settings
        self.flow = Flow()
        self.tracker = OffsetTracker()
        b = settings.batching
        sink: Sink
        if settings.delivery == Delivery.EXACTLY_ONCE:
            if producer_factory is None:
                raise ValueError("exactly_once needs a producer_factory")
            sink = TransactionalSink(
                producer_factory,
                self.tracker,
                self.flow,
                metrics,
                id_prefix=settings.transactional_id(),
                group_id=settings.input.group_id,
                dead_letter_topic=settings.output.dead_letter_topic,
                commit_interval_s=settings.exactly_once.commit_interval_ms / 1000.0,
            )
        else:
            if producer is None:
                raise ValueError("at_least_once needs a producer")
            sink = AtLeastOnceSink(
                producer,
                consumer,
                self.tracker,
                self.flow,
                metrics,
                owned=self._owned,
                dead_letter_topic=settings.output.dead_letter_topic,
                commit_interval_s=b.commit_interval_ms / 1000.0,
            )
        self.sink = sink
        self.scheduler = Scheduler(settings, models, sink, self.flow, metrics)
        self.rebalancer = Rebalancer(
            self.scheduler,
            sink,
            self.tracker,
            self.flow,
            metrics,
            revoke_wait_s=settings.shutdown_timeout_s,
        )
        self.fetcher = Fetcher(
            consumer,
            self.tracker,
            self.flow,
            metrics,
            input_cfg=settings.input,
            max_in_flight=b.max_in_flight,
            fetch_max=max(b.max_batch_size * 4, 100),
            owned=self._owned,
            deliver=self.scheduler.add,
        )
        self._fetch_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _owned(self) -> frozenset[TopicPartition]:
        return self.rebalancer.assigned

    # ---------------------------------------------------------------- lifecycle

    def listener(self) -> Rebalancer:
        return self.rebalancer

    def start(self) -> None:
        self._fetch_task = self._spawn(self.fetcher.run(), "fetch")
        self._spawn(self.scheduler.run(), "batch")
        for name, loop in self.sink.loops().items():
            self._spawn(loop, name)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guard(coro), name=name)
        self._tasks.append(task)
        return task

    @property
    def in_flight(self) -> int:
        return self.tracker.unacked_total()

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self.rebalancer.assigned)

    @property
    def joined(self) -> bool:
        return self.rebalancer.joined

    @property
    def fatal(self) -> BaseException | None:
        return self.flow.fatal

    def healthy(self) -> bool:
        return self.flow.fatal is None and all(not t.done() for t in self._tasks)

    async def wait_failed(self) -> None:
        await self.flow.wait_failed()

    async def stop(self, timeout_s: float) -> bool:
        """Stop fetching, drain in-flight work, commit. True if everything drained in time."""
        flow = self.flow
        deadline = time.monotonic() + timeout_s
        flow.draining = True
        flow.notify()
        self.scheduler.wake()
        # The fetch task may be inside getmany(): let it return first, so that "nothing in
        # flight" below really means nothing more will be published before the final commit.
        fetch = self._fetch_task
        if fetch is not None and not fetch.done():
            await asyncio.wait({fetch}, timeout=max(deadline - time.monotonic(), 0.0))
        drained = await flow.wait_for(lambda: self.in_flight == 0 or flow.fatal is not None, deadline)
        if not drained:
            log.warning("shutdown timeout: committing what is acknowledged", in_flight=self.in_flight)
        if flow.fatal is None:
            await self.sink.commit()
        flow.closed = True
        self.scheduler.wake()
        await self.sink.close()
        pending = (await asyncio.wait(self._tasks, timeout=1.0))[1] if self._tasks else set()
        for task in pending:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.scheduler.shutdown()
        return drained

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            task = asyncio.current_task()
            log.exception("pipeline task failed", task=task.get_name() if task else None)
            self.flow.fail(exc)
            raise
