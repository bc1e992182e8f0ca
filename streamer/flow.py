"""The run state every stage of the data path reads, and the signal that wakes its waiters.

Fetcher, scheduler, sinks and the rebalance handler share one :class:`Flow`: which phase the
pipeline is in (draining, rebalancing, closed, failed) and :meth:`Flow.notify`, called when
records are acknowledged or discarded, so waiting for "in-flight records are done" is an
event, never a polling loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from streamer.errors import SentiwireError


class PipelineError(SentiwireError):
    """A failure the daemon cannot ride out (producer fenced, broker rejected labels, model dead)."""


class Flow:
    """Phase flags of the pipeline, plus a wake-up for conditions on in-flight records."""

    def __init__(self) -> None:
        self.draining = False  # stop() began: fetch nothing more, finish what is fetched
        self.rebalancing = False  # partitions revoked, the new assignment not in yet
        self.closed = False  # stages exit their loops
        self.fatal: BaseException | None = None
        self._changed = asyncio.Event()
        self._failed = asyncio.Event()

    @property
    def flushing(self) -> bool:
        """Close open batches and transactions now instead of waiting for their deadlines."""
        return self.draining or self.rebalancing

    def notify(self) -> None:
        """Something waiters may be waiting for changed (acks, discards, phase, failure)."""
        self._changed.set()

    def fail(self, exc: BaseException) -> None:
        if self.fatal is None:
            self.fatal = exc
        self._failed.set()
        self.notify()

    async def wait_failed(self) -> None:
        await self._failed.wait()

    async def wait_for(self, cond: Callable[[], bool], deadline: float) -> bool:
        """Wait until ``cond()`` holds, up to ``deadline`` (monotonic); whether it holds.

        ``cond`` is re-checked on every :meth:`notify`; stages notify whenever what it reads moves.
        """
        while not cond():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                return cond()
        return True
