"""Serving sub-commands of ``sentiwire`` (owner: streamer)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the serving commands to the top-level app."""
