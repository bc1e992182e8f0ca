"""Stand-ins for the aiokafka clients in the pipeline's broker-less tests (pure logic only:
everything that touches Kafka itself is tested against the real broker)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition


@dataclass
class ConsumerStub:
    """Records commits; subclasses serve records from ``getmany``."""

    commits: list[dict[TopicPartition, int]] = field(default_factory=list)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def pause(self, *tps: TopicPartition) -> None: ...
    def resume(self, *tps: TopicPartition) -> None: ...
    def highwater(self, tp: TopicPartition) -> int | None:
        return None


@dataclass
class FakeProducer:
    """Keeps (topic, value) of every send; each send is acknowledged at once."""

    sent: list[tuple[str, bytes | None]] = field(default_factory=list)

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: Any = None
    ) -> Any:
        self.sent.append((topic, value))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut
