"""``sentiwire dev``: a local Kafka broker and a replay of real texts, for development and demos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Development tools: a local Kafka broker, a replay of real messages.", no_args_is_help=True
)


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="PLAINTEXT listener port on 127.0.0.1")] = 9092,
    data_dir: Annotated[Path, typer.Option(help="config, KRaft data and logs; kept across restarts")] = Path(
        ".kafka/data"
    ),
    heap: Annotated[str, typer.Option(help="JVM max heap (-Xmx)")] = "512m",
) -> None:
    """Run a single-node Apache Kafka 4.x broker (KRaft) in the foreground until Ctrl-C.

    The first run fetches the jars from Maven Central into .kafka/libs (cached).
    """
    from sentiwire.devbroker import BrokerError, main_foreground

    try:
        code = main_foreground(port=port, data_dir=data_dir, heap=heap)
    except BrokerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    raise typer.Exit(code)
