"""``make demo``: a local Kafka broker, the daemon with alerts on, real messages at a steady
rate with a scripted negative burst about one ticker, and labels + alerts live on screen.

Ctrl-C (or ``--duration``) stops everything in order: the replay, the daemon (SIGTERM: it
drains and commits), the broker. The exit code says whether the pipeline really worked:
non-zero if the daemon failed, nothing was labeled, or ``--expect-alert`` saw no alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson
import yaml

from sentiwire.devbroker import REPO_ROOT, BrokerHandle, create_topics_sync, free_port, start_broker
from sentiwire.replay import Burst, ReplayStats, Stream, burst_items, load_items, replay

NEWS, LABELS, DEAD = "news", "labels", "labels.dead-letter"
ALERTS, ALERT_STATE = "sentiwire.alerts", "sentiwire.alerts.state"


@dataclass(frozen=True)
class Topics:
    """The demo's topic names; a prefix keeps a demo on a shared broker apart from everything else."""

    prefix: str = ""

    @property
    def news(self) -> str:
        return self.prefix + NEWS

    @property
    def labels(self) -> str:
        return self.prefix + LABELS

    @property
    def dead(self) -> str:
        return self.prefix + DEAD

    @property
    def alerts(self) -> str:
        return self.prefix + ALERTS

    @property
    def alert_state(self) -> str:
        return self.prefix + ALERT_STATE


@dataclass
class DemoOptions:
    model: Path
    data_dir: Path
    variant: str = "int8"
    rate: float = 20.0
    source: str = "mixed"
    duration_s: float | None = None
    burst_ticker: str | None = "TSLA"
    burst_at_s: float = 45.0
    burst_duration_s: float = 40.0
    burst_share: float = 0.7
    bootstrap: str | None = None
    http_port: int | None = None
    workdir: Path = REPO_ROOT / ".kafka" / "demo"
    max_lines_per_s: float = 15.0
    expect_alert: bool = False
    topic_prefix: str = ""


def demo_config(
    bootstrap: str, model: Path, variant: str, http_port: int, topics: Topics = Topics()
) -> dict[str, Any]:
    """The daemon's YAML config: the ``serve`` defaults plus alert windows sized for minutes, not hours."""
    return {
        "kafka": {"bootstrap_servers": bootstrap},
        "input": {
            "topics": [topics.news],
            "group_id": f"{topics.prefix}sentiwire-demo",
            "auto_offset_reset": "earliest",
        },
        "output": {"labels_topic": topics.labels, "dead_letter_topic": topics.dead, "include_text": True},
        "model": {"path": str(model), "variant": variant, "reload_interval_s": 10},
        "batching": {"max_batch_size": 32, "max_wait_ms": 20},
        "http": {"host": "127.0.0.1", "port": http_port},
        "logging": {"level": "INFO", "format": "json"},
        "shutdown_timeout_s": 20,
        "alerts": {
            "enabled": True,
            "alerts_topic": topics.alerts,
            "state_topic": topics.alert_state,
            # A demo lasts minutes: 20 s windows against a 5-minute baseline, 5 s buckets.
            "short_window_s": 20,
            "baseline_window_s": 300,
            "bucket_s": 5,
            "allowed_lateness_s": 5,
            "min_count": 12,
            "cooldown_s": 60,
            "idle_advance_s": 10,
        },
    }


# --------------------------------------------------------------------------- rendering
RESET, DIM, BOLD, RED, GREEN, YELLOW, CYAN = (
    "\033[0m",
    "\033[2m",
    "\033[1m",
    "\033[31m",
    "\033[32m",
    "\033[33m",
    "\033[36m",
)
SENTIMENT_COLOR = {"negative": RED, "positive": GREEN, "neutral": DIM}


def format_label(rec: Mapping[str, Any], *, width: int = 120, color: bool = False) -> str:
    """``12:03:01  negative 0.93  Earnings        [TSLA]  Tesla cuts guidance ...`` on one line."""

    def paint(text: str, code: str) -> str:
        return f"{code}{text}{RESET}" if color else text

    labels = rec.get("labels") or {}
    sent = labels.get("sentiment") or {}
    topic = labels.get("topic") or {}
    ts = (rec.get("source") or {}).get("timestamp")
    when = (
        datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%H:%M:%S")
        if isinstance(ts, int | float)
        else "--:--:--"
    )
    s_label = str(sent.get("label", "?"))
    s_part = paint(f"{s_label:<8} {float(sent.get('score', 0.0)):.2f}", SENTIMENT_COLOR.get(s_label, ""))
    t_part = f"{str(topic.get('label', '-'))[:22]:<22}"
    tickers = rec.get("tickers") or []
    tick = ("[" + ",".join(str(t) for t in tickers[:3]) + "] ") if tickers else ""
    text = " ".join(str(rec.get("text", "")).split())
    head = f"{when}  {s_part}  {t_part}  {tick}"
    visible = len(head) - (len(s_part) - len(f"{s_label:<8} 0.00")) if color else len(head)
    room = max(20, width - visible)
    if len(text) > room:
        text = text[: room - 1] + "…"
    return head + text


