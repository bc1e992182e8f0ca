"""Exceptions of the model package (a leaf: imports only the project's root)."""

from __future__ import annotations

from streamer.errors import UsageError


class InferenceError(UsageError):
    """The model cannot run as asked (missing execution provider, bad bundle outputs, tokenizer)."""
