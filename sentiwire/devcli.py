"""``sentiwire dev``: a local Kafka broker and a replay of real texts, for development and demos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sentiwire.paths import default_data_dir
from streamer.enums import Variant
from streamer.errors import ExitCode

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
        raise typer.Exit(exc.exit_code) from exc
    raise typer.Exit(code)


@app.command()
def replay(
    bootstrap: Annotated[str, typer.Option(help="Kafka bootstrap servers")] = "127.0.0.1:9092",
    topic: Annotated[str, typer.Option(help="topic to produce to")] = "news",
    rate: Annotated[float, typer.Option(help="messages per second; 0 = as fast as possible")] = 50.0,
    limit: Annotated[int | None, typer.Option(help="stop after this many messages")] = None,
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    source: Annotated[
        str,
        typer.Option(
            help="phrasebank | tweets | topic | bbc | reviews | mixed (headlines, tweets, articles)"
        ),
    ] = "mixed",
    data_dir: Annotated[
        Path | None, typer.Option(help="shared data folder [default: ../shared/data]")
    ] = None,
    key: Annotated[str, typer.Option(help="record key: id | ticker (first $TICKER, else id)")] = "id",
    loop: Annotated[bool, typer.Option(help="start over when the data runs out")] = True,
    seed: Annotated[int, typer.Option(help="shuffle seed")] = 0,
    create_partitions: Annotated[
        int, typer.Option(help="create the topic with this many partitions if it does not exist (0 = don't)")
    ] = 0,
    burst_ticker: Annotated[
        str | None, typer.Option(help="ticker of a scripted negative burst, e.g. TSLA")
    ] = None,
    burst_at: Annotated[float, typer.Option(help="burst starts this many seconds after the start")] = 60.0,
    burst_duration: Annotated[float, typer.Option(help="burst length in seconds")] = 30.0,
    burst_share: Annotated[
        float, typer.Option(help="share of messages that are burst texts while it lasts")
    ] = 0.6,
) -> None:
    """Stream real texts from the shared data as JSON messages {id, text, ts, tickers, source}."""
    import asyncio

    from sentiwire import replay as rp
    from sentiwire.devbroker import create_topics

    if key not in ("id", "ticker"):
        raise typer.BadParameter(f"must be id or ticker, got {key!r}", param_hint="--key")
    if not 0 < burst_share <= 1:
        raise typer.BadParameter(f"must be in (0, 1], got {burst_share}", param_hint="--burst-share")
    folder = data_dir or default_data_dir()
    try:
        items = rp.load_items(folder, source, seed=seed)
        burst = None
        pool: list[rp.Item] = []
        if burst_ticker:
            burst = rp.Burst(burst_ticker.lstrip("$").upper(), burst_at, burst_duration, burst_share)
            pool = rp.burst_items(folder, burst.ticker, seed=seed)
    except rp.ReplayError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from exc
    stream = rp.Stream(items, loop=loop, burst=burst, burst_pool=pool, seed=seed)

    async def run() -> rp.ReplayStats:
        if create_partitions > 0:
            await create_topics(bootstrap, {topic: create_partitions}, exist_ok=True)
        return await rp.replay(
            bootstrap=bootstrap,
            topic=topic,
            stream=stream,
            rate=rate,
            limit=limit,
            duration_s=duration,
            key_by="ticker" if key == "ticker" else "id",
        )

    try:
        stats = asyncio.run(run())
    except KeyboardInterrupt:
        typer.echo("replay: interrupted", err=True)
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(stats.by_kind.items()))
    typer.echo(
        f"replay: sent {stats.sent} messages ({kinds}) to {topic} in {stats.elapsed_s:.1f} s "
        f"= {stats.rate:.0f} msg/s",
        err=True,
    )


@app.command()
def demo(
    model: Annotated[Path, typer.Option(help="model bundle to serve")] = Path("models/sentiwire-minilm"),
    variant: Annotated[
        Variant | None,
        typer.Option(
            help="ONNX graph to serve [default: int8, fp32 where the bundle's int8 failed its gate]"
        ),
    ] = None,
    rate: Annotated[float, typer.Option(help="messages per second")] = 20.0,
    source: Annotated[
        str, typer.Option(help="phrasebank | tweets | topic | bbc | reviews | mixed")
    ] = "mixed",
    duration: Annotated[
        float | None,
        typer.Option(envvar="DEMO_DURATION", help="stop after this many seconds (default: Ctrl-C)"),
    ] = None,
    burst_ticker: Annotated[
        str, typer.Option(help="ticker of the scripted negative burst ('' = none)")
    ] = "TSLA",
    burst_at: Annotated[float, typer.Option(help="seconds after the start")] = 45.0,
    burst_duration: Annotated[float, typer.Option(help="seconds")] = 40.0,
    bootstrap: Annotated[
        str | None, typer.Option(help="use this running broker instead of starting one")
    ] = None,
    http_port: Annotated[
        int | None, typer.Option(help="daemon's /metrics port (default: a free one)")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="shared data folder [default: ../shared/data]")
    ] = None,
    expect_alert: Annotated[bool, typer.Option(help="exit 1 unless at least one alert fired")] = False,
    topic_prefix: Annotated[str, typer.Option(help="prefix for every demo topic (shared brokers)")] = "",
) -> None:
    """Broker + daemon (alerts on) + replay of real messages with a negative burst; labels and alerts live."""
    from sentiwire.demo.config import DemoOptions
    from sentiwire.demo.runner import main

    opts = DemoOptions(
        model=model.resolve(),
        data_dir=(data_dir or default_data_dir()).resolve(),
        variant=variant,
        rate=rate,
        source=source,
        duration_s=duration,
        burst_ticker=burst_ticker.lstrip("$").upper() or None,
        burst_at_s=burst_at,
        burst_duration_s=burst_duration,
        bootstrap=bootstrap,
        http_port=http_port,
        expect_alert=expect_alert,
        topic_prefix=topic_prefix,
    )
    raise typer.Exit(main(opts))
