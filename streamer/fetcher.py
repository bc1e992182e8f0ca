"""Fetching: ``getmany``, decode, track, hand over; backpressure when too much is in flight.

Every fetched record is tracked (offsets.py) and decoded (records.py) into an :class:`Item`
for the scheduler. When ``max_in_flight`` records are fetched but unacknowledged, every owned
partition is paused (so aiokafka stops prefetching too) until at most half of them are:
memory stays flat under any backlog. The loop keeps polling while paused, so a model slower
than ``max_poll_interval_ms`` never costs the group membership.

A record batch the client cannot decode (unknown codec, corrupt batch, a header key that is
not UTF-8) stops the daemon with
a message naming the error, counted in ``sentiwire_fetch_errors_total{error}``: skipping it
would drop records silently, and the position does not move past it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Set
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError

from streamer.config import InputConfig
from streamer.flow import Flow, PipelineError
from streamer.metrics import Metrics
from streamer.offsets import OffsetTracker
from streamer.records import Item, Source, decode

log = structlog.get_logger("sentiwire.fetcher")

# How long one getmany may wait for records before the loop looks at its state again.
POLL_TIMEOUT_MS = 100


class Fetcher:
    """The fetch loop of one consumer; ``deliver`` receives the items of each fetch, in order."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        tracker: OffsetTracker,
        flow: Flow,
        metrics: Metrics,
        *,
        input_cfg: InputConfig,
        max_in_flight: int,
        fetch_max: int,
        owned: Callable[[], Set[TopicPartition]],
        deliver: Callable[[list[Item]], None],
    ) -> None:
        self.consumer = consumer
        self.tracker = tracker
        self.flow = flow
        self.metrics = metrics
        self._cfg = input_cfg
        self._max_in_flight = max_in_flight
        self._resume_below = max(max_in_flight // 2, 1)
        self._fetch_max = fetch_max
        self._owned = owned
        self._deliver = deliver

    async def run(self) -> None:
        paused: frozenset[TopicPartition] = frozenset()
        while not self.flow.draining:
            in_flight = self.tracker.unacked_total()
            if not paused and in_flight >= self._max_in_flight:
                paused = self._pause()
            elif paused and in_flight <= self._resume_below:
                self._resume(paused)
                paused = frozenset()
            elif paused and not paused >= self._owned():
                paused = self._pause()  # partitions assigned while paused
            # getmany runs while paused too: it returns nothing for paused partitions, but a
            # consumer that stops calling it for max_poll_interval_ms is put out of its group,
            # and a slow model would then re-process the same records forever (aiokafka#848).
            room = max(self._max_in_flight - in_flight, 1)
            try:
                batch = await self.consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=min(self._fetch_max, room)
                )
            except (UnsupportedCodecError, CorruptRecordException, UnicodeDecodeError) as exc:
                # UnicodeDecodeError: aiokafka decodes header keys as UTF-8 while it parses the batch
                self.metrics.fetch_errors.labels(error=type(exc).__name__).inc()
                raise PipelineError(
                    f"a fetched record batch cannot be decoded ({type(exc).__name__}: {exc}); policy: "
                    "stop (exit 1) rather than skip records unread; the restart resumes at the last "
                    "commit. Fix the producer, or the codec libraries (cramjam ships with sentiwire)"
                ) from exc
            # Records that arrive after stop() began are left for the next owner: tracking them now
            # would publish labels after the final commit (duplicates on the next owner).
            if batch and not self.flow.draining:
                self._enqueue(batch)

    def _pause(self) -> frozenset[TopicPartition]:
        owned = self._owned()
        self.consumer.pause(*owned)
        self.metrics.paused.set(1)
        log.debug("backpressure: fetching paused", in_flight=self.tracker.unacked_total())
        return frozenset(owned)

    def _resume(self, paused: frozenset[TopicPartition]) -> None:
        owned = self._owned()
        self.consumer.resume(*[tp for tp in paused if tp in owned])
        self.metrics.paused.set(0)

    def _enqueue(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Decode, track and hand over fetched records. No await inside: a rebalance cannot interleave."""
        now = time.monotonic()
        cfg = self._cfg
        owned = self._owned()
        items: list[Item] = []
        for tp, records in batch.items():
            if tp not in owned or not records:
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
                self.tracker.track(tp, rec.offset)
                items.append(Item(tp, dec, now))
            self.metrics.consumed.labels(topic=tp.topic).inc(len(records))
        self.metrics.in_flight.set(self.tracker.unacked_total())
        if items:
            self._deliver(items)
