"""Read assigned partitions up to the end offsets seen at the start, then stop.

Used wherever a topic is read as a table or a backlog (alert state, corrections, tools,
tests): positions, not record counts, decide when a partition is done, so transaction
markers, compaction gaps and redelivered duplicates never end a read early or late.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.errors import UnavailableError


class ReadTimeout(UnavailableError):
    """A partition was not read to its end offset within the time allowed."""


async def read_to_end(
    consumer: AIOKafkaConsumer,
    tps: Sequence[TopicPartition],
    handle: Callable[[Any], None],
    *,
    from_beginning: bool = True,
    ends: Mapping[TopicPartition, int] | None = None,
    timeout_s: float | None = None,
    max_records: int = 5000,
) -> int:
    """Assign ``tps``, hand every record below each end offset to ``handle``; returns records read.

    ``from_beginning`` seeks to the start; otherwise reading starts at the current positions
    (set them with ``consumer.seek`` after ``consumer.assign``). ``ends`` defaults to the end
    offsets now.
    """
    if from_beginning:
        consumer.assign(list(tps))
        await consumer.seek_to_beginning(*tps)
    stop_at = dict(ends) if ends is not None else await consumer.end_offsets(list(tps))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    todo = {tp for tp in tps if await consumer.position(tp) < stop_at[tp]}
    count = 0
    while todo:
        if deadline is not None and time.monotonic() > deadline:
            raise ReadTimeout(
                f"not read to the end within {timeout_s} s: "
                + ", ".join(f"{tp.topic}-{tp.partition}" for tp in sorted(todo))
            )
        batch = await consumer.getmany(*todo, timeout_ms=1000, max_records=max_records)
        for tp, records in batch.items():
            for rec in records:
                if rec.offset < stop_at[tp]:
                    handle(rec)
                    count += 1
        for tp in list(todo):
            if await consumer.position(tp) >= stop_at[tp]:
                todo.discard(tp)
    return count


async def seek_to_time(
    consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], since_ms: int
) -> dict[TopicPartition, int]:
    """Assign ``tps`` and seek each to its first record at or after ``since_ms`` (record
    timestamps; the end when there is none); returns the end offsets seen now."""
    consumer.assign(list(tps))
    ends: dict[TopicPartition, int] = await consumer.end_offsets(list(tps))
    starts = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
    for tp in tps:
        found = starts.get(tp)
        consumer.seek(tp, found.offset if found is not None else ends[tp])
    return ends
