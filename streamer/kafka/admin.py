"""Creating topics and finding their partitions, with per-topic errors raised, not returned.

aiokafka's admin client returns per-topic error codes instead of raising them, and a new
topic is usable only once every partition has a leader; both are handled here once for the
alert engine, the dev broker tools, the demo, the bench and the tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streamer.errors import UsageError


class TopicError(UsageError):
    """A topic is missing, cannot be created, or has no partition leaders in time."""


async def create_topics(
    admin: AIOKafkaAdminClient,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    config: Mapping[str, Mapping[str, str]] | None = None,
    exist_ok: bool = False,
    timeout_s: float = 30.0,
) -> dict[str, list[int]]:
    """Create ``{name: partitions}`` (``config`` per name), wait for leaders; partition ids per topic."""
    new = [
        NewTopic(
            name,
            num_partitions=n,
            replication_factor=replication_factor,
            topic_configs=dict((config or {}).get(name, {})),
        )
        for name, n in topics.items()
    ]
    resp = await admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
    errors = []
    for err in resp.topic_errors:
        name, code = err[0], err[1]
        message = err[2] if len(err) > 2 else None
        if code == 0 or (exist_ok and code == TopicAlreadyExistsError.errno):
            continue
        errors.append(f"{name}: error code {code} ({message})")
    if errors:
        raise TopicError("creating topics failed: " + "; ".join(errors))
    return await wait_for_leaders(admin, list(topics), timeout_s=timeout_s)


async def wait_for_leaders(
    admin: AIOKafkaAdminClient, names: Sequence[str], *, timeout_s: float = 30.0
) -> dict[str, list[int]]:
    """Partition ids of each topic, once every partition has a leader (new topics take a moment)."""
    deadline = time.monotonic() + timeout_s
    while True:
        described: list[dict[str, Any]] = await admin.describe_topics(list(names))
        pending = [
            t["topic"]
            for t in described
            if t.get("error_code", 0) != 0
            or not t.get("partitions")
            or any(p.get("leader", -1) < 0 for p in t["partitions"])
        ]
        if not pending:
            return {t["topic"]: sorted(p["partition"] for p in t["partitions"]) for t in described}
        if time.monotonic() > deadline:
            raise TopicError(f"topics without partition leaders after {timeout_s} s: {pending}")
        await asyncio.sleep(0.1)


async def topic_partitions(client_kw: Mapping[str, Any], topic: str) -> list[TopicPartition]:
    """Every partition of ``topic``, asked of the cluster (a consumer's metadata cache only knows
    the topics it already tracks); TopicError if the topic does not exist.

    ``client_kw`` are connection arguments (``clients.client_kwargs`` or a bootstrap_servers dict).
    """
    admin = AIOKafkaAdminClient(**client_kw)
    await admin.start()
    try:
        if topic not in set(await admin.list_topics()):
            raise TopicError(f"topic {topic!r} does not exist")
        parts = await wait_for_leaders(admin, [topic])
    finally:
        await admin.close()
    return [TopicPartition(topic, p) for p in parts[topic]]
