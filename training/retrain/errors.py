"""The retrain error: its message names the path, head or option at fault."""

from __future__ import annotations


class RetrainError(Exception):
    """Retraining cannot proceed; the message names the path, head or option at fault."""
