"""Rebalances under load, in-process: a daemon joins mid-stream (the first one's partitions are
revoked while batches are in flight), then the first leaves. The revoke handler finishes and
commits in-flight work, so even at_least_once re-labels nothing, and exactly_once
(read_committed) sees every input exactly once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from pathlib import Path

import pytest

from streamer.testing import daemon_config
from tests.streamer.helpers import (
    consume_all,
    json_messages,
    labeled_positions,
    produce_steadily,
    running_daemon,
    settings_from,
    wait_assigned,
)

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
async def test_join_and_leave_under_load(
    delivery: str, kafka_bootstrap: str, kafka_topic_factory, tiny_bundle: Path, tmp_path: Path
) -> None:
    topic, labels, dlq = kafka_topic_factory(4), kafka_topic_factory(4), kafka_topic_factory(1)
    n = 2400
    group = f"rebalance-{delivery}"

    def settings(name: str):
        cfg = daemon_config(
            bootstrap=kafka_bootstrap,
            bundle=tiny_bundle,
            topics=topic,
            labels=labels,
            dlq=dlq,
            group=group,
            delivery=delivery,
            exactly_once={"transactional_id": f"{group}-{topic}-{name}"},
            input={"session_timeout_ms": 6000, "heartbeat_interval_ms": 500},
        )
        return settings_from(tmp_path, cfg, name=f"{name}.yaml")

    texts = [f"Update {i}: guidance {'raised' if i % 3 else 'cut'} for the year." for i in range(n)]
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_daemon(settings("a")))
        await wait_assigned([a], 4)
        stream = asyncio.create_task(
            produce_steadily(kafka_bootstrap, topic, json_messages(texts), per_tick=40, tick_s=0.05)
        )
        await asyncio.sleep(0.7)
        b_ctx = running_daemon(settings("b"))
        b = await b_ctx.__aenter__()
        await wait_assigned([a, b], 4)  # A's partitions were revoked while it had work in flight
        await asyncio.sleep(0.7)
        await stack.aclose()  # A leaves gracefully mid-stream: B takes all four partitions
        assert a.exit_code == 0
        await wait_assigned([b], 4)
        sent = await stream
        isolation = "read_committed" if delivery == "exactly_once" else "read_uncommitted"
        out = await consume_all(
            kafka_bootstrap, labels, n, timeout_s=60, isolation_level=isolation, settle_s=1.0
        )
        revoked_a = a.metrics.registry.get_sample_value("sentiwire_rebalances_total", {"event": "revoked"})
        await b_ctx.__aexit__(None, None, None)
    assert b.exit_code == 0
    assert revoked_a is not None
    assert revoked_a >= 1
    counts = collections.Counter(labeled_positions(out))
    assert set(counts) == set(sent)  # nothing lost
    dups = {k: v for k, v in counts.items() if v > 1}
    assert not dups, f"{len(dups)} inputs labeled more than once"
