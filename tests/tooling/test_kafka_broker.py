"""The local broker really is Apache Kafka 4.x, and the clients we rely on work against it.

aiokafka 0.14 against Kafka 4 (KIP-896 removed old protocol versions): plain produce/consume,
consumer groups with commits, and transactions with send_offsets_to_transaction read back
under read_committed. kcat (librdkafka) is an independent client.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from sentiwire.devbroker import BrokerError, BrokerHandle, cluster_metadata, create_topics
from tests.fixtures.kafka import TopicFactory


async def _consume_all(
    bootstrap: str,
    topic: str,
    expected: int,
    *,
    isolation_level: str = "read_uncommitted",
    timeout_s: float = 20,
) -> list[tuple[bytes | None, bytes | None, int]]:
    """Read from the beginning, without a group, until ``expected`` records or the timeout."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation_level,
    )
    await consumer.start()
    out: list[tuple[bytes | None, bytes | None, int]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(out) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend((r.key, r.value, r.partition) for r in records)
    finally:
        await consumer.stop()
    return out


def test_broker_is_kafka_4_and_ready(kafka_broker: BrokerHandle) -> None:
    assert kafka_broker.version.split(".")[0] == "4"
    assert kafka_broker.alive()
    assert kafka_broker.log_path.exists()
    assert "Kafka Server started" in kafka_broker.log_path.read_text()


async def test_metadata_lists_the_single_broker_as_controller(kafka_broker: BrokerHandle) -> None:
    info = await cluster_metadata(kafka_broker.bootstrap)
    assert [b["node_id"] for b in info["brokers"]] == [1]
    assert info["controller_id"] == 1


async def test_topics_are_not_auto_created(kafka_broker: BrokerHandle) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, request_timeout_ms=3000)
    await producer.start()
    try:
        with pytest.raises(KafkaError):
            await asyncio.wait_for(producer.send_and_wait(f"nope-{uuid.uuid4().hex}", b"x"), 10)
    finally:
        await producer.stop()


async def test_created_topic_has_the_requested_partitions(
    kafka_broker: BrokerHandle, kafka_topic_factory: TopicFactory
) -> None:
    topic = kafka_topic_factory(4)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert sorted(p["partition"] for p in described["partitions"]) == [0, 1, 2, 3]
    with pytest.raises(BrokerError, match=topic):
        await create_topics(kafka_broker.bootstrap, {topic: 4})


async def test_produce_and_consume_keep_per_key_order(kafka_broker: BrokerHandle, kafka_topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(300):
            producer_key = f"k{i % 7}".encode()
            await producer.send(kafka_topic, key=producer_key, value=str(i).encode())
        await producer.flush()
    finally:
        await producer.stop()
    got = await _consume_all(kafka_broker.bootstrap, kafka_topic, 300)
    assert len(got) == 300
    assert {int(v) for _, v, _ in got if v is not None} == set(range(300))
    per_key: dict[bytes | None, list[int]] = {}
    partition_of: dict[bytes | None, set[int]] = {}
    for k, v, p in got:
        assert v is not None
        per_key.setdefault(k, []).append(int(v))
        partition_of.setdefault(k, set()).add(p)
    assert all(vals == sorted(vals) for vals in per_key.values())
    assert all(len(ps) == 1 for ps in partition_of.values())
    assert len({p for _, _, p in got}) > 1  # 7 keys over 3 partitions


async def test_consumer_group_commits_and_resumes(kafka_broker: BrokerHandle, kafka_topic: str) -> None:
    bootstrap = kafka_broker.bootstrap
    group = f"g-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(100):
            await producer.send(kafka_topic, key=str(i).encode(), value=str(i).encode())
        await producer.flush()
    finally:
        await producer.stop()

    first = AIOKafkaConsumer(
        kafka_topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await first.start()
    seen: list[int] = []
    try:
        while len(seen) < 100:
            batch = await first.getmany(timeout_ms=1000, max_records=40)
            for records in batch.values():
                seen.extend(int(r.value) for r in records)
            if len(seen) >= 40:
                break
        await first.commit()
        committed = {tp: await first.committed(tp) for tp in first.assignment()}
    finally:
        await first.stop()
    assert sum(c or 0 for c in committed.values()) == len(seen)

    second = AIOKafkaConsumer(
        kafka_topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await second.start()
    rest: list[int] = []
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while len(seen) + len(rest) < 100 and asyncio.get_running_loop().time() < deadline:
            batch = await second.getmany(timeout_ms=500)
            for records in batch.values():
                rest.extend(int(r.value) for r in records)
    finally:
        await second.stop()
    # The second member resumes exactly at the committed offsets: no repeats, no gaps.
    assert sorted(seen + rest) == list(range(100))


async def test_transactions_send_offsets_and_read_committed(
    kafka_broker: BrokerHandle, kafka_topic_factory: TopicFactory
) -> None:
    """The exactly-once loop: consume, produce in a transaction, commit offsets in the same one."""
    bootstrap = kafka_broker.bootstrap
    src, dst = kafka_topic_factory(2), kafka_topic_factory(2)
    group = f"eos-{uuid.uuid4().hex[:8]}"

    plain = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await plain.start()
    try:
        for i in range(20):
            await plain.send(src, key=str(i).encode(), value=str(i).encode())
        await plain.flush()
    finally:
        await plain.stop()

    consumer = AIOKafkaConsumer(
        src,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    txp = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    await txp.start()
    try:
        records = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(records) < 20 and asyncio.get_running_loop().time() < deadline:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(recs)
        assert len(records) == 20
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)

        async with txp.transaction():
            await txp.send(dst, key=b"first", value=b"first-commit")
        # An aborted transaction: its record must never be visible to read_committed readers.
        await txp.begin_transaction()
        await txp.send(dst, key=b"ghost", value=b"ghost")
        await txp.flush()
        await txp.abort_transaction()

        async with txp.transaction():
            for r in records:
                await txp.send(dst, key=r.key, value=b"out-" + r.value)
            await txp.send_offsets_to_transaction(offsets, group)
    finally:
        await txp.stop()
        await consumer.stop()

    committed_view = await _consume_all(bootstrap, dst, 21, isolation_level="read_committed", timeout_s=10)
    values = sorted(v for _, v, _ in committed_view if v is not None)
    assert b"ghost" not in values
    assert values.count(b"first-commit") == 1
    assert sorted(v for v in values if v.startswith(b"out-")) == sorted(b"out-%d" % i for i in range(20))
    # read_uncommitted sees the aborted record too: proves the abort really wrote something.
    raw = await _consume_all(bootstrap, dst, 22, timeout_s=10)
    assert b"ghost" in [v for _, v, _ in raw]

    # The group's offsets were committed by the transaction, not by the consumer.
    check = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await check.start()
    try:
        for tp, off in offsets.items():
            assert await check.committed(tp) == off
    finally:
        await check.stop()


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (make system-deps)")
def test_kcat_produces_and_consumes(kafka_broker: BrokerHandle, kafka_topic_factory: TopicFactory) -> None:
    topic = kafka_topic_factory(2)
    lines = "".join(f"key{i}:value {i}\n" for i in range(50))
    subprocess.run(
        ["kcat", "-b", kafka_broker.bootstrap, "-P", "-t", topic, "-K", ":"],
        input=lines,
        text=True,
        check=True,
        timeout=30,
    )
    out = subprocess.run(
        ["kcat", "-b", kafka_broker.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%k=%s\n"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert sorted(out.splitlines()) == sorted(f"key{i}=value {i}" for i in range(50))
