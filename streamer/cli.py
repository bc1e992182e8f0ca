"""Serving sub-commands of ``sentiwire``: ``serve`` and (registered from alerting) ``alert``.

Imports here stay light: the daemon modules are imported inside the command so that
``sentiwire --help`` and the training commands do not load onnxruntime or aiokafka.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer


def serve(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="YAML config file; SENTIWIRE_* env vars override it.",
            envvar="SENTIWIRE_CONFIG",
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Validate the configuration, print it (secrets hidden), exit.")
    ] = False,
) -> None:
    """Label messages from Kafka with every head of the model bundle; publish labels back to Kafka."""
    from streamer.app import serve as run_daemon
    from streamer.logging import configure_logging
    from streamer.startup import load_settings_or_exit

    settings = load_settings_or_exit(config)
    if check:
        typer.echo(settings.model_dump_json(indent=2))
        return
    configure_logging(settings.logging.level, settings.logging.format)
    code = asyncio.run(run_daemon(settings))
    sys.stdout.flush()
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Attach the serving commands to the top-level app."""
    app.command("serve")(serve)
    __import__("streamer.alerting.cli", fromlist=["register"]).register(app)  # sentiwire alert
