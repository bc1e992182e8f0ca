"""Training sub-commands of ``sentiwire`` (owner: training). No heavy imports here."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the training commands to the top-level app."""
    from training.retrain import register as register_retrain  # `sentiwire retrain` (owner: deploy)

    register_retrain(app)
