"""The engine's per-partition event clock on the real broker: an idle input partition does not
stop alerts on the others, and a record far older than the lateness is counted late and said.

Labeled records (real sentences, gold labels standing in for the model) are written straight to
a labels topic; their source is a real 3-partition input topic, whose partitions the engine looks
up and waits for. Windows are seconds (``fast_config``); event time runs faster than the wall clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from streamer.alerting.engine import AlertEngine
from streamer.alerting.metrics import AlertMetrics
from streamer.config import KafkaConfig
from tests.alerting.scenario import StreamBuilder, by_time, load_corpus
from tests.alerting.test_engine_kafka import fast_config, produce, read_all, wait_for

WEEK_MS = 7 * 24 * 3600 * 1000


async def trickle(bootstrap: str, topic: str, records: list[dict[str, Any]], gap_s: float) -> None:
    """Send one record every ``gap_s`` of wall clock (key = id), as a live daemon would."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        for r in records:
            await producer.send_and_wait(topic, orjson.dumps(r), key=r["id"].encode())
            await asyncio.sleep(gap_s)
    finally:
        await producer.stop()


async def test_idle_partition_does_not_stop_alerts_and_last_week_is_late(
    kafka_bootstrap: str, kafka_topic_factory: Callable[..., str], shared_data: Path
) -> None:
    news = kafka_topic_factory(3, prefix="news")
    labels = kafka_topic_factory(3, prefix="labels")
    # Idleness after 2 s of wall clock; the quiet-stream advance kept out of the way.
    cfg = fast_config(idle_partition_s=2.0, idle_advance_s=120.0)
    sb = StreamBuilder(load_corpus(shared_data), topic=news)
    now_ms = int(time.time() * 1000)
    history = sb.calm(now_ms - 300_000, 240, every_s=0.1)  # all three input partitions
    await produce(kafka_bootstrap, labels, history)
    t = now_ms - 60_000
    live = by_time(sb.calm(t, 40, every_s=0.1), sb.ticker_burst("NOK", t + 10_000, duration_s=16, count=25))
    quiet = [r for r in live if r["source"]["partition"] == 2]
    live = [r for r in live if r["source"]["partition"] != 2]  # input partition 2 goes quiet
    assert quiet
    registry = CollectorRegistry()
    metrics = AlertMetrics(registry)
    engine = AlertEngine(cfg, KafkaConfig(bootstrap_servers=kafka_bootstrap), labels, metrics)
    await engine.start()
    try:
        clock = engine.detector.clock
        assert {lane[2] for lane in clock.lanes} == {0, 1, 2}
        await trickle(kafka_bootstrap, labels, live, gap_s=0.02)
        alerts = await wait_for(lambda: read_all(kafka_bootstrap, cfg.alerts_topic), 30, "the NOK alert")
        assert [(d["scope_kind"], d["scope"], d["state"]) for d in alerts] == [("entity", "NOK", "firing")]
        # The clock went past input partition 2, which stopped at the end of the history.
        wm = clock.watermark_ms
        assert wm is not None
        assert wm > max(r["source"]["timestamp"] for r in history)
        assert all(
            st.max_ts_ms is not None and st.max_ts_ms < wm for lane, st in clock.lanes.items() if lane[2] == 2
        )
        assert engine.detector.stats.late == 0

        # A producer replaying last week into partition 0: counted late, logged, never used.
        old = sb.record("replayed from last week", "negative", "Macro", now_ms - WEEK_MS)
        old["source"]["partition"] = 0
        with structlog.testing.capture_logs() as logs:
            await trickle(kafka_bootstrap, labels, [old], gap_s=0)
            await wait_for(lambda: engine.detector.stats.late == 1, 20, "the replayed record counted late")
            await asyncio.sleep(1.0)  # one more loop: metrics and the log line
        assert (now_ms - WEEK_MS) // 1000 not in engine.detector.global_scope.buckets  # 1 s buckets
        dropped = [e for e in logs if e["event"] == "labels records dropped by the alert engine"]
        assert dropped, logs
        assert dropped[-1]["late"] == 1
        assert dropped[-1]["last"]["reason"] == "late"
        assert dropped[-1]["last"]["source"]["timestamp"] == now_ms - WEEK_MS
        assert dropped[-1]["last"]["behind_s"] > 6 * 24 * 3600
        assert registry.get_sample_value("sentiwire_alert_records_total", {"outcome": "late"}) == 1
    finally:
        await engine.stop()
