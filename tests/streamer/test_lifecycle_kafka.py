"""Daemons as real subprocesses (`python -m sentiwire serve --config ...`) on the real broker:
SIGTERM drains and commits; two daemons split a group and one takes over when the other is
killed; kill -9 at random points never loses (at_least_once) or duplicates (exactly_once)."""

from __future__ import annotations

import asyncio
import collections
import random
import time
from pathlib import Path

import orjson
import pytest

from streamer.testing import daemon_config, write_config
from tests.streamer.helpers import (
    DaemonProcess,
    committed,
    consume_all,
    covers,
    json_messages,
    labeled_positions,
    log_events,
    produce,
    produce_steadily,
    wait_for_log,
)

pytestmark = pytest.mark.kafka

FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}


def _texts(n: int) -> list[str]:
    return [f"Company {i} reported quarterly results; shares moved {i % 13}%." for i in range(n)]


async def test_sigterm_drains_commits_and_restart_reprocesses_nothing(
    kafka_bootstrap: str, kafka_topic_factory, tiny_bundle: Path, tmp_path: Path
) -> None:
    topic, labels, dlq = kafka_topic_factory(3), kafka_topic_factory(3), kafka_topic_factory(1)
    n = 3000
    cfg = daemon_config(
        bootstrap=kafka_bootstrap, bundle=tiny_bundle, topics=topic, labels=labels, dlq=dlq, group="sigterm"
    )
    config = write_config(tmp_path / "c.yaml", cfg)
    first = DaemonProcess(config, tmp_path / "first.log")
    try:
        await wait_for_log(first, "partitions assigned", lambda e: e["partitions"])
        stream = asyncio.create_task(
            produce_steadily(kafka_bootstrap, topic, json_messages(_texts(n)), per_tick=50, tick_s=0.05)
        )
        await asyncio.sleep(1.0)  # mid-stream
        assert not stream.done()
        rc = await asyncio.to_thread(first.terminate)
        assert rc == 0, first.tail()
    finally:
        first.close()
    stopped = log_events(first.log_path, "stopped")
    assert stopped, first.tail()
    assert stopped[-1]["drained"] is True

    # Everything fetched was labeled and committed: labels cover exactly [0, committed) per partition.
    commits = await committed(kafka_bootstrap, "sigterm", topic, 3)
    done = {p: c or 0 for p, c in commits.items()}
    assert sum(done.values()) > 0
    before = labeled_positions(await consume_all(kafka_bootstrap, labels, sum(done.values()), settle_s=0.5))
    assert sorted(before) == sorted((p, o) for p, c in done.items() for o in range(c))

    sent = await stream
    assert sum(done.values()) < n  # SIGTERM really landed mid-stream
    second = DaemonProcess(config, tmp_path / "second.log")
    try:
        after = labeled_positions(
            await consume_all(kafka_bootstrap, labels, n, timeout_s=90, settle_s=1.0, until=covers(sent))
        )
        assert (await asyncio.to_thread(second.terminate)) == 0, second.tail()
    finally:
        second.close()
    counts = collections.Counter(after)
    assert set(counts) == set(sent)
    assert max(counts.values()) == 1  # nothing acknowledged before SIGTERM was labeled again


