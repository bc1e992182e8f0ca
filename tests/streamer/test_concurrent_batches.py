"""Concurrent batches, without a broker: with ``model.workers`` > 1 batches overlap in the
worker threads and may finish in any order, yet labels reach the producer in offset order
(per partition, and so per key) and every record is labeled exactly once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from streamer.metrics import Metrics
from streamer.model.bundle import load_bundle
from streamer.model.classifier import Classifier
from streamer.model.reload import ModelHolder
from streamer.model.tokenizer import Encoded
from streamer.pipeline import Pipeline
from streamer.testing import ConsumerStub, FakeProducer, daemon_config
from tests.streamer.helpers import settings_from

TOPIC = "news"
N_PER_PARTITION = 60


@dataclass
class _Record:
    offset: int
    partition: int
    topic: str = TOPIC
    timestamp: int = 1_700_000_000_000
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def key(self) -> bytes:
        return b"k%d" % self.partition

    @property
    def value(self) -> bytes:
        return orjson.dumps({"id": f"{self.partition}-{self.offset}", "text": f"Shares fell {self.offset}%."})


@dataclass
class FakeConsumer(ConsumerStub):
    """Serves both partitions' records, five of each per fetch, then nothing."""

    next_offset: int = 0

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        if self.next_offset >= N_PER_PARTITION:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        lo, self.next_offset = self.next_offset, min(self.next_offset + 5, N_PER_PARTITION)
        return {
            TopicPartition(TOPIC, p): [_Record(o, p) for o in range(lo, self.next_offset)] for p in (0, 1)
        }


class SlowFirstClassifier(Classifier):
    """Every other batch is slow to tokenize, so a later batch often finishes first."""

    def __init__(self, bundle_dir: Path) -> None:
        super().__init__(load_bundle(bundle_dir), intra_op_threads=1)
        self._lock = threading.Lock()
        self._calls = 0
        self.active = 0
        self.max_active = 0

    def encode(self, texts: Sequence[str]) -> Encoded:
        with self._lock:
            self._calls += 1
            slow = self._calls % 2 == 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(0.05 if slow else 0.0)
            return super().encode(texts)
        finally:
            with self._lock:
                self.active -= 1


@pytest.mark.parametrize("workers", [1, 3])
async def test_labels_keep_offset_order_whatever_order_batches_finish(
    tiny_bundle: Path, tmp_path: Path, workers: int
) -> None:
    cfg = daemon_config(
        bootstrap="127.0.0.1:9", bundle=tiny_bundle, topics=TOPIC, labels="labels", dlq="dlq", group="g"
    )
    cfg["model"]["workers"] = workers
    cfg["batching"].update(max_batch_size=8, max_wait_ms=1, commit_interval_ms=60_000)
    settings = settings_from(tmp_path, cfg)
    metrics = Metrics(CollectorRegistry())
    clf = SlowFirstClassifier(tiny_bundle)
    holder = ModelHolder(clf, None, metrics)
    consumer, producer = FakeConsumer(), FakeProducer()
    pipeline = Pipeline(settings, consumer, producer, holder, metrics)  # type: ignore[arg-type]
    await pipeline.rebalancer.on_partitions_assigned([TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
    pipeline.start()
    async with asyncio.timeout(20):
        while len(producer.sent) < 2 * N_PER_PARTITION or pipeline.in_flight:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert await pipeline.stop(timeout_s=5)

    labels = [orjson.loads(v) for t, v in producer.sent if t == "labels" and v is not None]
    for p in (0, 1):
        offsets = [d["source"]["offset"] for d in labels if d["source"]["partition"] == p]
        assert offsets == list(range(N_PER_PARTITION)), f"partition {p} out of order or incomplete"
    assert consumer.commits[-1] == {TopicPartition(TOPIC, p): N_PER_PARTITION for p in (0, 1)}
    # The order check means something only if batches really overlapped (and only then).
    if workers > 1:
        assert clf.max_active >= 2
    else:
        assert clf.max_active == 1
