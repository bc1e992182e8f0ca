"""Shutdown race, without a broker: records that a fetch returns while stop() is already under
way must not be labeled after the final commit (the next owner would label them again).

Found by test_rebalance_kafka (19 duplicates when a daemon left mid-stream): stop() saw
nothing in flight while the fetch task was still inside getmany(); that call returned during
the final commit's await, and the batch loop published its records after the commit.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from streamer.metrics import Metrics
from streamer.model.bundle import load_bundle
from streamer.model.classifier import Classifier
from streamer.model.reload import ModelHolder
from streamer.pipeline import Pipeline
from streamer.testing import ConsumerStub, FakeProducer, daemon_config
from tests.streamer.helpers import settings_from

TOPIC = "news"


@dataclass
class _Record:
    offset: int
    topic: str = TOPIC
    partition: int = 0
    timestamp: int = 1_700_000_000_000
    key: bytes | None = b"k"
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def value(self) -> bytes:
        return b'{"id": "m%d", "text": "Profit warning issued for the year."}' % self.offset


@dataclass
class FakeConsumer(ConsumerStub):
    """getmany() serves offset 0 at once; offsets 1-4 only once the final commit has begun."""

    late: asyncio.Event = field(default_factory=asyncio.Event)
    served_first: bool = False
    served_late: bool = False

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        tp = TopicPartition(TOPIC, 0)
        if not self.served_first:
            self.served_first = True
            return {tp: [_Record(0)]}
        if not self.served_late:
            try:
                async with asyncio.timeout(timeout_ms / 1000):
                    await self.late.wait()
            except TimeoutError:
                return {}
            self.served_late = True
            return {tp: [_Record(i) for i in range(1, 5)]}
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await super().commit(offsets)
        if len(self.commits) >= 1 and self.served_first:
            self.late.set()  # the fetch in progress returns now, mid-commit
            await asyncio.sleep(0.3)  # time enough for the batch loop to label what it got


async def test_records_fetched_during_stop_are_left_for_the_next_owner(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    cfg = daemon_config(
        bootstrap="127.0.0.1:9", bundle=tiny_bundle, topics=TOPIC, labels="labels", dlq="dlq", group="g"
    )
    cfg["batching"]["commit_interval_ms"] = 60_000  # only the shutdown commit
    settings = settings_from(tmp_path, cfg)
    metrics = Metrics(CollectorRegistry())
    holder = ModelHolder(Classifier(load_bundle(tiny_bundle)), None, metrics)
    consumer, producer = FakeConsumer(), FakeProducer()
    pipeline = Pipeline(settings, consumer, producer, holder, metrics)  # type: ignore[arg-type]
    await pipeline.rebalancer.on_partitions_assigned([TopicPartition(TOPIC, 0)])
    pipeline.start()
    async with asyncio.timeout(10):
        while len(producer.sent) < 1 or pipeline.in_flight:  # noqa: ASYNC110 (polling pipeline state)
            await asyncio.sleep(0.01)

    assert await pipeline.stop(timeout_s=5)

    labels = [v for t, v in producer.sent if t == "labels"]
    assert len(labels) == 1, f"{len(labels)} labels published; offsets 1-4 arrived after stop() began"
    assert consumer.commits[-1] == {TopicPartition(TOPIC, 0): 1}
