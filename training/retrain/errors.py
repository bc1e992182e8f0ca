"""Retrain errors: their messages name the path, head or option at fault."""

from __future__ import annotations

from streamer.errors import UsageError


class RetrainError(UsageError):
    """Retraining cannot proceed as asked (exit 2): fix the path, head, data or option named."""
