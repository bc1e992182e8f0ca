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

exactly_once (:class:`TransactionalSink`): each owned input partition has its own
transactional producer; its labels + dead letters + its input position go into one Kafka
transaction (``send_offsets_to_transaction``) that spans the batches of
``exactly_once.commit_interval_ms`` and is also committed on revocation and shutdown; records
are acked when it commits. A failed (or fenced) transaction is aborted and stops the daemon: a
restart resumes from the last committed transaction.
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

    async def assign(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions were assigned (the transactional sink starts their producers)."""

    async def release(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions were handed over after their final commit."""

    async def close(self) -> None:
        """Let the background loops return; release what the sink owns."""


def fmt_offsets(offsets: dict[TopicPartition, int]) -> dict[str, int]:
    return {f"{tp.topic}-{tp.partition}": pos for tp, pos in offsets.items()}


class _ProducerSink:
    """Sending with the dead-letter size fallback, and the bookkeeping of an acknowledged output."""

    def __init__(
        self, tracker: OffsetTracker, flow: Flow, metrics: Metrics, *, dead_letter_topic: str
    ) -> None:
        self.tracker = tracker
        self.flow = flow
        self.metrics = metrics
        self._dead_letter_topic = dead_letter_topic

    async def _send(self, producer: AIOKafkaProducer, out: Output) -> asyncio.Future[Any]:
        """Hand one record to the producer; returns the broker-acknowledgement future."""
        key, value = out.for_producer()
        try:
            fut: asyncio.Future[Any] = await producer.send(
                out.topic, value=value, key=key, headers=out.headers
            )
            return fut
        except MessageSizeTooLargeError:
            if out.topic != self._dead_letter_topic:
                raise
            return await self._send_without_value(producer, out)

    async def _send_without_value(self, producer: AIOKafkaProducer, out: Output) -> asyncio.Future[Any]:
        """A dead letter too big to republish still leaves a trace: its headers, no value."""
        trace = out.without_value()
        key, value = trace.for_producer()
        fut: asyncio.Future[Any] = await producer.send(
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
        super().__init__(tracker, flow, metrics, dead_letter_topic=dead_letter_topic)
        self.producer = producer
        self.consumer = consumer
        self._owned = owned
        self._interval = commit_interval_s
        self._acks: asyncio.Queue[_Pending | None] = asyncio.Queue()

    def deadline(self) -> float | None:
        return None

    async def publish(self, outs: list[Output]) -> None:
        for out in outs:
            try:
                fut = await self._send(self.producer, out)
            except KafkaError as exc:  # e.g. the topic was deleted or its ACL removed
                raise PipelineError(f"cannot publish to {out.topic}: {exc!r}") from exc
            self._acks.put_nowait(_Pending(out, fut))

    async def flush(self) -> None:
        return None  # acks arrive on their own; commits run on their interval

    def loops(self) -> dict[str, Coroutine[Any, Any, None]]:
        return {"ack": self._ack_loop(), "commit": self._commit_loop()}

    async def assign(self, tps: Iterable[TopicPartition]) -> None:
        return None

    async def release(self, tps: Iterable[TopicPartition]) -> None:
        return None

    async def close(self) -> None:
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
                await (await self._send_without_value(self.producer, pending.out))
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


@dataclass(slots=True)
class _Txn:
    """The open transaction of one input partition's producer."""

    producer: AIOKafkaProducer
    outs: list[Output]
    futures: list[asyncio.Future[Any]]


class TransactionalSink(_ProducerSink):
    """One transactional producer per owned input partition; outputs and positions commit together.

    Why per partition: aiokafka commits offsets in a transaction without the group generation
    (no KIP-447 fencing, aiokafka#844), so a member frozen past its session timeout could wake
    and commit a transaction for partitions that moved on. With ``transactional.id`` =
    ``<prefix>-<topic>-<partition>``, the partition's next owner starts a producer with the same
    id, whose InitProducerId fences the old one: the zombie's open transaction is aborted and its
    commit fails (ProducerFenced stops it). The cost: one producer (a connection, a buffer) per
    owned partition, started on every assignment, and one transaction commit per partition per
    ``commit_interval_ms``, run concurrently.
    """

    def __init__(
        self,
        factory: Callable[[str], AIOKafkaProducer],
        tracker: OffsetTracker,
        flow: Flow,
        metrics: Metrics,
        *,
        id_prefix: str,
        group_id: str,
        dead_letter_topic: str,
        commit_interval_s: float,
    ) -> None:
        super().__init__(tracker, flow, metrics, dead_letter_topic=dead_letter_topic)
        self._factory = factory
        self._prefix = id_prefix
        self._group_id = group_id
        self._interval = commit_interval_s
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}
        self._open: dict[TopicPartition, _Txn] = {}
        self._started: float | None = None
        # Records of newly assigned partitions can be fetched while their producers still start.
        self._assigned = asyncio.Event()
        self._assigned.set()

    def transactional_id(self, tp: TopicPartition) -> str:
        return f"{self._prefix}-{tp.topic}-{tp.partition}"

    def deadline(self) -> float | None:
        return None if self._started is None else self._started + self._interval

    def _due(self) -> bool:
        deadline = self.deadline()
        return deadline is not None and (time.monotonic() >= deadline or self.flow.flushing)

    async def assign(self, tps: Iterable[TopicPartition]) -> None:
        """Start (and so fence any older owner of) the producer of each newly owned partition."""
        new = [tp for tp in tps if tp not in self._producers]
        producers = {tp: self._factory(self.transactional_id(tp)) for tp in new}
        self._assigned.clear()
        try:
            await asyncio.gather(*(p.start() for p in producers.values()))
        except KafkaError as exc:
            await asyncio.gather(*(p.stop() for p in producers.values()), return_exceptions=True)
            raise PipelineError(f"transactional producers could not start: {exc!r}") from exc
        finally:
            self._assigned.set()
        self._producers.update(producers)
        log.debug("transactional producers started", ids=[self.transactional_id(tp) for tp in new])

    async def release(self, tps: Iterable[TopicPartition]) -> None:
        """Stop the producers of partitions handed over (their transactions are committed by then)."""
        gone = [self._producers.pop(tp) for tp in tps if tp in self._producers]
        for tp in tps:
            self._open.pop(tp, None)
        await asyncio.gather(*(p.stop() for p in gone), return_exceptions=True)

    async def publish(self, outs: list[Output]) -> None:
        """Send a batch's records inside the open transaction of each input partition's producer."""
        try:
            for out in outs:
                tp = out.item.tp
                txn = self._open.get(tp)
                if txn is None:
                    producer = self._producers.get(tp)
                    if producer is None:
                        await self._assigned.wait()
                        producer = self._producers.get(tp)
                    if producer is None:  # revoked while its batch ran: the new owner re-reads it
                        continue
                    await producer.begin_transaction()
                    txn = self._open[tp] = _Txn(producer, [], [])
                    if self._started is None:
                        self._started = time.monotonic()
                txn.futures.append(await self._send(txn.producer, out))
                txn.outs.append(out)
        except KafkaError as exc:
            await self._abort(exc)
        if self._due():
            await self.flush()

    async def flush(self) -> None:
        """Labels + dead letters + input positions become visible together, or not at all."""
        if not self._open:
            self._started = None
            return
        txns, self._open, self._started = self._open, {}, None
        try:
            await asyncio.gather(*(self._commit(tp, txn) for tp, txn in txns.items()))
        except KafkaError as exc:
            self._open = txns
            await self._abort(exc)
        self.metrics.transactions.labels(result="success").inc(len(txns))
        for tp, txn in txns.items():
            for out in txn.outs:
                self._done(out)
            self.tracker.mark_committed({tp: txn.outs[-1].item.offset + 1})

    async def _commit(self, tp: TopicPartition, txn: _Txn) -> None:
        await asyncio.gather(*txn.futures)
        position = max(out.item.offset for out in txn.outs) + 1
        await txn.producer.send_offsets_to_transaction({tp: position}, self._group_id)
        await txn.producer.commit_transaction()

    async def commit(self, tps: Iterable[TopicPartition] | None = None) -> None:
        return None  # positions are committed inside each transaction (flush)

    def loops(self) -> dict[str, Coroutine[Any, Any, None]]:
        return {}

    async def close(self) -> None:
        await self.release(list(self._producers))

    async def _abort(self, exc: KafkaError) -> NoReturn:
        self.metrics.transactions.labels(result="failure").inc()
        for txn in self._open.values():
            with contextlib.suppress(Exception):
                await txn.producer.abort_transaction()
        self._open, self._started = {}, None
        raise PipelineError(
            f"transaction failed ({exc!r}); a restart resumes from the last committed transaction"
        ) from exc
