"""Scheduling: dynamic batches on the worker threads, published strictly in start order.

Items from the fetcher are batched (batching.py: ``max_batch_size`` / ``max_wait_ms``); up
to ``model.workers`` batches run at once in worker threads (tokenize + infer off the event
loop), and finished batches go to the sink in the order they were started, so records reach
the producer in offset order (per partition, and so per key, order holds downstream).

A batch the model fails on is retried message by message; a message that fails alone is
dead-lettered (``inference_error``) so one poison message never crash-loops the daemon or
blocks its partition. A model that fails on everything, warm-up texts included, stops it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import TopicPartition

from streamer.batching import BatchAccumulator
from streamer.config import Settings
from streamer.driftwatch import DriftWatch
from streamer.flow import Flow, PipelineError
from streamer.kafka.clients import make_producer
from streamer.metrics import Metrics
from streamer.model.classifier import BatchResult, Classifier
from streamer.model.loading import WARMUP_TEXTS
from streamer.model.reload import ModelHolder
from streamer.records import Item, TextMessage, build_outputs, model_failure
from streamer.shadow import Shadow
from streamer.sinks import Sink

log = structlog.get_logger("sentiwire.scheduler")

# Longest sleep of the loop when nothing is due (it also wakes on new items and finished batches).
IDLE_WAIT_S = 0.1


@dataclass(slots=True)
class _Running:
    """A batch on the worker threads; its task returns the items (failure isolation may have
    turned some into dead letters) and the batch's result."""

    clf: Classifier
    task: asyncio.Task[tuple[list[Item], BatchResult | None]]


