"""Fakes and builders for testing code that uses the daemon, structlog's ``testing`` habit.

Shipped with the package so the project's tests, the bench and the demo — and users' own
tests — share one set: a daemon config builder, a consumer stand-in, a producer that
acknowledges at once, and fetched-record values. Pure logic only: everything that touches
Kafka itself is tested against a real broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiokafka import TopicPartition

# Where a test's daemon differs from a deployment's: quick to flush, commit and stop.
TEST_DEFAULTS: dict[str, Any] = {
    "output": {"linger_ms": 2},
    "model": {"reload_interval_s": 0},
    "batching": {"max_batch_size": 16, "max_wait_ms": 5, "max_in_flight": 256, "commit_interval_ms": 200},
    "shutdown_timeout_s": 10,
}


def daemon_config(
    *,
    bootstrap: str,
    bundle: Path | str,
    topics: list[str] | str,
    labels: str,
    dlq: str,
    group: str,
    fast: bool = True,
    **sections: Any,
) -> dict[str, Any]:
    """A complete ``sentiwire serve`` config as a dict (write it with :func:`write_config`).

    Loopback HTTP on a free port and JSON logs; with ``fast`` (tests) also :data:`TEST_DEFAULTS`,
    without it (the demo, the bench) serve's own defaults. Each keyword section is merged over
    those (dicts shallowly, other values replaced).
    """
    cfg: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap},
        "input": {"topics": [topics] if isinstance(topics, str) else list(topics), "group_id": group},
        "output": {"labels_topic": labels, "dead_letter_topic": dlq},
        "model": {"path": str(bundle)},
        "http": {"host": "127.0.0.1", "port": 0},
        "logging": {"level": "INFO", "format": "json"},
    }
    if fast:
        cfg = merge_sections(cfg, TEST_DEFAULTS)
    return merge_sections(cfg, sections)


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    """The config as the YAML file ``sentiwire serve --config`` reads; returns ``path``."""
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path


def merge_sections(cfg: Mapping[str, Any], sections: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` with each section of ``sections`` merged into it (dicts shallowly, others replaced).

    Every section of the result is a new dict: a caller that edits the config it got back never
    edits ``cfg``, ``sections`` or :data:`TEST_DEFAULTS`.
    """
    out = {name: dict(value) if isinstance(value, dict) else value for name, value in cfg.items()}
    for name, value in sections.items():
        if isinstance(value, dict):
            out[name] = {**out[name], **value} if isinstance(out.get(name), dict) else dict(value)
        else:
            out[name] = value
    return out


@dataclass
class FakeRecord:
    """The fields of an aiokafka ``ConsumerRecord`` the daemon reads."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class ConsumerStub:
    """Records commits and pauses; subclasses (or ``batches``) serve records from ``getmany``."""

    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    batches: list[dict[TopicPartition, list[Any]]] = field(default_factory=list)
    paused: set[TopicPartition] = field(default_factory=set)

    async def getmany(self, *tps: TopicPartition, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)

    def highwater(self, tp: TopicPartition) -> int | None:
        return None


@dataclass
class FakeProducer:
    """Keeps (topic, value) of every send; each send is acknowledged at once.

    With ``transactional`` set it also records begin/commit/abort and the offsets sent to
    each transaction, as the transactional sink uses them.
    """

    sent: list[tuple[str, bytes | None]] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    headers: list[list[tuple[str, bytes]]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    txn_offsets: list[dict[TopicPartition, int]] = field(default_factory=list)
    fail_commit: BaseException | None = None

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: Any = None
    ) -> Any:
        self.sent.append((topic, value))
        self.keys.append(key)
        self.headers.append(list(headers or []))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def start(self) -> None:
        self.events.append("start")

    async def stop(self) -> None:
        self.events.append("stop")

    async def begin_transaction(self) -> None:
        self.events.append("begin")

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        self.events.append(f"offsets:{group_id}")
        self.txn_offsets.append(dict(offsets))

    async def commit_transaction(self) -> None:
        if self.fail_commit is not None:
            raise self.fail_commit
        self.events.append("commit")

    async def abort_transaction(self) -> None:
        self.events.append("abort")
