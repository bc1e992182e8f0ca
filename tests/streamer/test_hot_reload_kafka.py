"""Hot reload under load: promote a new bundle (atomic symlink swap) while messages stream;
labels switch version once per partition, with no gap, no duplicate and no error."""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streamer.testing import daemon_config
from tests.streamer.helpers import (
    consume_all,
    json_messages,
    produce_steadily,
    read_topic,
    running_daemon,
    settings_from,
    wait_assigned,
)

pytestmark = pytest.mark.kafka


async def test_hot_reload_under_load(
    kafka_bootstrap: str, kafka_topic_factory, tiny_bundle_factory: Callable[..., Path], tmp_path: Path
) -> None:
    topic, labels, dlq = kafka_topic_factory(2), kafka_topic_factory(2), kafka_topic_factory(1)
    v1 = tiny_bundle_factory("hr-1", tmp_path / "versions" / "hr-1")
    v2 = tiny_bundle_factory("hr-2", tmp_path / "versions" / "hr-2")
    current = tmp_path / "current"
    current.symlink_to(v1)
    n = 1600
    cfg = daemon_config(
        bootstrap=kafka_bootstrap,
        bundle=current,
        topics=topic,
        labels=labels,
        dlq=dlq,
        group="reload",
        model={"path": str(current), "reload_interval_s": 0.1},
    )
    texts = [f"Headline {i}: the company's outlook {'improved' if i % 2 else 'worsened'}." for i in range(n)]
    async with running_daemon(settings_from(tmp_path, cfg)) as daemon:
        await wait_assigned([daemon], 2)
        stream = asyncio.create_task(
            produce_steadily(kafka_bootstrap, topic, json_messages(texts), per_tick=40, tick_s=0.05)
        )
        await asyncio.sleep(0.8)
        tmp = tmp_path / "current.tmp"
        tmp.symlink_to(v2)
        os.replace(tmp, current)  # promotion while the stream is flowing
        sent = await stream
        out = await consume_all(kafka_bootstrap, labels, n, timeout_s=60, settle_s=0.5)
        reg = daemon.metrics.registry
        assert reg.get_sample_value("sentiwire_model_reloads_total", {"result": "success"}) == 1
        assert reg.get_sample_value("sentiwire_model_reloads_total", {"result": "failure"}) is None
        assert daemon.models is not None
        assert daemon.models.current.bundle.version == "hr-2"
    assert daemon.exit_code == 0
    assert not await read_topic(kafka_bootstrap, dlq)

    positions = collections.Counter()
    per_partition: dict[int, list[tuple[int, str]]] = collections.defaultdict(list)
    for rec in out:
        v = orjson.loads(rec.value)
        positions[(v["source"]["partition"], v["source"]["offset"])] += 1
        per_partition[v["source"]["partition"]].append((v["source"]["offset"], v["model"]["version"]))
    assert set(positions) == set(sent)  # no gap
    assert max(positions.values()) == 1  # no duplicate
    versions_seen = set()
    for seq in per_partition.values():
        versions = [ver for _, ver in sorted(seq)]
        versions_seen.update(versions)
        switch = versions.index("hr-2") if "hr-2" in versions else len(versions)
        assert set(versions[:switch]) <= {"hr-1"}
        assert set(versions[switch:]) <= {"hr-2"}  # switched once, never back
    assert versions_seen == {"hr-1", "hr-2"}
