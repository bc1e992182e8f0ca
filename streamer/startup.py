"""Start-up steps every long-running command shares (``sentiwire serve``, ``sentiwire alert``).

Imported by both command modules, so neither has to import the other.
"""

from __future__ import annotations

from pathlib import Path

import typer

from streamer.config import ConfigError, Settings, load_settings
from streamer.errors import ExitCode


def load_settings_or_exit(config: Path | None) -> Settings:
    """Validate the config once, at start-up; a bad field is a usage error (exit 2), not a traceback."""
    try:
        return load_settings(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(ExitCode.USAGE) from None
