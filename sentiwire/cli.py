"""The ``sentiwire`` command.

Each side registers its own sub-commands. ``training.cli`` imports nothing heavy at
module level (torch and transformers are imported inside the command bodies), so
``sentiwire serve`` never loads them and the serving image can omit the [train] extra.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="sentiwire",
    help="Real-time sentiment and topic labels for Kafka streams.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from sentiwire import devcli
    from streamer import cli as streamer_cli
    from training import cli as training_cli

    streamer_cli.register(app)
    training_cli.register(app)
    app.add_typer(devcli.app, name="dev")


def main() -> None:
    _register()
    app()
