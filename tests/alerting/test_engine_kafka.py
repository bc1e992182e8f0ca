"""The alert engine on the real broker, and a real Prometheus firing NegativeSentimentSpike.

Labeled records (real sentences, gold labels standing in for the model) are written straight
to a labels topic; the full daemon is not needed to decide what the engine does with them.
Windows are shrunk to seconds so incidents fire and resolve within the test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from sentiwire.procs import free_port, terminate
from streamer.alerting.engine import AlertEngine, AlertEngineError
from streamer.alerting.metrics import AlertMetrics
from streamer.config import AlertsConfig, KafkaConfig
from streamer.kafka.clients import make_reader
from streamer.kafka.reader import read_to_end
from tests.alerting.scenario import StreamBuilder, load_corpus
from tests.fixtures.prometheus import PrometheusServer

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "sentiwire.rules.yml"

FAST = {
    "enabled": True,
    "short_window_s": 20.0,
    "baseline_window_s": 900.0,
    "bucket_s": 1.0,
    "allowed_lateness_s": 1.0,
    "min_count": 15.0,
    "cooldown_s": 120.0,
    "idle_advance_s": 1.0,
}


def fast_config(**extra: Any) -> AlertsConfig:
    suffix = uuid.uuid4().hex[:8]
    return AlertsConfig(
        **{**FAST, **extra}, alerts_topic=f"alerts-{suffix}", state_topic=f"alerts-state-{suffix}"
    )


def history(sb: StreamBuilder, now_ms: int, *, burst: bool) -> list[dict[str, Any]]:
    """Five minutes of calm traffic (10/s) up to ``now``; with ``burst``, NOK news in the last 20 s."""
    recs = sb.calm(now_ms - 300_000, 297, every_s=0.1)
    if burst:
        recs += sb.ticker_burst("NOK", now_ms - 20_000, duration_s=16, count=25)
    recs.sort(key=lambda r: r["source"]["timestamp"])
    return recs


async def produce(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for r in records:
            # Kafka timestamp = event time, as the daemon's output would carry roughly.
            await producer.send(
                topic, orjson.dumps(r), key=r["id"].encode(), timestamp_ms=r["source"]["timestamp"]
            )
        await producer.flush()
    finally:
        await producer.stop()


async def produce_live(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    """Send each record when the wall clock reaches its event time, as a live daemon would."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        for r in records:
            delay = r["source"]["timestamp"] / 1000 - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send_and_wait(topic, orjson.dumps(r), key=r["id"].encode())
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every record of a one-partition topic (the alert topics are created with one)."""
    consumer = make_reader(KafkaConfig(bootstrap_servers=bootstrap))
    await consumer.start()
    try:
        out: list[dict[str, Any]] = []
        await read_to_end(consumer, [TopicPartition(topic, 0)], lambda m: out.append(orjson.loads(m.value)))
        return out
    finally:
        await consumer.stop()


async def wait_for(check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)


@pytest.mark.slow
async def test_restart_rebuilds_baselines_and_never_refires(
    kafka_bootstrap: str, kafka_topic_factory: Callable[..., str], shared_data: Path
) -> None:
    labels = kafka_topic_factory(3, prefix="labels")
    cfg = fast_config()
    kafka = KafkaConfig(bootstrap_servers=kafka_bootstrap)
    sb = StreamBuilder(load_corpus(shared_data))
    now_ms = int(time.time() * 1000)
    recs = history(sb, now_ms, burst=True)
    await produce(kafka_bootstrap, labels, recs)

    # 1. The incident happened while no engine ran: the rebuild finds it and publishes it once.
    a = AlertEngine(cfg, kafka, labels, AlertMetrics(CollectorRegistry()))
    await a.start()
    try:
        assert a.ready
        assert a.replayed == len(recs)
        assert a.detector.global_scope.base_n > 2000  # baselines rebuilt from the topic
        alerts = await wait_for(lambda: read_all(kafka_bootstrap, cfg.alerts_topic), 10, "the firing alert")
        assert [(d["scope_kind"], d["scope"], d["state"]) for d in alerts] == [("entity", "NOK", "firing")]
        fired = alerts[0]
        assert fired["count"] >= cfg.min_count
        assert fired["statistic"]["value"] > fired["statistic"]["threshold"]
        base_a = a.detector.global_scope.base_n
    finally:
        await a.stop()

    # 2. Restart mid-incident: same baselines, same alert id, nothing re-published.
    b = AlertEngine(cfg, kafka, labels, AlertMetrics(CollectorRegistry()))
    await b.start()
    try:
        assert b.detector.global_scope.base_n >= base_a
        active = b.detector.active_alerts()
        assert set(active) == {("entity", "NOK")}
        assert active[("entity", "NOK")].alert_id == fired["alert_id"]
        await asyncio.sleep(1.5)
        assert len(await read_all(kafka_bootstrap, cfg.alerts_topic)) == 1
        # 3. The burst leaves the short window as the (idle) clock moves on: one resolve.
        alerts = await wait_for(
            lambda: _len_at_least(read_all(kafka_bootstrap, cfg.alerts_topic), 2), 40, "the resolve"
        )
        assert [d["state"] for d in alerts] == ["firing", "resolved"]
        assert alerts[1]["alert_id"] == fired["alert_id"]
        assert alerts[1]["resolved_at"] >= alerts[1]["started_at"]
    finally:
        await b.stop()

    # 4. Restart after the resolve: nothing fires again, the cooldown carries over.
    c = AlertEngine(cfg, kafka, labels, AlertMetrics(CollectorRegistry()))
    await c.start()
    try:
        assert c.detector.active_alerts() == {}
        nok = c.detector.entity_scopes["NOK"]
        assert nok.cooldown_until_ms >= alerts[1]["resolved_at"] + cfg.cooldown_s * 1000
        await asyncio.sleep(1.5)
        assert len(await read_all(kafka_bootstrap, cfg.alerts_topic)) == 2
        state = await read_all(kafka_bootstrap, cfg.state_topic)
        assert state[-1]["state"] == "resolved"
        assert state[-1]["alert_id"] == fired["alert_id"]
    finally:
        await c.stop()


def spawn_alert_process(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIWIRE_")}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sentiwire", "alert", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )


async def _len_at_least(coro: Any, n: int) -> Any:
    docs = await coro
    return docs if len(docs) >= n else None


@pytest.mark.slow
@pytest.mark.prometheus
async def test_alert_process_fires_on_alerts_topic_and_in_prometheus(
    kafka_bootstrap: str,
    kafka_topic_factory: Callable[..., str],
    shared_data: Path,
    prometheus_factory: Callable[..., PrometheusServer],
    tmp_path: Path,
) -> None:
    """``sentiwire alert`` as its own process; live records; Prometheus evaluates the real rules."""
    labels = kafka_topic_factory(3, prefix="labels")
    cfg = fast_config()
    port = free_port()
    config = {
        "kafka": {"bootstrap_servers": kafka_bootstrap},
        "output": {"labels_topic": labels},
        "http": {"host": "127.0.0.1", "port": port},
        "logging": {"format": "json"},
        "alerts": cfg.model_dump(mode="json"),
    }
    config_path = tmp_path / "sentiwire.yaml"
    config_path.write_text(yaml.safe_dump(config))
    sb = StreamBuilder(load_corpus(shared_data))
    now_ms = int(time.time() * 1000)
    calm = history(sb, now_ms, burst=False)
    await produce(kafka_bootstrap, labels, calm)

    log_path = tmp_path / "alert.log"
    proc = spawn_alert_process(config_path, log_path)
    prom = prometheus_factory(scrape_targets=[f"127.0.0.1:{port}"], rule_files=[RULES])
    try:
        import urllib.request

        def ready() -> bool:
            assert proc.poll() is None, log_path.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        await wait_for(ready, 60, "sentiwire alert /readyz")
        assert await read_all(kafka_bootstrap, cfg.alerts_topic) == []

        # Live: a burst of negative news about NOK amid continuing calm traffic.
        t = int(time.time() * 1000) + 500
        live = sb.calm(t, 14, every_s=0.1) + sb.ticker_burst("NOK", t + 1000, duration_s=12, count=25)
        live.sort(key=lambda r: r["source"]["timestamp"])
        await produce_live(kafka_bootstrap, labels, live)

        alerts = await wait_for(lambda: read_all(kafka_bootstrap, cfg.alerts_topic), 20, "alert on the topic")
        assert [(d["scope_kind"], d["scope"], d["state"]) for d in alerts] == [("entity", "NOK", "firing")]
        doc = alerts[0]
        burst_ids = {r["id"] for r in live if r.get("tickers") == ["NOK"]}
        assert doc["examples"]
        assert {e["id"] for e in doc["examples"]} <= burst_ids
        assert doc["first_source"]["topic"] == "news"
        assert doc["windows"] == {"short_s": cfg.short_window_s, "baseline_s": cfg.baseline_window_s}

        def firing() -> list[dict[str, Any]]:
            return [
                a
                for a in prom.alerts()
                if a["labels"]["alertname"] == "NegativeSentimentSpike" and a["state"] == "firing"
            ]

        fired = await wait_for(firing, 20, "NegativeSentimentSpike firing in Prometheus")
        assert [(a["labels"]["scope_kind"], a["labels"]["scope"]) for a in fired] == [("entity", "NOK")]
        assert fired[0]["annotations"]["summary"] == "Negative sentiment spike: entity NOK"
        share = prom.query('sentiwire_negative_share{scope_kind="entity", scope="NOK"}')
        assert share
        assert float(share[0]["value"][1]) >= cfg.absolute_floor

        # And it resolves, in Kafka and in Prometheus, once the burst is out of the window.
        await wait_for(
            lambda: _len_at_least(read_all(kafka_bootstrap, cfg.alerts_topic), 2), 40, "the resolve"
        )
        await wait_for(lambda: not firing(), 20, "NegativeSentimentSpike to stop firing")
        logs = log_path.read_text()
        assert '"negative sentiment spike"' in logs
        assert '"negative sentiment spike resolved"' in logs
    finally:
        terminate(proc, timeout_s=20)  # SIGTERM, as Kubernetes would: it must exit 0 on its own
    assert proc.returncode == 0, log_path.read_text()[-3000:]


async def test_missing_labels_topic_is_named(kafka_bootstrap: str) -> None:
    engine = AlertEngine(
        fast_config(), KafkaConfig(bootstrap_servers=kafka_bootstrap), "no-such-labels-topic"
    )
    with pytest.raises(AlertEngineError, match="no-such-labels-topic"):
        await engine.start()
    assert not engine.ready
