"""Offset commits (at_least_once). The order of steps is the guarantee:

1. A record is *tracked* when fetched (offsets.OffsetTracker, per partition, fetch order).
2. Its output (label or dead letter) is handed to the idempotent producer (acks=all).
3. When the broker acknowledges that output, the record is *acked*.
4. A partition's watermark moves to the first tracked-but-unacked offset (or past the
   last tracked one when all are acked): every earlier fetched offset has its output durable.
5. Every ``commit_interval_ms``, on revocation and on shutdown, the watermarks that moved
   are committed for partitions this consumer still owns.
6. A failed commit (CommitFailedError: the group moved on) is logged and counted, never
   retried in a loop: the partition's new owner resumes from the last good commit, which
   at worst re-labels a few records (at-least-once), never skips one.

Under exactly_once the same positions are committed inside the transaction that carries
their outputs (``send_offsets_to_transaction``), see pipeline.Pipeline._commit_transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from streamer.metrics import Metrics
from streamer.offsets import TP, OffsetTracker

log = structlog.get_logger("sentiwire.checkpoint")


def fmt_offsets(offsets: dict[TP, int]) -> dict[str, int]:
    return {f"{t}-{p}": pos for (t, p), pos in offsets.items()}


async def commit_watermarks(
    consumer: AIOKafkaConsumer, tracker: OffsetTracker, tps: Iterable[TP], metrics: Metrics
) -> dict[TP, int]:
    """Step 5/6 for ``tps``; returns what was committed (empty when nothing moved or it failed)."""
    offsets = tracker.to_commit(tps)
    if not offsets:
        return {}
    try:
        await consumer.commit({TopicPartition(t, p): pos for (t, p), pos in offsets.items()})
    except (CommitFailedError, KafkaError) as exc:
        metrics.commits.labels(result="failure").inc()
        log.warning("offset commit failed; not retried", error=repr(exc), offsets=fmt_offsets(offsets))
        return {}
    tracker.mark_committed(offsets)
    metrics.commits.labels(result="success").inc()
    log.debug("committed", offsets=fmt_offsets(offsets))
    return offsets
