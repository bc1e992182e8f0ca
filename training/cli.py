"""Training sub-commands of ``sentiwire`` (owner: training). No heavy imports here."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the training commands to the top-level app."""
