"""Start-up reads of the alert engine: the state topic as a table, the alerts and labels topics' recent past.

Both read to the end offsets seen at start (``streamer.kafka.reader``); the labels are
handed to the detector merged across partitions in event time (``merge``), so the replay
judges every window exactly as a live run on an ordered stream would.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.alerting.detector import DetectorStats, SpikeDetector
from streamer.alerting.merge import EventTimeMerge
from streamer.alerting.records import event_time
from streamer.alerting.state import ScopeAlertRecord, StateError, scope_key
from streamer.kafka.reader import read_to_end, seek_to_time

log = structlog.get_logger("sentiwire.alerts")

FETCH_RECORDS = 2000  # per fetch; also what the merge holds per labels partition at most
Item = tuple[dict[str, Any], int]  # (labels record, labels partition)


def decode(records: list[Any], stats: DetectorStats) -> list[tuple[int, Item]]:
    """``(event time, (record, partition))`` of each JSON object; anything else counts as invalid."""
    out = []
    for rec in records:
        try:
            doc = orjson.loads(rec.value)
        except (orjson.JSONDecodeError, TypeError):
            doc = None
            why = "not JSON"
        else:
            why = "not an object"
        if not isinstance(doc, dict):
            stats.invalid += 1
            stats.last_invalid = f"{rec.topic}[{rec.partition}]@{rec.offset}: {why}"
            continue
        out.append((event_time(doc), (doc, rec.partition)))
    return out


async def read_state(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> dict[str, ScopeAlertRecord]:
    """The compacted state topic: the last published record per scope key."""
    published: dict[str, ScopeAlertRecord] = {}

    def handle(rec: Any) -> None:
        key = rec.key.decode() if rec.key else None
        if key is None:
            return
        if rec.value is None:  # tombstone
            published.pop(key, None)
            return
        try:
            published[key] = ScopeAlertRecord.from_json(orjson.loads(rec.value))
        except (orjson.JSONDecodeError, StateError) as exc:
            log.warning("unreadable alert state record skipped", key=key, offset=rec.offset, error=str(exc))

    await read_to_end(consumer, tps, handle)
    return published


async def read_open_incidents(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], since_ms: int
) -> list[dict[str, Any]]:
    """The last alerts-topic record of each incident paged since ``since_ms`` that is not resolved."""
    ends = await seek_to_time(consumer, tps, since_ms)
    last: dict[str, dict[str, Any]] = {}

    def handle(rec: Any) -> None:
        try:
            doc = orjson.loads(rec.value)
        except (orjson.JSONDecodeError, TypeError):
            return
        if (
            isinstance(doc, dict)
            and doc.get("alert_id")
            and doc.get("scope_kind")
            and doc.get("started_at") is not None
        ):
            last[str(doc.get("incident_id") or doc["alert_id"])] = doc

    await read_to_end(consumer, tps, handle, from_beginning=False, ends=ends)
    return [d for d in last.values() if d.get("state") != "resolved"]


def recover_unrecorded(published: dict[str, ScopeAlertRecord], paged: list[dict[str, Any]]) -> int:
    """Scopes of open incidents on the alerts topic whose state record never followed (a crash
    between the two) become published-firing records, so reconciling keeps or resolves them."""
    recovered = 0
    for doc in paged:
        iid = str(doc.get("incident_id") or doc["alert_id"])
        for m in [doc, *[r for r in doc.get("related") or [] if r.get("state") != "resolved"]]:
            kind, name, started = str(m["scope_kind"]), str(m["scope"]), int(m["started_at"])
            rec = published.get(scope_key(kind, name))
            if rec is None or rec.started_at_ms < started:
                published[scope_key(kind, name)] = ScopeAlertRecord(
                    kind, name, "firing", str(m["alert_id"]), started, None, started, iid
                )
                recovered += 1
    return recovered


async def replay_labels(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], detector: SpikeDetector, since_ms: int
) -> int:
    """Feed labels published since ``since_ms`` (record timestamps) up to today's end offsets.

    Leaves every partition positioned at that end offset; returns the records read.
    """
    ends = await seek_to_time(consumer, tps, since_ms)
    merge: EventTimeMerge[TopicPartition, Item] = EventTimeMerge(tps)
    done = {tp for tp in tps if await consumer.position(tp) >= ends[tp]}
    count = 0
    while True:
        need = [tp for tp in merge.wanting() if tp not in done]
        if need:
            batch = await consumer.getmany(*need, timeout_ms=1000, max_records=FETCH_RECORDS)
            for tp, records in batch.items():
                below = [r for r in records if r.offset < ends[tp]]
                count += len(below)
                merge.push(tp, decode(below, detector.stats))
            for tp in need:
                if await consumer.position(tp) >= ends[tp]:
                    done.add(tp)
            continue
        ready = merge.pop_ready(done)
        if not ready:
            break
        # Events found while replaying were published before, or are settled by reconcile().
        await asyncio.to_thread(detector.process_from, ready, now_s=time.monotonic())
    for tp in tps:  # anything fetched past the ends is read again live
        consumer.seek(tp, ends[tp])
    return count