async def test_two_daemons_split_partitions_and_survivor_takes_over(
    kafka_bootstrap: str, kafka_topic_factory, tiny_bundle: Path, tmp_path: Path
) -> None:
    topic, labels, dlq = kafka_topic_factory(4), kafka_topic_factory(4), kafka_topic_factory(1)
    n = 2000
    cfg = daemon_config(
        bootstrap=kafka_bootstrap,
        bundle=tiny_bundle,
        topics=topic,
        labels=labels,
        dlq=dlq,
        group="pair",
        input=FAST_GROUP,
    )
    config = write_config(tmp_path / "c.yaml", cfg)
    a = DaemonProcess(config, tmp_path / "a.log")
    b = DaemonProcess(config, tmp_path / "b.log")
    try:
        two = lambda e: len(e["partitions"]) == 2  # noqa: E731
        await wait_for_log(a, "partitions assigned", two)
        await wait_for_log(b, "partitions assigned", two)
        owned_a = set(log_events(a.log_path, "partitions assigned")[-1]["partitions"])
        owned_b = set(log_events(b.log_path, "partitions assigned")[-1]["partitions"])
        assert not owned_a & owned_b
        assert len(owned_a | owned_b) == 4

        stream = asyncio.create_task(
            produce_steadily(kafka_bootstrap, topic, json_messages(_texts(n)), per_tick=40, tick_s=0.04)
        )
        await asyncio.sleep(1.0)
        a.kill()  # SIGKILL: no drain, no commit, no LeaveGroup
        sent = await stream
        await wait_for_log(b, "partitions assigned", lambda e: len(e["partitions"]) == 4, timeout_s=60)
        out = labeled_positions(
            await consume_all(kafka_bootstrap, labels, n, timeout_s=90, settle_s=0.5, until=covers(sent))
        )
        assert set(out) == set(sent)  # nothing lost
        assert (await asyncio.to_thread(b.terminate)) == 0, b.tail()
    finally:
        a.close()
        b.close()


@pytest.mark.slow
@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
async def test_kill_9_at_random_points(
    delivery: str, kafka_bootstrap: str, kafka_topic_factory, tiny_bundle: Path, tmp_path: Path
) -> None:
    topic, labels, dlq = kafka_topic_factory(4), kafka_topic_factory(4), kafka_topic_factory(1)
    n, kills = 20_000, 10
    rng = random.Random(7)
    cfg = daemon_config(
        bootstrap=kafka_bootstrap,
        bundle=tiny_bundle,
        topics=topic,
        labels=labels,
        dlq=dlq,
        group=f"crash-{delivery}",
        input=FAST_GROUP,
        delivery=delivery,
        exactly_once={"transactional_id": f"crash-{topic}", "transaction_timeout_ms": 10_000},
        batching={"max_batch_size": 64, "max_wait_ms": 5, "max_in_flight": 1024, "commit_interval_ms": 100},
    )
    config = write_config(tmp_path / "c.yaml", cfg)
    sent = await produce(kafka_bootstrap, topic, json_messages(_texts(n)))

    async def progress() -> int:
        return sum(c or 0 for c in (await committed(kafka_bootstrap, f"crash-{delivery}", topic, 4)).values())

    # Each kill lands once the run has committed something new (a condition, not a timing guess),
    # after a random extra delay, and never after most of the backlog is done.
    done_kills = 0
    for k in range(kills):
        before = await progress()
        if before > n * 0.8:
            break
        proc = DaemonProcess(config, tmp_path / f"run{k}.log")
        try:
            await wait_for_log(proc, "partitions assigned", lambda e: e["partitions"], timeout_s=120)
            deadline = time.monotonic() + 120
            while await progress() <= before:
                assert time.monotonic() < deadline, f"run {k} committed nothing in 120 s:\n{proc.tail()}"
                await asyncio.sleep(0.1)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            proc.kill()
            done_kills += 1
        finally:
            proc.close()
    reached = await progress()
    assert done_kills >= 3, f"only {done_kills} kills landed before {reached} of {n} were committed"
    assert 0 < reached < n, f"the kills should land mid-stream (committed {reached} of {n})"
    isolation = "read_committed" if delivery == "exactly_once" else "read_uncommitted"
    final = DaemonProcess(config, tmp_path / "final.log")
    try:
        out = await consume_all(
            kafka_bootstrap,
            labels,
            n,
            timeout_s=240,
            isolation_level=isolation,
            settle_s=1.0,
            until=covers(sent),
        )
        assert (await asyncio.to_thread(final.terminate)) == 0, final.tail()
    finally:
        final.close()
    positions = labeled_positions(out)
    counts = collections.Counter(positions)
    assert set(counts) == set(sent), "an input offset has no label"
    if delivery == "exactly_once":
        assert len(positions) == n, f"{len(positions) - n} duplicates visible to read_committed"
    ids = {orjson.loads(r.value)["id"] for r in out}
    assert len(ids) == n
