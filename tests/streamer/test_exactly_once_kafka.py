"""exactly_once: labels + dead letters + input offsets in one Kafka transaction per batch;
a read_committed consumer of the labels topic sees each input exactly once."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streamer.testing import daemon_config
from tests.streamer.helpers import (
    committed,
    consume_all,
    json_messages,
    produce,
    running_daemon,
    settings_from,
)

pytestmark = pytest.mark.kafka


async def test_exactly_once_read_committed(
    kafka_bootstrap: str, kafka_topic_factory, tiny_bundle: Path, tmp_path: Path
) -> None:
    topic, labels, dlq = kafka_topic_factory(2), kafka_topic_factory(2), kafka_topic_factory(1)
    texts = [f"Quarterly revenue of company {i} rose {i % 17}% year on year." for i in range(300)]
    values = json_messages(texts)
    values[10] = b"not json"
    values[200] = b'{"text": ""}'
    sent = await produce(kafka_bootstrap, topic, values)
    cfg = daemon_config(
        bootstrap=kafka_bootstrap,
        bundle=tiny_bundle,
        topics=topic,
        labels=labels,
        dlq=dlq,
        group="eos",
        delivery="exactly_once",
        exactly_once={"transactional_id": "sentiwire-test-eos"},
        batching={"max_batch_size": 32},
    )
    async with running_daemon(settings_from(tmp_path, cfg)) as daemon:
        out = await consume_all(kafka_bootstrap, labels, 298, timeout_s=60, isolation_level="read_committed")
        dead = await consume_all(kafka_bootstrap, dlq, 2, timeout_s=30, isolation_level="read_committed")
        m = daemon.metrics.registry
        assert (m.get_sample_value("sentiwire_transactions_total", {"result": "success"}) or 0) >= 1
    assert daemon.exit_code == 0
    ids = [orjson.loads(r.value)["id"] for r in out]
    assert len(ids) == 298
    assert set(ids) == {f"m{i}" for i in range(300)} - {"m10", "m200"}
    assert sorted(dict(r.headers)["sentiwire.error"] for r in dead) == [b"blank_text", b"not_json"]
    # The input offsets were committed by the transactions themselves.
    ends = {p: max(o for q, o in sent if q == p) + 1 for p in (0, 1)}
    assert await committed(kafka_bootstrap, "eos", topic, 2) == ends
