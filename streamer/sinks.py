"""Where labels go: the at-least-once and the transactional (exactly-once) sink.

Both sinks publish a batch's outputs in order and own every commit step of their mode; the
order of steps is the guarantee.

at_least_once (:class:`AtLeastOnceSink`):

1. A record is *tracked* when fetched (offsets.OffsetTracker, per partition, fetch order).
2. Its output (label or dead letter) is handed to the idempotent producer (acks=all).
3. When the broker acknowledges that output, the record is *acked* (acks are awaited in order).
4. A partition's watermark moves to the first tracked-but-unacked offset (or past the
   last tracked one when all are acked): every earlier fetched offset has its output durable.
5. Every ``commit_interval_ms``, on revocation and on shutdown, the watermarks that moved
   are committed for partitions this consumer still owns.
6. A failed commit (CommitFailedError: the group moved on) is logged and counted, never
   retried in a loop: the partition's new owner resumes from the last good commit, which
   at worst re-labels a few records (at-least-once), never skips one.

exactly_once (:class:`TransactionalSink`): labels + dead letters + the input positions go into
one Kafka transaction (``send_offsets_to_transaction``) that spans the batches of
``exactly_once.commit_interval_ms`` and is also committed on revocation and shutdown; records
are acked when it commits. A failed transaction is aborted and stops the daemon: a restart
resumes from the last committed transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError, MessageSizeTooLargeError

from streamer.flow import Flow, PipelineError
from streamer.metrics import Metrics
from streamer.offsets import OffsetTracker
from streamer.records import DeadLetter, Output

log = structlog.get_logger("sentiwire.sinks")

Owned = Callable[[], Iterable[TopicPartition]]


class Sink(Protocol):
    """What the scheduler and the rebalance handler need of a sink."""

    def deadline(self) -> float | None:
        """When :meth:`flush` must run at the latest (monotonic), or None."""

    async def publish(self, outs: list[Output]) -> None:
        """Hand one batch's outputs to the producer, in order."""

    async def flush(self) -> None:
        """Make what was published durable and its positions committed now (transactions)."""

    async def commit(self, tps: Iterable[TopicPartition] | None = None) -> None:
        """Commit the positions of owned (or the given) partitions whose outputs are durable."""

    def loops(self) -> dict[str, Coroutine[Any, Any, None]]:
        """Background loops the pipeline runs as tasks, by task name (acks, periodic commits)."""

    def close(self) -> None:
        """Let the background loops return."""


def fmt_offsets(offsets: dict[TopicPartition, int]) -> dict[str, int]:
    return {f"{tp.topic}-{tp.partition}": pos for tp, pos in offsets.items()}


