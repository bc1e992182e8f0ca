"""Consumer-group rebalances, the aiokafka way (ConsumerRebalanceListener).

aiokafka awaits ``on_partitions_revoked`` before the group re-joins, while this member's
generation is still valid. That is the one moment a commit for the revoked partitions can
succeed, so the handler: (1) stops taking their records, (2) discards their queued records
no batch has started (the next owner re-reads them), (3) waits, bounded, for the batches
already holding their records to be acknowledged, (4) commits their watermarks once.
Commits are never retried after a CommitFailedError (the CommitFailedError loops of
aio-libs/aiokafka#1054 and #933 come from retrying commits for a generation that is gone).
"""

from __future__ import annotations

from typing import Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition


class RebalanceTarget(Protocol):
    async def on_revoked(self, revoked: list[TopicPartition]) -> None: ...
    async def on_assigned(self, assigned: list[TopicPartition]) -> None: ...


class RebalanceHandler(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, target: RebalanceTarget) -> None:
        self._target = target

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._target.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._target.on_assigned(list(assigned))
