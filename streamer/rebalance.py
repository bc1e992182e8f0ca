"""Consumer-group rebalances: which partitions this member owns, and handing revoked ones over.

aiokafka awaits ``on_partitions_revoked`` before the group re-joins, while this member's
generation is still valid. That is the one moment a commit for the revoked partitions can
succeed, so the handler: (1) stops taking their records, (2) discards their queued records
no batch has started (the next owner re-reads them), (3) waits, bounded, for the batches
already holding their records to be acknowledged (under exactly_once the open transaction is
flushed meanwhile), (4) commits their watermarks once. Commits are never retried after a
CommitFailedError (the CommitFailedError loops of aio-libs/aiokafka#1054 and #933 come from
retrying commits for a generation that is gone).

The collaborators are protocols, so the bookkeeping is tested with fakes (tests/streamer).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Set
from typing import Protocol

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition

from streamer.flow import Flow
from streamer.metrics import Metrics
from streamer.offsets import OffsetTracker

log = structlog.get_logger("sentiwire.rebalance")

# Upper bound on how long a revocation waits for in-flight batches of the revoked partitions.
MAX_REVOKE_WAIT_S = 30.0


class Queue(Protocol):
    def discard(self, tps: Set[TopicPartition]) -> dict[TopicPartition, int]: ...
    def wake(self) -> None: ...


class Committer(Protocol):
    async def commit(self, tps: Iterable[TopicPartition] | None = None) -> None: ...
    async def assign(self, tps: Iterable[TopicPartition]) -> None: ...
    async def release(self, tps: Iterable[TopicPartition]) -> None: ...


class Rebalancer(ConsumerRebalanceListener):  # type: ignore[misc]
    """The listener given to ``consumer.subscribe``; owns the assignment set."""

    def __init__(
        self,
        queue: Queue,
        sink: Committer,
        tracker: OffsetTracker,
        flow: Flow,
        metrics: Metrics,
        *,
        revoke_wait_s: float,
    ) -> None:
        self._queue = queue
        self._sink = sink
        self._tracker = tracker
        self._flow = flow
        self._metrics = metrics
        self._revoke_wait_s = min(revoke_wait_s, MAX_REVOKE_WAIT_S)
        self.assigned: frozenset[TopicPartition] = frozenset()
        self.joined = False

    def owned(self) -> frozenset[TopicPartition]:
        return self.assigned

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        tps = {TopicPartition(tp.topic, tp.partition) for tp in revoked}
        if not tps:
            return
        self._metrics.rebalances.labels(event="revoked").inc()
        self._flow.rebalancing = True
        self._queue.wake()  # flush the open batch / transaction now
        self.assigned = self.assigned - tps
        first_dropped = self._queue.discard(tps)
        dropped = 0
        for tp, offset in first_dropped.items():
            part = self._tracker.partition(tp)
            before = part.unacked
            part.discard_from(offset)
            dropped += before - part.unacked
        self._flow.notify()
        # Finish what is already in a batch or awaiting its broker ack, then commit it.
        deadline = time.monotonic() + self._revoke_wait_s
        finished = await self._flow.wait_for(
            lambda: all(self._tracker.in_flight(tp) == 0 for tp in tps) or self._flow.fatal is not None,
            deadline,
        )
        await self._sink.commit(tps)
        await self._sink.release(tps)
        log.info(
            "partitions revoked",
            partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in tps),
            discarded=dropped,
            finished_in_flight=finished,
        )
        self._tracker.drop(tps)
        self._flow.notify()
        for tp in tps:
            with contextlib.suppress(KeyError):
                self._metrics.consumer_lag.remove(tp.topic, str(tp.partition))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.assigned = frozenset(TopicPartition(tp.topic, tp.partition) for tp in assigned)
        try:
            await self._sink.assign(self.assigned)
        except Exception as exc:  # aiokafka would only log it: make it stop the daemon instead
            log.exception("partitions assigned but the sink cannot take them")
            self._flow.fail(exc)
        self._flow.rebalancing = False
        self.joined = True
        self._metrics.rebalances.labels(event="assigned").inc()
        log.info(
            "partitions assigned", partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in self.assigned)
        )