def format_alert_line(doc: Mapping[str, Any], *, color: bool = False) -> str:
    try:
        from streamer.alerting.console import format_alert

        line = format_alert(doc)
    except ImportError:  # alerting not installed: still show the essentials
        line = f"{str(doc.get('state', '?')).upper()}  {doc.get('scope_kind')} {doc.get('scope')}"
    marker = "ALERT " + line
    if not color:
        return marker
    return f"{BOLD}{RED if doc.get('state') == 'firing' else YELLOW}{marker}{RESET}"


@dataclass
class Counts:
    sent: int = 0
    labeled: int = 0
    shown: int = 0
    negative: int = 0
    alerts_firing: int = 0
    alerts_resolved: int = 0
    alert_scopes: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)


class Screen:
    """Prints label lines at a bounded rate (all alerts always), plus status lines."""

    def __init__(self, out: TextIO, max_lines_per_s: float) -> None:
        self.out = out
        self.color = out.isatty() and os.environ.get("NO_COLOR") is None
        self.width = shutil.get_terminal_size((120, 40)).columns
        self.min_gap = 1.0 / max_lines_per_s if max_lines_per_s > 0 else 0.0
        self._last = 0.0

    def label(self, rec: Mapping[str, Any]) -> bool:
        now = time.monotonic()
        if now - self._last < self.min_gap:
            return False
        self._last = now
        print(format_label(rec, width=self.width, color=self.color), file=self.out, flush=True)
        return True

    def alert(self, doc: Mapping[str, Any]) -> None:
        print(format_alert_line(doc, color=self.color), file=self.out, flush=True)

    def status(self, text: str) -> None:
        print(f"{CYAN}{text}{RESET}" if self.color else text, file=self.out, flush=True)


# --------------------------------------------------------------------------- the run
async def _consume(bootstrap: str, topic: str, handle: Callable[[Any], None], stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest")
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                for r in recs:
                    handle(r)
    finally:
        await consumer.stop()


async def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with code {proc.returncode} during start-up")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the daemon was not ready after {timeout_s:.0f} s")


async def _metrics_summary(port: int) -> str:
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        body = await resp.text()
    values: dict[str, float] = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            values[s.name] = values.get(s.name, 0.0) + s.value
    e2e_n = values.get("sentiwire_end_to_end_seconds_count", 0.0)
    e2e = values.get("sentiwire_end_to_end_seconds_sum", 0.0) / e2e_n * 1000 if e2e_n else 0.0
    return (
        f"/metrics: consumed {values.get('sentiwire_messages_consumed_total', 0):.0f}, "
        f"published {values.get('sentiwire_messages_published_total', 0):.0f}, "
        f"dead-lettered {values.get('sentiwire_messages_dead_lettered_total', 0):.0f}, "
        f"batches {values.get('sentiwire_batches_total', 0):.0f}, mean e2e {e2e:.0f} ms, "
        f"spikes fired {values.get('sentiwire_spikes_total', 0):.0f}"
    )


def start_daemon(opts: DemoOptions, bootstrap: str, screen: Screen) -> tuple[subprocess.Popen[bytes], int]:
    """Topics, the daemon's config file, and ``sentiwire serve`` as a child process."""
    t = Topics(opts.topic_prefix)
    create_topics_sync(bootstrap, {t.news: 3, t.labels: 3, t.dead: 1}, exist_ok=True)
    port = opts.http_port or free_port()
    opts.workdir.mkdir(parents=True, exist_ok=True)
    config_path = opts.workdir / "sentiwire-demo.yaml"
    config_path.write_text(
        yaml.safe_dump(demo_config(bootstrap, opts.model, opts.variant, port, t), sort_keys=False)
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
        await _wait_ready(port, daemon, timeout_s=180)
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
        tasks.append(asyncio.create_task(_consume(bootstrap, t.labels, on_label, stop)))
        tasks.append(asyncio.create_task(_consume_when_exists(bootstrap, t.alerts, on_alert, stop)))
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
                    screen.status(await _metrics_summary(port))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        replay_task.cancel()
        counts.sent = sent.sent
        await asyncio.sleep(2.0)  # the last labels of what was sent
        with contextlib.suppress(Exception):
            screen.status(await _metrics_summary(port))
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        code = await asyncio.to_thread(_terminate, daemon, 30.0)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return counts, code


async def _consume_when_exists(
    bootstrap: str, topic: str, handle: Callable[[Any], None], stop: asyncio.Event
) -> None:
    """The alert engine creates its topics itself; wait for them rather than fail."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        while not stop.is_set() and topic not in await admin.list_topics():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        await admin.close()
    if not stop.is_set():
        await _consume(bootstrap, topic, handle, stop)


def _terminate(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def main(opts: DemoOptions) -> int:
    """Run the whole demo; 0 only if the daemon labeled messages and stopped cleanly."""
    screen = Screen(sys.stdout, opts.max_lines_per_s)
    if not (opts.model / "bundle.json").exists():
        print(f"error: no model bundle at {opts.model} (make demo-model builds one)", file=sys.stderr)
        return 2
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
            _terminate(daemon, 40.0)
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
        return 1
    if opts.expect_alert and counts.alerts_firing == 0:
        print("error: --expect-alert: no alert fired", file=sys.stderr)
        return 1
    return 0
