"""Admin round trips to a dev broker by bootstrap string, for sync and async callers.

Thin conveniences over ``streamer.kafka.admin``: they open an admin client for a bootstrap
string, call the one implementation and close it. The sync bridge runs the coroutine on a
private loop in a private thread, so fixtures and the CLI can use it even where the caller's
thread already runs an event loop (as pytest-asyncio's session loop does).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from sentiwire.devbroker.errors import BrokerError
from streamer.kafka import admin as kafka_admin

_T = TypeVar("_T")


def run_in_thread(make: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion on a private event loop in a private thread."""
    box: dict[str, Any] = {}

    async def wrapper() -> _T:
        return await make()

    def target() -> None:
        try:
            box["value"] = asyncio.run(wrapper())
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name="devbroker-admin", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    value: _T = box["value"]
    return value


async def cluster_metadata(bootstrap: str, *, timeout_s: float = 5.0) -> dict[str, Any]:
    """One metadata round trip: the broker list and controller, as aiokafka's admin client reports."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        info: dict[str, Any] = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return info
    finally:
        await admin.close()


async def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    config: Mapping[str, str] | None = None,
    exist_ok: bool = False,
    timeout_s: float = 30.0,
) -> None:
    """Create topics with explicit partition counts (``{name: partitions}``), replication 1.

    ``config`` applies to every topic. Returns once every partition has a leader; a failed
    topic raises BrokerError naming it.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        await kafka_admin.create_topics(
            admin,
            topics,
            config={name: config for name in topics} if config else None,
            exist_ok=exist_ok,
            timeout_s=timeout_s,
        )
    except kafka_admin.TopicError as exc:
        raise BrokerError(str(exc)) from exc
    finally:
        await admin.close()


def create_topics_sync(bootstrap: str, topics: Mapping[str, int], **kwargs: Any) -> None:
    """``create_topics`` for sync callers (works inside a running event loop's thread too)."""
    run_in_thread(lambda: create_topics(bootstrap, topics, **kwargs))
