"""A zombie under exactly_once: a daemon frozen (SIGSTOP) past the session timeout loses its
partitions to another daemon, which re-labels from the last committed transaction; when the
zombie wakes (SIGCONT) with an open transaction, that transaction must never commit.

aiokafka sends TxnOffsetCommit without KIP-447 generation fencing (aiokafka#844), so the
fencing is the pre-KIP-447 one: one transactional producer per input partition, its
transactional.id derived from group + topic + partition, so the new owner's InitProducerId
fences the zombie's producer for that partition.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
from pathlib import Path

import pytest

from streamer.testing import daemon_config, write_config
from tests.streamer.helpers import (
    DaemonProcess,
    consume_all,
    covers,
    json_messages,
    labeled_positions,
    log_events,
    produce_steadily,
    wait_for_log,
)

FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


@pytest.mark.slow
async def test_a_frozen_daemon_never_commits_a_stale_transaction(
    kafka_bootstrap: str, kafka_topic_factory, tiny_bundle: Path, tmp_path: Path
) -> None:
    topic, labels, dlq = kafka_topic_factory(4), kafka_topic_factory(4), kafka_topic_factory(1)
    n = 4000
    cfg = daemon_config(
        bootstrap=kafka_bootstrap,
        bundle=tiny_bundle,
        topics=topic,
        labels=labels,
        dlq=dlq,
        group=f"zombie-{topic}",
        input=FAST_GROUP,
        delivery="exactly_once",
        exactly_once={"transaction_timeout_ms": 60_000, "commit_interval_ms": 200},
    )
    config = write_config(tmp_path / "c.yaml", cfg)
    a = DaemonProcess(config, tmp_path / "a.log")
    b = DaemonProcess(config, tmp_path / "b.log")
    try:
        two = lambda e: len(e["partitions"]) == 2  # noqa: E731
        await wait_for_log(a, "partitions assigned", two)
        await wait_for_log(b, "partitions assigned", two)
        texts = [f"Company {i} reported results; shares moved {i % 11}%." for i in range(n)]
        stream = asyncio.create_task(
            produce_steadily(kafka_bootstrap, topic, json_messages(texts), per_tick=40, tick_s=0.04)
        )
        await asyncio.sleep(1.5)
        os.kill(a.proc.pid, signal.SIGSTOP)  # frozen mid-stream, transactions open
        try:
            await wait_for_log(b, "partitions assigned", lambda e: len(e["partitions"]) == 4, timeout_s=90)
            sent = await stream
            # The survivor labels (and commits) everything, including what the zombie had open.
            await consume_all(
                kafka_bootstrap,
                labels,
                n,
                timeout_s=120,
                isolation_level="read_committed",
                until=covers(sent),
            )
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        # Give the zombie time to wake, publish its stale batches and try to commit them.
        await asyncio.sleep(8.0)
        out = await consume_all(
            kafka_bootstrap,
            labels,
            n,
            timeout_s=60,
            isolation_level="read_committed",
            settle_s=3.0,
            until=covers(sent),
        )
        positions = labeled_positions(out)
        assert set(positions) == set(sent), "records lost"
        dup = [p for p, c in collections.Counter(positions).items() if c > 1]
        assert not dup, f"{len(dup)} duplicates visible to read_committed: the zombie committed"
        assert b.proc.poll() is None, b.tail()
        # The zombie either stopped (fenced: exit 1 so its pod restarts) or rejoined cleanly.
        rc = a.proc.poll()
        assert rc in (None, 1), a.tail()
        if rc == 1:
            assert any("fenced" in str(e).lower() for e in log_events(a.log_path, "stopped")), a.tail()
        assert (await asyncio.to_thread(b.terminate)) == 0, b.tail()
    finally:
        a.close()
        b.close()
