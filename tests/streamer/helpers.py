"""Shared helpers for the daemon's tests: settings, in-process / subprocess daemons, clients."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from streamer.app import Daemon
from streamer.config import Settings, load_settings
from streamer.kafka.admin import topic_partitions
from streamer.kafka.reader import read_to_end
from streamer.testing import write_config

REPO = Path(__file__).resolve().parents[2]


def real_texts(data_dir: Path, n: int, *, long_texts: int = 0) -> list[str]:
    """The first n texts of Financial PhraseBank, plus some whole BBC articles (longer than max_length)."""
    texts: list[str] = []
    with (data_dir / "financial-phrasebank" / "train.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            texts.append(row["text"])
            if len(texts) >= n - long_texts:
                break
    if long_texts:
        with (data_dir / "bbc-news" / "all.csv").open(encoding="utf-8") as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                if i >= long_texts:
                    break
                texts.append(row["text"])
    return texts


def settings_from(tmp_path: Path, cfg: dict[str, Any], name: str = "config.yaml") -> Settings:
    return load_settings(write_config(tmp_path / name, cfg))


@contextlib.asynccontextmanager
async def running_daemon(settings: Settings, *, timeout_s: float = 30.0) -> AsyncIterator[Daemon]:
    """An in-process daemon with its own metrics registry; stopped (drained) on exit."""
    daemon = Daemon(settings, registry=CollectorRegistry())
    task = asyncio.create_task(daemon.run())
    started = asyncio.create_task(daemon.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    if started not in done:
        started.cancel()
        raise RuntimeError(f"daemon did not start: {task.result() if task.done() else 'timeout'}")
    try:
        yield daemon
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, timeout=timeout_s)


async def wait_assigned(daemons: Sequence[Daemon], n_partitions: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        owned = [d.pipeline.assignment for d in daemons if d.pipeline is not None]
        if sum(len(a) for a in owned) == n_partitions and all(owned):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"partitions not assigned in {timeout_s}s")


async def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes | None],
    *,
    keys: Iterable[bytes | None] | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> list[tuple[int, int]]:
    """Send values in order; returns (partition, offset) of each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        key_list = list(keys) if keys is not None else None
        for i, value in enumerate(values):
            key = key_list[i] if key_list is not None else None
            futures.append(await producer.send(topic, value=value, key=key, headers=headers))
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metas]


def json_messages(texts: Sequence[str], prefix: str = "m") -> list[bytes]:
    return [
        orjson.dumps({"id": f"{prefix}{i}", "text": t, "ts": 1_700_000_000_000 + i, "tickers": ["ACME"]})
        for i, t in enumerate(texts)
    ]


async def consume_all(
    bootstrap: str,
    topic: str,
    n: int,
    *,
    timeout_s: float = 30.0,
    isolation_level: str = "read_uncommitted",
    settle_s: float = 0.0,
    until: Callable[[list[Any]], bool] | None = None,
) -> list[Any]:
    """Read the topic from the beginning (no group) until ``until(records)`` holds (default: n
    records arrived), then ``settle_s`` more; returns what arrived, also on timeout.

    Counting records is not enough where duplicates are expected (at-least-once after kill -9):
    pass ``until=covers(sent)`` to wait for every input position instead.
    """
    done = until if until is not None else (lambda out: len(out) >= n)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", isolation_level=isolation_level
    )
    await consumer.start()
    try:
        consumer.assign(await topic_partitions({"bootstrap_servers": bootstrap}, topic))
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(records)
            if settle_until is None and done(out):
                settle_until = time.monotonic() + settle_s
            if settle_until is not None and time.monotonic() >= settle_until:
                break
        return out
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, *, isolation_level: str = "read_uncommitted") -> list[Any]:
    """Every record of the topic now: read to the end offsets seen at the start (never a timed wait),
    so "the topic is empty" is a fact, not "nothing arrived within a second"."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation_level)
    await consumer.start()
    out: list[Any] = []
    try:
        await read_to_end(
            consumer, await topic_partitions({"bootstrap_servers": bootstrap}, topic), out.append
        )
    finally:
        await consumer.stop()
    return out


def covers(sent: Iterable[tuple[int, int]]) -> Callable[[list[Any]], bool]:
    """``until`` for :func:`consume_all`: every (partition, offset) of ``sent`` has a label."""
    wanted = set(sent)

    def check(out: list[Any]) -> bool:
        return len(out) >= len(wanted) and wanted <= set(labeled_positions(out))

    return check


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


class DaemonProcess:
    """``python -m sentiwire serve --config FILE`` as a subprocess (for SIGTERM / kill -9 tests)."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sentiwire", "serve", "--config", str(config)],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def wait_log(self, needle: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if needle in self.log_path.read_text(encoding="utf-8", errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged (rc={self.proc.poll()}):\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])

    def terminate(self, timeout_s: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


def log_events(log_path: Path, event: str) -> list[dict[str, Any]]:
    """JSON log lines of a subprocess daemon with this event name."""
    out = []
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if rec.get("event") == event:
            out.append(rec)
    return out


async def wait_for_log(
    proc: DaemonProcess, event: str, pred: Any = None, timeout_s: float = 60.0
) -> dict[str, Any]:
    """Without blocking the event loop: the newest matching JSON log event."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = [e for e in log_events(proc.log_path, event) if pred is None or pred(e)]
        if events:
            return events[-1]
        if proc.proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event!r} log event (rc={proc.proc.poll()}):\n{proc.tail()}")


async def produce_steadily(
    bootstrap: str, topic: str, values: Sequence[bytes], *, per_tick: int, tick_s: float
) -> list[tuple[int, int]]:
    """Send ``per_tick`` values every ``tick_s`` seconds (a live stream, not one burst)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    futures = []
    try:
        for start in range(0, len(values), per_tick):
            for v in values[start : start + per_tick]:
                futures.append(await producer.send(topic, value=v, key=None))
            await asyncio.sleep(tick_s)
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metas]


def labeled_positions(records: Iterable[Any]) -> list[tuple[int, int]]:
    """(source partition, source offset) of every label record, duplicates kept."""
    out = []
    for rec in records:
        src = orjson.loads(rec.value)["source"]
        out.append((src["partition"], src["offset"]))
    return out
