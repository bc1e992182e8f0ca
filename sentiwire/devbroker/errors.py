"""The dev broker's one error, so callers catch one class whatever step failed."""

from __future__ import annotations

from streamer.errors import UsageError


class BrokerError(UsageError):
    """The local broker could not be fetched, formatted or started, or a request to it failed.

    The message says which step. A usage error (exit 2): a missing tool, a taken port or a
    bad request is fixed on this side and run again.
    """