class _ProducerSink:
    """Sending with the dead-letter size fallback, and the bookkeeping of an acknowledged output."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        tracker: OffsetTracker,
        flow: Flow,
        metrics: Metrics,
        *,
        dead_letter_topic: str,
    ) -> None:
        self.producer = producer
        self.tracker = tracker
        self.flow = flow
        self.metrics = metrics
        self._dead_letter_topic = dead_letter_topic

    async def _send(self, out: Output) -> asyncio.Future[Any]:
        """Hand one record to the producer; returns the broker-acknowledgement future."""
        key, value = out.for_producer()
        try:
            fut: asyncio.Future[Any] = await self.producer.send(
                out.topic, value=value, key=key, headers=out.headers
            )
            return fut
        except MessageSizeTooLargeError:
            if out.topic != self._dead_letter_topic:
                raise
            return await self._send_without_value(out)

    async def _send_without_value(self, out: Output) -> asyncio.Future[Any]:
        """A dead letter too big to republish still leaves a trace: its headers, no value."""
        trace = out.without_value()
        key, value = trace.for_producer()
        fut: asyncio.Future[Any] = await self.producer.send(
            trace.topic, value=value, key=key, headers=trace.headers
        )
        return fut

    def _done(self, out: Output) -> None:
        """The broker has the output: ack its input offset and count it."""
        it = out.item
        self.tracker.ack(it.tp, it.offset)
        m = self.metrics
        m.in_flight.set(self.tracker.unacked_total())
        dec = it.decoded
        if isinstance(dec, DeadLetter):
            m.dead_lettered.labels(reason=dec.reason.value).inc()
        else:
            m.published.labels(topic=out.topic).inc()
            m.processing_seconds.observe(time.monotonic() - it.fetched_at)
            if dec.source.timestamp is not None and dec.source.timestamp > 0:
                m.end_to_end_seconds.observe(max(time.time() - dec.source.timestamp / 1000.0, 0.0))
        self.flow.notify()


@dataclass(slots=True)
class _Pending:
    out: Output
    future: asyncio.Future[Any]


class AtLeastOnceSink(_ProducerSink):
    """Steps 2-6 above: send, await acks in order, commit watermarks periodically."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
        tracker: OffsetTracker,
        flow: Flow,
        metrics: Metrics,
        *,
        owned: Owned,
        dead_letter_topic: str,
        commit_interval_s: float,
    ) -> None:
        super().__init__(producer, tracker, flow, metrics, dead_letter_topic=dead_letter_topic)
        self.consumer = consumer
        self._owned = owned
        self._interval = commit_interval_s
        self._acks: asyncio.Queue[_Pending | None] = asyncio.Queue()

    def deadline(self) -> float | None:
        return None

    async def publish(self, outs: list[Output]) -> None:
        for out in outs:
            self._acks.put_nowait(_Pending(out, await self._send(out)))

    async def flush(self) -> None:
        return None  # acks arrive on their own; commits run on their interval

    def loops(self) -> dict[str, Coroutine[Any, Any, None]]:
        return {"ack": self._ack_loop(), "commit": self._commit_loop()}

    def close(self) -> None:
        self._acks.put_nowait(None)

    async def _ack_loop(self) -> None:
        while True:
            pending = await self._acks.get()
            if pending is None:
                return
            try:
                await pending.future
            except MessageSizeTooLargeError:
                if pending.out.topic != self._dead_letter_topic:
                    raise
                await (await self._send_without_value(pending.out))
            except KafkaError as exc:
                raise PipelineError(
                    f"broker did not accept a record for {pending.out.topic}: {exc!r}"
                ) from exc
            self._done(pending.out)

    async def _commit_loop(self) -> None:
        while not self.flow.closed:
            await asyncio.sleep(self._interval)
            if not self.flow.rebalancing:
                await self.commit()
            self._update_lag()

    async def commit(self, tps: Iterable[TopicPartition] | None = None) -> None:
        """Steps 5/6 for owned (or the given) partitions."""
        offsets = self.tracker.to_commit(self._owned() if tps is None else tps)
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            self.metrics.commits.labels(result="failure").inc()
            log.warning("offset commit failed; not retried", error=repr(exc), offsets=fmt_offsets(offsets))
            return
        self.tracker.mark_committed(offsets)
        self.metrics.commits.labels(result="success").inc()
        log.debug("committed", offsets=fmt_offsets(offsets))

    def _update_lag(self) -> None:
        for tp in list(self._owned()):
            high = self.consumer.highwater(tp)
            pos = self.tracker.committed(tp)
            if high is not None and pos is not None:
                self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(high - pos, 0)
                )


class TransactionalSink(_ProducerSink):
    """One open transaction spanning batches; outputs and input positions commit together."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        tracker: OffsetTracker,
        flow: Flow,
        metrics: Metrics,
        *,
        group_id: str,
        dead_letter_topic: str,
        commit_interval_s: float,
    ) -> None:
        super().__init__(producer, tracker, flow, metrics, dead_letter_topic=dead_letter_topic)
        self._group_id = group_id
        self._interval = commit_interval_s
        self._started: float | None = None
        self._outs: list[Output] = []
        self._futures: list[asyncio.Future[Any]] = []

    def deadline(self) -> float | None:
        return None if self._started is None else self._started + self._interval

    def _due(self) -> bool:
        deadline = self.deadline()
        return deadline is not None and (time.monotonic() >= deadline or self.flow.flushing)

    async def publish(self, outs: list[Output]) -> None:
        """Send a batch's records inside the open transaction (opening one if needed)."""
        try:
            if self._started is None:
                await self.producer.begin_transaction()
                self._started = time.monotonic()
            for out in outs:
                self._futures.append(await self._send(out))
                self._outs.append(out)
        except KafkaError as exc:
            await self._abort(exc)
        if self._due():
            await self.flush()

    async def flush(self) -> None:
        """Labels + dead letters + input positions become visible together, or not at all."""
        if self._started is None:
            return
        outs, futures = self._outs, self._futures
        positions: dict[TopicPartition, int] = {}
        for out in outs:
            tp = out.item.tp
            positions[tp] = max(positions.get(tp, 0), out.item.offset + 1)
        try:
            await asyncio.gather(*futures)
            if positions:
                await self.producer.send_offsets_to_transaction(positions, self._group_id)
            await self.producer.commit_transaction()
        except KafkaError as exc:
            await self._abort(exc)
        self._started, self._outs, self._futures = None, [], []
        self.metrics.transactions.labels(result="success").inc()
        for out in outs:
            self._done(out)
        self.tracker.mark_committed(positions)

    async def commit(self, tps: Iterable[TopicPartition] | None = None) -> None:
        return None  # positions are committed inside each transaction (flush)

    def loops(self) -> dict[str, Coroutine[Any, Any, None]]:
        return {}

    def close(self) -> None:
        return None

    async def _abort(self, exc: KafkaError) -> NoReturn:
        self.metrics.transactions.labels(result="failure").inc()
        with contextlib.suppress(Exception):
            await self.producer.abort_transaction()
        raise PipelineError(
            f"transaction failed ({exc!r}); a restart resumes from the last committed transaction"
        ) from exc
