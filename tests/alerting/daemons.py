"""Helpers for the alerting tests that run the real daemon: event-time backlogs, metrics, processes.

Hours of traffic are compressed into the record timestamps (event time) of a backlog that is
produced before anything starts, never into the wall clock; waits are on conditions.
"""

from __future__ import annotations

import random
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from sentiwire.procs import free_port, terminate
from streamer.testing import daemon_config
from tests.alerting.test_engine_kafka import read_all, spawn_alert_process, wait_for
from tests.streamer.helpers import write_config

HOUR_MS = 3_600_000
CALM_TICKERS = ("AAPL", "MSFT", "AMZN", "JPM", "XOM", "KO")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_samples(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def engine_outcomes(port: int) -> dict[str, float]:
    """``sentiwire_alert_records_total`` by outcome, from a /metrics endpoint (empty if down)."""
    try:
        samples = metric_samples(port)
    except OSError:
        return {}
    return {dict(k[1])["outcome"]: v for k, v in samples.items() if k[0] == "sentiwire_alert_records_total"}


def is_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@dataclass
class Backlog:
    """Input messages with their event times: calm hours, decoys, one burst about NOK."""

    messages: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    burst_ids: set[str] = field(default_factory=set)
    burst_at_ms: int = 0
    end_ms: int = 0


def backlog(
    neg: list[str],
    other: list[str],
    *,
    start_ms: int,
    hours: float = 3.0,
    every_s: float = 3.0,
    burst_after_h: float = 2.5,
    burst_count: int = 40,
    burst_s: float = 240.0,
    seed: int = 5,
) -> Backlog:
    """Calm traffic (about 1 in 7 labeled negative by the spike model, some naming calm tickers),
    a 3-of-4 negative flurry about ACME, and ``burst_count`` negatives about NOK in ``burst_s``."""
    rng = random.Random(seed)
    out = Backlog(burst_at_ms=start_ms + int(burst_after_h * HOUR_MS))
    n = int(hours * 3600 / every_s)
    for i in range(n):
        ts = start_ms + int(i * every_s * 1000) + rng.randrange(0, int(every_s * 1000))
        text = neg[i % len(neg)] if rng.random() < 1 / 7 else other[i % len(other)]
        msg: dict[str, Any] = {"id": f"c{i}", "text": text}
        if rng.random() < 0.2:
            msg["tickers"] = [rng.choice(CALM_TICKERS)]
        out.messages.append((ts, msg))
    flurry_at = start_ms + int(hours * HOUR_MS / 2)
    for j in range(4):
        text = neg[-200 - j] if j < 3 else other[-1]
        out.messages.append((flurry_at + j * 15_000, {"id": f"f{j}", "text": text, "tickers": ["ACME"]}))
    for j in range(burst_count):
        ts = out.burst_at_ms + int(j * burst_s * 1000 / burst_count)
        out.messages.append((ts, {"id": f"b{j}", "text": neg[-1 - j], "tickers": ["NOK"]}))
        out.burst_ids.add(f"b{j}")
    out.messages.sort(key=lambda m: m[0])
    out.end_ms = out.messages[-1][0]
    return out


async def produce_backlog(bootstrap: str, topic: str, messages: list[tuple[int, dict[str, Any]]]) -> None:
    """Record timestamp = event time, key = id (spread over the partitions), before anything reads it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        for ts, msg in messages:
            await producer.send(topic, orjson.dumps(msg), key=msg["id"].encode(), timestamp_ms=ts)
        await producer.flush()
    finally:
        await producer.stop()


def serve_config(
    tmp_path: Path,
    name: str,
    *,
    bootstrap: str,
    bundle: Path,
    news: str,
    labels: str,
    dlq: str,
    group: str,
    port: int,
    alerts: dict[str, Any] | None = None,
    **sections: Any,
) -> Path:
    """A ``sentiwire serve`` config file (alerts in-process only when ``alerts`` is given)."""
    cfg = daemon_config(
        bootstrap=bootstrap,
        bundle=bundle,
        topics=news,
        labels=labels,
        dlq=dlq,
        group=group,
        http={"port": port},
        input={"auto_offset_reset": "earliest", "session_timeout_ms": 6000, "heartbeat_interval_ms": 500},
        **sections,
    )
    if alerts is not None:
        cfg["alerts"] = alerts
    return write_config(tmp_path / name, cfg)


def alerts_section(suffix: str, **extra: Any) -> dict[str, Any]:
    """Default detector settings (5 min vs 6 h, 30 s buckets, 60 s lateness), own topics."""
    return {
        "enabled": True,
        "alerts_topic": f"alerts-{suffix}",
        "state_topic": f"alerts-state-{suffix}",
        "idle_advance_s": 10.0,
        **extra,
    }


class AlertProcess:
    """``sentiwire alert`` as its own process, with /metrics and /readyz on a free port."""

    def __init__(
        self,
        tmp_path: Path,
        name: str,
        *,
        bootstrap: str,
        labels: str,
        alerts: dict[str, Any],
        group: str,
    ) -> None:
        """``group`` is the serving daemons' consumer group, as one shared settings file gives it."""
        self.port = free_port()
        self.log_path = tmp_path / f"{name}.log"
        config = {
            "kafka": {"bootstrap_servers": bootstrap},
            "input": {"group_id": group},
            "output": {"labels_topic": labels},
            "http": {"host": "127.0.0.1", "port": self.port},
            "logging": {"format": "json"},
            "alerts": alerts,
        }
        self.proc = spawn_alert_process(write_config(tmp_path / f"{name}.yaml", config), self.log_path)

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    async def ready(self, timeout_s: float = 90) -> None:
        def check() -> bool:
            assert self.proc.poll() is None, self.tail()
            return is_ready(self.port)

        await wait_for(check, timeout_s, "sentiwire alert /readyz")

    def stop(self) -> int | None:
        return terminate(self.proc, timeout_s=20)


async def wait_counted(port: int, n: int, timeout_s: float, what: str) -> dict[str, float]:
    """Until the engine behind ``port`` has an outcome for ``n`` labels (the caller asserts that
    all were counted); a timeout names every outcome."""
    last: dict[str, float] = {}

    def check() -> dict[str, float] | None:
        nonlocal last
        last = engine_outcomes(port) or last
        # Every input has its one outcome (counted, or dropped with a reason): waiting cannot help.
        settled = sum(last.get(k, 0) for k in ("counted", "late", "capped", "invalid"))
        return last if settled >= n else None

    try:
        result: dict[str, float] = await wait_for(check, timeout_s, what, interval_s=1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: wanted {n} counted, engine outcomes {last}") from None
    return result


async def incident_records(bootstrap: str, topic: str) -> dict[str, list[dict[str, Any]]]:
    """Alerts-topic records by incident id, in order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in await read_all(bootstrap, topic):
        out.setdefault(doc["incident_id"], []).append(doc)
    return out


async def wait_resolved(bootstrap: str, topic: str, timeout_s: float) -> dict[str, list[dict[str, Any]]]:
    """Until every incident on the alerts topic has resolved (at least one incident)."""

    async def check() -> dict[str, list[dict[str, Any]]] | None:
        by_id = await incident_records(bootstrap, topic)
        done = by_id and all(docs[-1]["state"] == "resolved" for docs in by_id.values())
        return by_id if done else None

    result: dict[str, list[dict[str, Any]]] = await wait_for(check, timeout_s, "the incident to resolve", 1.0)
    return result


def wall_ms() -> int:
    return int(time.time() * 1000)
