"""Runs ``make demo`` in order: broker, topics, daemon, replay and the live view, then the stop.

Ctrl-C (or ``--duration``) stops everything in order: the replay, the daemon (SIGTERM: it
drains and commits), the broker. The exit code says whether the pipeline really worked:
non-zero if the daemon failed, nothing was labeled, or ``--expect-alert`` saw no alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from sentiwire.demo.config import DemoOptions, Topics, demo_config, demo_variant
from sentiwire.demo.feeds import metrics_summary, tail, tail_when_exists, wait_ready
from sentiwire.demo.screen import Screen
from sentiwire.devbroker import BrokerHandle, create_topics_sync, start_broker
from sentiwire.paths import REPO_ROOT
from sentiwire.procs import free_port, terminate
from sentiwire.replay import Burst, ReplayStats, Stream, burst_items, load_items, replay
from streamer.errors import ExitCode
from streamer.testing import write_config


@dataclass
class Counts:
    """What the demo saw, for the summary line and the exit code."""

    sent: int = 0
    labeled: int = 0
    shown: int = 0
    negative: int = 0
    alerts_firing: int = 0
    alerts_resolved: int = 0
    alert_scopes: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)


def start_daemon(opts: DemoOptions, bootstrap: str, screen: Screen) -> tuple[subprocess.Popen[bytes], int]:
    """Topics, the daemon's config file, and ``sentiwire serve`` as a child process."""
    t = Topics(opts.topic_prefix)
    create_topics_sync(bootstrap, {t.news: 3, t.labels: 3, t.dead: 1}, exist_ok=True)
    port = opts.http_port or free_port()
    opts.workdir.mkdir(parents=True, exist_ok=True)
    variant, why = demo_variant(opts.model, opts.variant)
    screen.status(f"serving {opts.model} as {why}")
    config_path = write_config(
        opts.workdir / "sentiwire-demo.yaml", demo_config(bootstrap, opts.model, variant, port, t)
    )
    log_path = opts.workdir / "daemon.log"
    screen.status(f"starting: sentiwire serve --config {config_path}  (logs: {log_path})")
    with open(log_path, "ab") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "sentiwire", "serve", "--config", str(config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the daemon with SIGTERM in order
        )
    return daemon, port


async def run(
    opts: DemoOptions, bootstrap: str, screen: Screen, daemon: subprocess.Popen[bytes], port: int
) -> tuple[Counts, int | None]:
    """Replay and the live view until ``duration`` or Ctrl-C; returns counts + the daemon's exit code."""
    log_path = opts.workdir / "daemon.log"
    counts = Counts()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[Any]] = []
    try:
        await wait_ready(port, daemon, timeout_s=180)
        screen.status(f"daemon ready: metrics at http://127.0.0.1:{port}/metrics; Ctrl-C stops the demo")

        def on_label(r: Any) -> None:
            rec = orjson.loads(r.value)
            counts.labeled += 1
            sentiment = (rec.get("labels") or {}).get("sentiment") or {}
            counts.negative += sentiment.get("label") == "negative"
            src_ts = (rec.get("source") or {}).get("timestamp")
            if isinstance(src_ts, int | float):
                counts.latencies_ms.append(r.timestamp - src_ts)
            counts.shown += screen.label(rec)

        def on_alert(r: Any) -> None:
            doc = orjson.loads(r.value)
            if doc.get("state") == "firing":
                counts.alerts_firing += 1
                counts.alert_scopes.append(f"{doc.get('scope_kind')}:{doc.get('scope')}")
            elif doc.get("state") == "resolved":
                counts.alerts_resolved += 1
            screen.alert(doc)

        t = Topics(opts.topic_prefix)
        tasks.append(asyncio.create_task(tail(bootstrap, t.labels, on_label, stop)))
        tasks.append(asyncio.create_task(tail_when_exists(bootstrap, t.alerts, on_alert, stop)))
        await asyncio.sleep(1.0)  # let the display consumers take their "latest" positions

        items = load_items(opts.data_dir, opts.source)
        burst = pool = None
        if opts.burst_ticker:
            burst = Burst(opts.burst_ticker, opts.burst_at_s, opts.burst_duration_s, opts.burst_share)
            pool = burst_items(opts.data_dir, opts.burst_ticker)
            screen.status(
                f"replaying {opts.source} texts at {opts.rate:g} msg/s; a negative burst about ${burst.ticker} "
                f"from {burst.at_s:g} s for {burst.duration_s:g} s"
            )
        stream = Stream(items, burst=burst, burst_pool=pool or ())
        sent = ReplayStats()
        replay_task = asyncio.create_task(
            replay(bootstrap=bootstrap, topic=t.news, stream=stream, rate=opts.rate, quiet=True, stats=sent)
        )
        tasks.append(replay_task)
        started = time.monotonic()
        next_status = started + 15
        while not stop.is_set():
            if daemon.poll() is not None:
                screen.status(f"the daemon exited with code {daemon.returncode}; see {log_path}")
                break
            if replay_task.done():
                replay_task.result()  # raise a replay failure here
                break
            if opts.duration_s is not None and time.monotonic() - started >= opts.duration_s:
                break
            if time.monotonic() >= next_status:
                next_status += 15
                with contextlib.suppress(Exception):
                    screen.status(await metrics_summary(port))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        replay_task.cancel()
        counts.sent = sent.sent
        await asyncio.sleep(2.0)  # the last labels of what was sent
        with contextlib.suppress(Exception):
            screen.status(await metrics_summary(port))
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        code = await asyncio.to_thread(terminate, daemon, 30.0)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return counts, code


def main(opts: DemoOptions) -> int:
    """Run the whole demo; 0 only if the daemon labeled messages and stopped cleanly."""
    screen = Screen(sys.stdout, opts.max_lines_per_s)
    if not (opts.model / "bundle.json").exists():
        print(f"error: no model bundle at {opts.model} (make demo-model builds one)", file=sys.stderr)
        return ExitCode.USAGE
    broker: BrokerHandle | None = None
    if opts.bootstrap is None:
        screen.status("starting a local Kafka broker (first run fetches the jars from Maven Central)")
        broker = start_broker(workdir=opts.workdir / "kafka-run")
        screen.status(f"Kafka {broker.version} at {broker.bootstrap} (ready in {broker.started_in_s:.1f} s)")
    bootstrap = opts.bootstrap or (broker.bootstrap if broker else "")
    try:
        daemon, port = start_daemon(opts, bootstrap, screen)
        try:
            counts, code = asyncio.run(run(opts, bootstrap, screen, daemon, port))
        finally:
            terminate(daemon, 40.0)
    finally:
        if broker is not None:
            broker.stop()
            shutil.rmtree(opts.workdir / "kafka-run", ignore_errors=True)
    lat = sorted(counts.latencies_ms)
    p50 = f"{lat[len(lat) // 2]:.0f} ms" if lat else "-"
    screen.status(
        f"demo over: {counts.sent} sent, {counts.labeled} labeled ({counts.negative} negative, {counts.shown} shown), "
        f"e2e p50 {p50}; alerts fired {counts.alerts_firing} {sorted(set(counts.alert_scopes))}, "
        f"resolved {counts.alerts_resolved}; daemon exit code {code}"
    )
    if code != 0 or counts.labeled == 0:
        return ExitCode.FAILED
    if opts.expect_alert and counts.alerts_firing == 0:
        print("error: --expect-alert: no alert fired", file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK
