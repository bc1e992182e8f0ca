"""What the demo reads while it runs: the labels and alerts topics, the daemon's HTTP endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable
from typing import Any


async def tail(bootstrap: str, topic: str, handle: Callable[[Any], None], stop: asyncio.Event) -> None:
    """Hand every record produced to ``topic`` from now on to ``handle`` until ``stop``."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest")
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                for r in recs:
                    handle(r)
    finally:
        await consumer.stop()


async def tail_when_exists(
    bootstrap: str, topic: str, handle: Callable[[Any], None], stop: asyncio.Event
) -> None:
    """The alert engine creates its topics itself; wait for them rather than fail."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        while not stop.is_set() and topic not in await admin.list_topics():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        await admin.close()
    if not stop.is_set():
        await tail(bootstrap, topic, handle, stop)


async def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Until the daemon's /readyz answers 200; fails if it exits or ``timeout_s`` passes."""
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with code {proc.returncode} during start-up")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the daemon was not ready after {timeout_s:.0f} s")


async def metrics_summary(port: int) -> str:
    """One status line from the daemon's /metrics: counts, batches, mean end-to-end latency."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        body = await resp.text()
    values: dict[str, float] = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            values[s.name] = values.get(s.name, 0.0) + s.value
    e2e_n = values.get("sentiwire_end_to_end_seconds_count", 0.0)
    e2e = values.get("sentiwire_end_to_end_seconds_sum", 0.0) / e2e_n * 1000 if e2e_n else 0.0
    return (
        f"/metrics: consumed {values.get('sentiwire_messages_consumed_total', 0):.0f}, "
        f"published {values.get('sentiwire_messages_published_total', 0):.0f}, "
        f"dead-lettered {values.get('sentiwire_messages_dead_lettered_total', 0):.0f}, "
        f"batches {values.get('sentiwire_batches_total', 0):.0f}, mean e2e {e2e:.0f} ms, "
        f"spikes fired {values.get('sentiwire_spikes_total', 0):.0f}"
    )
