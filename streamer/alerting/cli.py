"""``sentiwire alert``: the alert engine as its own process (single replica).

Light at import time (typer and the leaf ``streamer.errors``): ``streamer.cli.register`` imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from streamer.errors import ExitCode

if TYPE_CHECKING:
    from streamer.config import Settings


def start_failure_code(exc: BaseException) -> ExitCode:
    """Kafka not answering is UNAVAILABLE (retry later); a bad topic or setting is USAGE."""
    from aiokafka.errors import KafkaError

    from streamer.errors import exit_code_for

    if isinstance(exc, KafkaError | OSError | TimeoutError):
        return ExitCode.UNAVAILABLE
    return exit_code_for(exc)


async def run_alerts(settings: Settings) -> int:
    """Start the engine and /metrics /healthz /readyz; stop on SIGTERM/SIGINT. Returns the exit code."""
    import structlog
    from prometheus_client import REGISTRY

    from streamer.alerting.engine import AlertEngine
    from streamer.errors import SentiwireError
    from streamer.http import HttpServer

    log = structlog.get_logger("sentiwire.alerts")
    # Asked for explicitly: run even if the daemon's own in-process engine is off.
    alerts = settings.alerts.model_copy(update={"enabled": True})
    engine = AlertEngine(
        alerts,
        settings.kafka,
        settings.output.labels_topic,
        serving_group=settings.input.group_id,
        input_topics=settings.input.topics,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http: HttpServer | None = None
    if settings.http.enabled:
        http = HttpServer(
            REGISTRY,
            lambda: (engine.failure is None, "ok" if engine.failure is None else repr(engine.failure)),
            lambda: (engine.ready, "ready" if engine.ready else "rebuilding alert state"),
            settings.http.host,
            settings.http.port,
        )
        port = await http.start()
        log.info("http listening", host=settings.http.host, port=port)
    try:
        await engine.start()
    except Exception as exc:
        log.error(
            "alert engine cannot start",
            error=str(exc),
            bootstrap_servers=settings.kafka.bootstrap_servers,
            exc_info=not isinstance(exc, SentiwireError),
        )
        if http is not None:
            await http.stop()
        return start_failure_code(exc)
    failed = asyncio.create_task(engine.wait_failed())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in (failed, stopped):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await engine.stop()
    if http is not None:
        await http.stop()
    if engine.failure is not None:
        log.error("alert engine stopped", error=str(engine.failure))
        return ExitCode.FAILED
    log.info("alert engine stopped")
    return ExitCode.OK


def alert(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="The daemon's YAML config (kafka, output.labels_topic, alerts, http).",
            envvar="SENTIWIRE_CONFIG",
        ),
    ] = None,
) -> None:
    """Watch the labels topic for negative-sentiment spikes; publish alerts to the alerts topic."""
    from streamer.logging import configure_logging
    from streamer.startup import load_settings_or_exit

    settings = load_settings_or_exit(config)
    configure_logging(settings.logging.level, settings.logging.format)
    code = asyncio.run(run_alerts(settings))
    sys.stdout.flush()
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("alert")(alert)
