"""Negative-sentiment spike alerts: pure detector, state, metrics and the Kafka engine.

``AlertEngine`` is imported lazily: ``streamer.config`` imports ``streamer.alerting.config``,
and the engine imports ``streamer.config``; an eager import here would be circular.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamer.alerting.engine import AlertEngine

__all__ = ["AlertEngine"]


def __getattr__(name: str) -> Any:
    if name == "AlertEngine":
        from streamer.alerting.engine import AlertEngine

        return AlertEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