class Scheduler:
    """The batch loop: queue -> batches -> worker threads -> sink, in start order."""

    def __init__(
        self, settings: Settings, models: ModelHolder, sink: Sink, flow: Flow, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.models = models
        self.sink = sink
        self.flow = flow
        self.metrics = metrics
        b = settings.batching
        self._acc: BatchAccumulator[Item] = BatchAccumulator(b.max_batch_size, b.max_wait_ms / 1000.0)
        self._queue: deque[Item] = deque()
        self._woken = asyncio.Event()
        self._workers = settings.model.workers
        self._running: deque[_Running] = deque()
        self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="sentiwire-infer")
        self.drift = DriftWatch(settings.drift, metrics)
        self.shadow = self._make_shadow(settings, metrics)

    @staticmethod
    def _make_shadow(settings: Settings, metrics: Metrics) -> Shadow | None:
        if settings.model.shadow is None:
            return None
        topic = settings.output.shadow_labels_topic
        producer = None if topic is None else make_producer(settings, transactional=False)
        return Shadow(settings.model, metrics, labels_topic=topic, producer=producer)

    # ---------------------------------------------------------------- fed by the fetcher / rebalance

    def add(self, items: list[Item]) -> None:
        self._queue.extend(items)
        self._woken.set()

    def wake(self) -> None:
        """Look at the state now (a flush was requested, the pipeline is closing)."""
        self._woken.set()

    def discard(self, tps: Set[TopicPartition]) -> dict[TopicPartition, int]:
        """Drop queued items of ``tps`` no batch has taken yet (their new owner re-reads them).

        Returns the first dropped offset per partition.
        """
        kept: deque[Item] = deque()
        first: dict[TopicPartition, int] = {}
        for it in self._queue:
            if it.tp in tps:
                first.setdefault(it.tp, it.offset)
            else:
                kept.append(it)
        self._queue = kept
        return first

    # ---------------------------------------------------------------- the loop

    async def run(self) -> None:
        acc, flow, sink = self._acc, self.flow, self.sink
        if self.shadow is not None:
            self.shadow.start()
        try:
            while not flow.closed:
                now = time.monotonic()
                while self._queue:
                    full = acc.add(self._queue.popleft(), now)
                    if full is not None:
                        await self._launch(full)
                        now = time.monotonic()
                if self._running and self._running[0].task.done():
                    await self._publish_oldest()
                    continue
                if len(acc) and (acc.due(now) or flow.flushing):
                    await self._launch(acc.take())
                    continue
                if self._running and flow.flushing:
                    await self._publish_oldest()
                    continue
                sink_deadline = sink.deadline()
                if sink_deadline is not None and (now >= sink_deadline or flow.flushing):
                    await sink.flush()
                    continue
                deadlines = [d for d in (acc.deadline(), sink_deadline) if d is not None]
                timeout = min([IDLE_WAIT_S, *(max(d - now, 0.0) for d in deadlines)])
                self._woken.clear()
                if not self._queue:
                    await self._wait_for_work(timeout)
        finally:
            for running in self._running:
                running.task.cancel()
            if self.shadow is not None:
                await self.shadow.close()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _wait_for_work(self, wait_s: float) -> None:
        """Sleep until new items, a wake-up, the oldest running batch finishing, or ``wait_s``."""
        woken = asyncio.create_task(self._woken.wait())
        waiters: set[asyncio.Future[Any]] = {woken}
        if self._running:
            waiters.add(self._running[0].task)
        try:
            await asyncio.wait(waiters, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()

    async def _launch(self, items: list[Item]) -> None:
        """Start a batch on a worker thread; with every worker busy, publish the oldest first."""
        while len(self._running) >= self._workers:
            await self._publish_oldest()
        clf = self.models.current  # one model per batch: hot reload swaps between batches
        task = asyncio.create_task(self._run(clf, items), name="batch-inference")
        self._running.append(_Running(clf, task))

    async def _run(self, clf: Classifier, items: list[Item]) -> tuple[list[Item], BatchResult | None]:
        texts = [it.decoded.text for it in items if isinstance(it.decoded, TextMessage)]
        result: BatchResult | None = None
        if texts:
            try:
                result = await self._infer(clf, texts)
            except Exception:
                log.exception("batch inference failed; retrying its messages one by one")
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
            self._observe_batch(result, clf)
        out_cfg = self.settings.output
        outs = build_outputs(
            items,
            result,
            model_name=clf.bundle.name,
            model_version=clf.bundle.version,
            processed_at_ms=int(time.time() * 1000),
            labels_topic=out_cfg.labels_topic,
            dead_letter_topic=out_cfg.dead_letter_topic,
            max_record_bytes=out_cfg.max_record_bytes,
            include_text=out_cfg.include_text,
        )
        log.debug(
            "batch",
            size=len(items),
            texts=len(result.predictions) if result else 0,
            partitions=sorted({f"{it.tp.topic}-{it.tp.partition}" for it in items}),
            offsets=_offset_ranges(items),
            tokenize_ms=round(result.tokenize_s * 1000, 2) if result else 0.0,
            infer_ms=round(result.infer_s * 1000, 2) if result else 0.0,
            model_version=clf.bundle.version,
        )
        await self.sink.publish(outs)
        if result is not None:  # after the labels are handed on, so they never wait for these
            self._after_publish(clf, items, result)

    async def _infer(self, clf: Classifier, texts: list[str]) -> BatchResult:
        loop = asyncio.get_running_loop()
        work = functools.partial(clf.run_batch, texts, bucket=self.settings.batching.bucket_by_length)
        return await loop.run_in_executor(self._executor, work)

    async def _isolate_failures(self, clf: Classifier, items: list[Item]) -> list[Item]:
        """Run each text alone; a text the model fails on becomes a dead letter (inference_error)."""
        out: list[Item] = []
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
                        exc_info=exc,
                    )
                    it = Item(it.tp, model_failure(dec, exc), it.fetched_at)
            out.append(it)
        return out

    async def _check_model_alive(self, clf: Classifier, exc: Exception) -> None:
        try:
            await self._infer(clf, list(WARMUP_TEXTS))
        except Exception as again:
            raise PipelineError(f"the model fails on every input, warm-up texts included: {again!r}") from exc

    def _observe_batch(self, result: BatchResult, clf: Classifier) -> None:
        m = self.metrics
        if clf.cache.enabled:
            m.cache_hits.inc(result.cache_hits)
            m.cache_misses.inc(len(result.predictions) - result.cache_hits)
            m.cache_evictions.inc(result.cache_evictions)
            m.cache_entries.set(len(clf.cache))
            m.cache_bytes.set(clf.cache.size_bytes)
        m.batches.inc()
        m.batch_size.observe(len(result.predictions))
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

    def _after_publish(self, clf: Classifier, items: list[Item], result: BatchResult) -> None:
        """Drift monitor and shadow sample; neither may stop or slow the labels."""
        texts = [it.decoded.text for it in items if isinstance(it.decoded, TextMessage)]
        sources = [it.decoded.source for it in items if isinstance(it.decoded, TextMessage)]
        try:
            self.drift.observe(clf, result)
        except Exception:
            log.exception("drift monitor failed on a batch")
        if self.shadow is not None:
            try:
                self.shadow.offer(clf, texts, result, sources)
            except Exception:
                log.exception("shadow sampling failed on a batch")


def _offset_ranges(items: list[Item]) -> dict[str, list[int]]:
    ranges: dict[str, list[int]] = {}
    for it in items:
        key = f"{it.tp.topic}-{it.tp.partition}"
        r = ranges.setdefault(key, [it.offset, it.offset])
        r[0], r[1] = min(r[0], it.offset), max(r[1], it.offset)
    return ranges
