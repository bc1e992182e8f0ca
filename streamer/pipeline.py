"""fetch -> decode -> batch -> tokenize + infer (worker thread) -> produce -> ack -> commit.

Four asyncio tasks connected by bounded state:

* fetch: ``getmany`` and decode; every record is tracked (offsets.py) and queued. When
  ``max_in_flight`` records are fetched but unacknowledged, all owned partitions are paused
  (so aiokafka stops prefetching too) until half of them are acknowledged: memory stays flat
  under any backlog.
* batch: closes batches at ``max_batch_size`` / ``max_wait_ms`` and runs up to
  ``model.workers`` of them at once in worker threads; finished batches are published
  strictly in the order they were started, so records reach the producer in offset order
  (per-partition, and so per-key, order holds downstream).
* ack (at_least_once): awaits broker acknowledgements in order and marks offsets done.
* commit (at_least_once): every ``commit_interval_ms`` commits each partition's watermark,
  the highest position with all earlier fetched offsets acknowledged (the steps in checkpoint.py).

Under ``exactly_once`` labels + dead letters + ``send_offsets_to_transaction`` go into one
Kafka transaction that spans the batches of ``exactly_once.commit_interval_ms`` and is also
committed on revocation and shutdown; there is no separate ack/commit task.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from streamer.batching import BatchAccumulator
from streamer.checkpoint import commit_watermarks
from streamer.config import Settings
from streamer.inference import Classifier
from streamer.messages import (
    DeadLetter,
    Decoded,
    Source,
    TextMessage,
    build_label_record,
    dead_letter_headers,
    decode,
    encode_record,
    model_failure,
)
from streamer.metrics import Metrics
from streamer.offsets import TP, OffsetTracker
from streamer.rebalance import RebalanceHandler
from streamer.reload import WARMUP_TEXTS, ModelHolder
from streamer.worker import BatchResult, run_batch

log = structlog.get_logger("sentiwire.pipeline")

H_VALUE_DROPPED = "sentiwire.value_dropped"


class PipelineError(Exception):
    """A failure the daemon cannot ride out (producer fenced, broker rejected labels)."""


@dataclass(slots=True)
class _Running:
    """A batch handed to the worker threads; published when it and every older batch is done.

    The task returns the batch's items: failure isolation may have turned some into dead letters.
    """

    clf: Classifier
    task: asyncio.Task[tuple[list[_Item], BatchResult | None]]


@dataclass(slots=True)
class _Item:
    tp: TP
    decoded: Decoded
    fetched_at: float  # monotonic


@dataclass(slots=True)
class _Out:
    """One record to publish for one input item."""

    item: _Item
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass(slots=True)
class _Pending:
    out: _Out
    future: asyncio.Future[Any]


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        models: ModelHolder,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.producer = producer
        self.models = models
        self.metrics = metrics
        self.exactly_once = settings.delivery == "exactly_once"
        b = settings.batching
        self._max_in_flight = b.max_in_flight
        self._resume_below = max(b.max_in_flight // 2, 1)
        self._acc: BatchAccumulator[_Item] = BatchAccumulator(b.max_batch_size, b.max_wait_ms / 1000.0)
        self._queue: deque[_Item] = deque()
        self._queue_event = asyncio.Event()
        self._capacity = asyncio.Event()
        self._capacity.set()
        self._acks: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._tracker = OffsetTracker()
        self._assigned: set[TP] = set()
        self._in_flight = 0
        self._stop_fetch = False
        self._closed = False  # loops exit on this flag; cancellation is only the backstop
        self._draining = False
        self.rebalancing = False
        self.joined = False
        self.fatal: BaseException | None = None
        self._failed = asyncio.Event()
        # exactly_once: the open transaction spans batches for up to exactly_once.commit_interval_ms.
        self._txn_interval = settings.exactly_once.commit_interval_ms / 1000.0
        self._txn_started: float | None = None
        self._txn_outs: list[_Out] = []
        self._txn_futures: list[asyncio.Future[Any]] = []
        self._workers = settings.model.workers
        self._running: deque[_Running] = deque()
        self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="sentiwire-infer")
        self._tasks: list[asyncio.Task[None]] = []

    # ---------------------------------------------------------------- lifecycle

    def listener(self) -> RebalanceHandler:
        return RebalanceHandler(self)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._guard(self._fetch_loop()), name="fetch"),
            asyncio.create_task(self._guard(self._batch_loop()), name="batch"),
        ]
        if not self.exactly_once:
            self._tasks.append(asyncio.create_task(self._guard(self._ack_loop()), name="ack"))
            self._tasks.append(asyncio.create_task(self._guard(self._commit_loop()), name="commit"))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def assignment(self) -> set[TP]:
        return set(self._assigned)

    def healthy(self) -> bool:
        return self.fatal is None and all(not t.done() for t in self._tasks)

    async def wait_failed(self) -> None:
        await self._failed.wait()

    async def stop(self, timeout_s: float) -> bool:
        """Stop fetching, drain in-flight work, commit. True if everything drained in time."""
        deadline = time.monotonic() + timeout_s
        self._stop_fetch = True
        self._draining = True
        self._capacity.set()
        self._queue_event.set()
        # The fetch task may be inside getmany(): let it return first, so that "nothing in
        # flight" below really means nothing more will be published before the final commit.
        fetch = next((t for t in self._tasks if t.get_name() == "fetch"), None)
        if fetch is not None and not fetch.done():
            await asyncio.wait({fetch}, timeout=max(deadline - time.monotonic(), 0.0))
        drained = await self._wait_until(lambda: self._in_flight == 0 or self.fatal is not None, deadline)
        if not drained:
            log.warning("shutdown timeout: committing what is acknowledged", in_flight=self._in_flight)
        if not self.exactly_once and self.fatal is None:
            await self.commit()
        self._closed = True
        self._queue_event.set()
        self._acks.put_nowait(None)
        pending = (await asyncio.wait(self._tasks, timeout=1.0))[1] if self._tasks else set()
        for task in pending:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._executor.shutdown(wait=False, cancel_futures=True)
        return drained

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.fatal = exc
            log.error("pipeline task failed", task=asyncio.current_task().get_name(), error=repr(exc))  # type: ignore[union-attr]
            self._failed.set()
            raise

    @staticmethod
    async def _wait_until(cond: Any, deadline: float, step: float = 0.01) -> bool:
        while not cond():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(step)
        return True

    # ---------------------------------------------------------------- fetch

    async def _fetch_loop(self) -> None:
        fetch_max = max(self.settings.batching.max_batch_size * 4, 100)
        while not self._stop_fetch:
            if self._in_flight >= self._max_in_flight:
                await self._backpressure()
                continue
            room = self._max_in_flight - self._in_flight
            batch = await self.consumer.getmany(timeout_ms=100, max_records=min(fetch_max, room))
            # Records that arrive after stop() began are left for the next owner: tracking them now
            # would publish labels after the final commit (duplicates on the next owner).
            if batch and not self._stop_fetch:
                self._enqueue(batch)

    async def _backpressure(self) -> None:
        paused = [TopicPartition(t, p) for t, p in self._assigned]
        self.consumer.pause(*paused)
        self.metrics.paused.set(1)
        self._capacity.clear()
        log.debug("backpressure: fetching paused", in_flight=self._in_flight)
        while not self._capacity.is_set() and not self._stop_fetch:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._capacity.wait()
        owned = [tp for tp in paused if (tp.topic, tp.partition) in self._assigned]
        self.consumer.resume(*owned)
        self.metrics.paused.set(0)

    def _enqueue(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Decode and queue fetched records. No await inside: a rebalance cannot interleave."""
        now = time.monotonic()
        cfg = self.settings.input
        for tp, records in batch.items():
            key = (tp.topic, tp.partition)
            if key not in self._assigned or not records:
                continue
            for rec in records:
                src = Source(
                    rec.topic,
                    rec.partition,
                    rec.offset,
                    rec.timestamp,
                    rec.key,
                    tuple((k, v if v is not None else b"") for k, v in (rec.headers or ())),
                )
                dec = decode(
                    rec.value, src, fmt=cfg.format, max_bytes=cfg.max_message_bytes, text_field=cfg.text_field
                )
                self._tracker.track(key, rec.offset)
                self._queue.append(_Item(key, dec, now))
            self._in_flight += len(records)
            self.metrics.consumed.labels(topic=tp.topic).inc(len(records))
        self.metrics.in_flight.set(self._in_flight)
        self._queue_event.set()

    # ---------------------------------------------------------------- batch

    async def _batch_loop(self) -> None:
        acc = self._acc
        try:
            while not self._closed:
                now = time.monotonic()
                while self._queue:
                    full = acc.add(self._queue.popleft(), now)
                    if full is not None:
                        await self._launch(full)
                        now = time.monotonic()
                if self._running and self._running[0].task.done():
                    await self._publish_oldest()
                    continue
                flushing = self._draining or self.rebalancing
                if len(acc) and (acc.due(now) or flushing):
                    await self._launch(acc.take())
                    continue
                if self._running and flushing:
                    await self._publish_oldest()
                    continue
                if self._txn_due(now):
                    await self._commit_transaction()
                    continue
                deadlines = [d for d in (acc.deadline(), self._txn_deadline()) if d is not None]
                timeout = min([0.1, *(max(d - now, 0.0) for d in deadlines)])
                self._queue_event.clear()
                if not self._queue:
                    await self._wait_for_work(timeout)
        finally:
            for running in self._running:
                running.task.cancel()

    async def _wait_for_work(self, wait_s: float) -> None:
        """Sleep until new records, the oldest running batch finishing, or ``wait_s`` seconds."""
        queued = asyncio.create_task(self._queue_event.wait())
        waiters: set[asyncio.Future[Any]] = {queued}
        if self._running:
            waiters.add(self._running[0].task)
        try:
            await asyncio.wait(waiters, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            queued.cancel()

    async def _launch(self, items: list[_Item]) -> None:
        """Start a batch on a worker thread; with every worker busy, publish the oldest first."""
        while len(self._running) >= self._workers:
            await self._publish_oldest()
        clf = self.models.current  # one model per batch: hot reload swaps between batches
        task = asyncio.create_task(self._run(clf, items), name="batch-inference")
        self._running.append(_Running(clf, task))

    async def _run(self, clf: Classifier, items: list[_Item]) -> tuple[list[_Item], BatchResult | None]:
        texts = [it.decoded.text for it in items if isinstance(it.decoded, TextMessage)]
        result: BatchResult | None = None
        if texts:
            try:
                result = await self._infer(clf, texts)
            except Exception as exc:
                log.error("batch inference failed; retrying its messages one by one", error=repr(exc))
                items = await self._isolate_failures(clf, items)
                texts = [it.decoded.text for it in items if isinstance(it.decoded, TextMessage)]
                result = await self._infer(clf, texts) if texts else None
        return items, result

    async def _publish_oldest(self) -> None:
        running = self._running[0]
        items, result = await running.task
        self._running.popleft()
        clf = running.clf
        if result is not None:
            self._observe_batch(result, len(result.predictions))
        outs = self._build(items, result, clf.bundle.name, clf.bundle.version)
        log.debug(
            "batch",
            size=len(items),
            texts=len(result.predictions) if result else 0,
            partitions=sorted({f"{t}-{p}" for t, p in (it.tp for it in items)}),
            offsets=_offset_ranges(items),
            tokenize_ms=round(result.tokenize_s * 1000, 2) if result else 0.0,
            infer_ms=round(result.infer_s * 1000, 2) if result else 0.0,
            model_version=clf.bundle.version,
        )
        if self.exactly_once:
            await self._add_to_transaction(outs)
        else:
            for out in outs:
                self._acks.put_nowait(_Pending(out, await self._send(out)))

    async def _infer(self, clf: Classifier, texts: list[str]) -> BatchResult:
        loop = asyncio.get_running_loop()
        work = functools.partial(run_batch, clf, texts, bucket=self.settings.batching.bucket_by_length)
        return await loop.run_in_executor(self._executor, work)

    async def _isolate_failures(self, clf: Classifier, items: list[_Item]) -> list[_Item]:
        """Run each text alone; a text the model fails on becomes a dead letter (inference_error)
        so one poison message never crash-loops the daemon or blocks its partition."""
        out: list[_Item] = []
        texts = failed = 0
        for it in items:
            dec = it.decoded
            if isinstance(dec, TextMessage):
                texts += 1
                try:
                    await self._infer(clf, [dec.text])
                except Exception as exc:
                    failed += 1
                    if failed == texts:  # so far nothing works: is it the model, not the messages?
                        await self._check_model_alive(clf, exc)
                    log.error(
                        "message dead-lettered: the model failed on it",
                        partition=f"{dec.source.topic}-{dec.source.partition}",
                        offset=dec.source.offset,
                        error=repr(exc),
                    )
                    it = _Item(it.tp, model_failure(dec, exc), it.fetched_at)
            out.append(it)
        return out

    async def _check_model_alive(self, clf: Classifier, exc: Exception) -> None:
        try:
            await self._infer(clf, list(WARMUP_TEXTS))
        except Exception as again:
            raise PipelineError(f"the model fails on every input, warm-up texts included: {again!r}") from exc

    def _observe_batch(self, result: BatchResult, n: int) -> None:
        m = self.metrics
        m.batches.inc()
        m.batch_size.observe(n)
        m.tokenize_seconds.observe(result.tokenize_s)
        m.inference_seconds.observe(result.infer_s)
        m.tokens.labels(kind="real").inc(result.real_tokens)
        m.tokens.labels(kind="padding").inc(max(result.padded_tokens - result.real_tokens, 0))
        n_trunc = sum(result.truncated)
        if n_trunc:
            m.truncated.inc(n_trunc)
        for pred in result.predictions:
            for head, p in pred.items():
                m.predictions.labels(head=head, label=p.label).inc()

    def _build(self, items: list[_Item], result: BatchResult | None, name: str, version: str) -> list[_Out]:
        out_cfg = self.settings.output
        processed_at = int(time.time() * 1000)
        outs: list[_Out] = []
        i = 0
        for it in items:
            dec = it.decoded
            if isinstance(dec, TextMessage):
                assert result is not None
                record = build_label_record(
                    dec,
                    result.predictions[i],
                    model_name=name,
                    model_version=version,
                    processed_at_ms=processed_at,
                    truncated=result.truncated[i],
                    include_text=out_cfg.include_text,
                )
                i += 1
                value = encode_record(record)
                if len(value) > out_cfg.max_record_bytes and "text" in record:
                    del record["text"]
                    record["text_omitted"] = True
                    value = encode_record(record)
                outs.append(_Out(it, out_cfg.labels_topic, dec.source.key, value, []))
            else:
                headers = dead_letter_headers(dec)
                original = dec.value
                if original is not None and len(original) > out_cfg.max_record_bytes:
                    headers.append((H_VALUE_DROPPED, f"original value was {len(original)} bytes".encode()))
                    original = None
                outs.append(_Out(it, out_cfg.dead_letter_topic, dec.source.key, original, headers))
        return outs

    # ---------------------------------------------------------------- at-least-once: acks + commits

    async def _ack_loop(self) -> None:
        while True:
            pending = await self._acks.get()
            if pending is None:
                return
            try:
                await pending.future
            except MessageSizeTooLargeError:
                if pending.out.topic != self.settings.output.dead_letter_topic:
                    raise
                await (await self._send_without_value(pending.out))
            except KafkaError as exc:
                raise PipelineError(
                    f"broker did not accept a record for {pending.out.topic}: {exc!r}"
                ) from exc
            self._done(pending.out)

    async def _send(self, out: _Out) -> asyncio.Future[Any]:
        """Hand one record to the producer; returns the broker-acknowledgement future."""
        # Kafka clients refuse a record with neither key nor value (a keyless tombstone or a
        # dead letter whose value was dropped): send an empty value instead.
        value = b"" if out.value is None and out.key is None else out.value
        try:
            fut: asyncio.Future[Any] = await self.producer.send(
                out.topic, value=value, key=out.key, headers=out.headers
            )
            return fut
        except MessageSizeTooLargeError:
            if out.topic != self.settings.output.dead_letter_topic:
                raise
            return await self._send_without_value(out)

    async def _send_without_value(self, out: _Out) -> asyncio.Future[Any]:
        """A dead letter too big to republish still leaves a trace: its headers, no value."""
        headers = [*out.headers, (H_VALUE_DROPPED, b"value larger than the producer or topic accepts")]
        fut: asyncio.Future[Any] = await self.producer.send(
            out.topic, value=None if out.key is not None else b"", key=out.key, headers=headers
        )
        return fut

    def _done(self, out: _Out) -> None:
        it = out.item
        self._tracker.ack(it.tp, it.decoded.source.offset)
        self._in_flight -= 1
        self._count_published(out)
        if self._in_flight <= self._resume_below:
            self._capacity.set()

    def _count_published(self, out: _Out) -> None:
        m = self.metrics
        dec = out.item.decoded
        m.in_flight.set(self._in_flight)
        if isinstance(dec, DeadLetter):
            m.dead_lettered.labels(reason=dec.reason.value).inc()
            return
        m.published.labels(topic=out.topic).inc()
        now = time.monotonic()
        m.processing_seconds.observe(now - out.item.fetched_at)
        if dec.source.timestamp is not None and dec.source.timestamp > 0:
            m.end_to_end_seconds.observe(max(time.time() - dec.source.timestamp / 1000.0, 0.0))

    async def _commit_loop(self) -> None:
        interval = self.settings.batching.commit_interval_ms / 1000.0
        while not self._closed:
            await asyncio.sleep(interval)
            if not self.rebalancing:
                await self.commit()
            self._update_lag()

    async def commit(self, tps: Iterable[TP] | None = None) -> None:
        """Commit the watermarks of owned (or the given) partitions; see checkpoint.py."""
        await commit_watermarks(
            self.consumer, self._tracker, self._assigned if tps is None else set(tps), self.metrics
        )

    def _update_lag(self) -> None:
        for t, p in list(self._assigned):
            tp = TopicPartition(t, p)
            high = self.consumer.highwater(tp)
            pos = self._tracker.committed((t, p))
            if high is not None and pos is not None:
                self.metrics.consumer_lag.labels(topic=t, partition=str(p)).set(max(high - pos, 0))

    # ---------------------------------------------------------------- exactly-once

    def _txn_deadline(self) -> float | None:
        return None if self._txn_started is None else self._txn_started + self._txn_interval

    def _txn_due(self, now: float) -> bool:
        deadline = self._txn_deadline()
        return deadline is not None and (now >= deadline or self._draining or self.rebalancing)

    async def _add_to_transaction(self, outs: list[_Out]) -> None:
        """Send a batch's records inside the open transaction (opening one if needed)."""
        try:
            if self._txn_started is None:
                await self.producer.begin_transaction()
                self._txn_started = time.monotonic()
            for out in outs:
                self._txn_futures.append(await self._send(out))
                self._txn_outs.append(out)
        except KafkaError as exc:
            await self._abort_transaction(exc)
        if self._txn_due(time.monotonic()):
            await self._commit_transaction()

    async def _commit_transaction(self) -> None:
        """Labels + dead letters + input positions become visible together, or not at all."""
        outs, futures = self._txn_outs, self._txn_futures
        positions: dict[TP, int] = {}
        for out in outs:
            pos = out.item.decoded.source.offset + 1
            positions[out.item.tp] = max(positions.get(out.item.tp, 0), pos)
        try:
            await asyncio.gather(*futures)
            if positions:
                await self.producer.send_offsets_to_transaction(
                    {TopicPartition(t, p): pos for (t, p), pos in positions.items()},
                    self.settings.input.group_id,
                )
            await self.producer.commit_transaction()
        except KafkaError as exc:
            await self._abort_transaction(exc)
        self._txn_started, self._txn_outs, self._txn_futures = None, [], []
        self.metrics.transactions.labels(result="success").inc()
        for out in outs:
            self._done(out)
        self._tracker.mark_committed(positions)

    async def _abort_transaction(self, exc: KafkaError) -> NoReturn:
        self.metrics.transactions.labels(result="failure").inc()
        with contextlib.suppress(Exception):
            await self.producer.abort_transaction()
        raise PipelineError(
            f"transaction failed ({exc!r}); a restart resumes from the last committed transaction"
        ) from exc

    # ---------------------------------------------------------------- rebalance

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        tps = {(tp.topic, tp.partition) for tp in revoked}
        if not tps:
            return
        self.metrics.rebalances.labels(event="revoked").inc()
        self.rebalancing = True
        self._queue_event.set()  # flush the open batch / transaction now
        self._assigned -= tps
        # Discard queued work of revoked partitions that no batch has taken yet (re-read by the new owner).
        kept: deque[_Item] = deque()
        first_dropped: dict[TP, int] = {}
        for it in self._queue:
            if it.tp in tps:
                first_dropped.setdefault(it.tp, it.decoded.source.offset)
            else:
                kept.append(it)
        dropped = len(self._queue) - len(kept)
        self._queue = kept
        for tp, offset in first_dropped.items():
            self._tracker.partition(tp).discard_from(offset)
        self._in_flight -= dropped
        if self._in_flight <= self._resume_below:
            self._capacity.set()
        # Finish what is already in a batch or awaiting its broker ack, then commit it.
        deadline = time.monotonic() + min(self.settings.shutdown_timeout_s, 30.0)
        finished = await self._wait_until(
            lambda: all(self._tracker.in_flight(tp) == 0 for tp in tps) or self.fatal is not None, deadline
        )
        if not self.exactly_once:
            await self.commit(tps)
        log.info(
            "partitions revoked",
            partitions=sorted(f"{t}-{p}" for t, p in tps),
            discarded=dropped,
            finished_in_flight=finished,
        )
        self._tracker.drop(tps)
        for t, p in tps:
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(t, str(p))

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        self._assigned = {(tp.topic, tp.partition) for tp in assigned}
        self.rebalancing = False
        self.joined = True
        self.metrics.rebalances.labels(event="assigned").inc()
        log.info("partitions assigned", partitions=sorted(f"{t}-{p}" for t, p in self._assigned))


def _offset_ranges(items: list[_Item]) -> dict[str, list[int]]:
    ranges: dict[str, list[int]] = {}
    for it in items:
        key = f"{it.tp[0]}-{it.tp[1]}"
        off = it.decoded.source.offset
        r = ranges.setdefault(key, [off, off])
        r[0], r[1] = min(r[0], off), max(r[1], off)
    return ranges
