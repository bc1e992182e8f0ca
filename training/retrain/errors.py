"""Retrain errors: their messages name the path, head or option at fault."""

from __future__ import annotations

from typing import Any

from streamer.errors import ExitCode, SentiwireError, UsageError


class RetrainError(UsageError):
    """Retraining cannot proceed as asked (exit 2): fix the path, head, data or option named."""


class CandidateFailed(SentiwireError):
    """The candidate failed (training, export or scoring); ``record`` is what history.jsonl got.

    Exit 1, or 2 when the cause was bad input (e.g. a ``--set`` value the trainer rejects).
    """

    def __init__(self, message: str, record: dict[str, Any], exit_code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.record = record
        self.exit_code = exit_code
