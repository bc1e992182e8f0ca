"""The engine's per-partition event clock on the real broker: an idle input partition does not
stop alerts on the others, and a record far older than the lateness is counted late and said.

Labeled records (real sentences, gold labels standing in for the model) are written straight to
a labels topic; their source is a real 3-partition input topic, whose partitions the engine looks
up and waits for. Windows are seconds (``fast_config``); event time runs faster than the wall clock.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
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


async def commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit ``offsets`` for ``group``, as the serving daemon's consumer would after labeling."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def fill_input(bootstrap: str, topic: str, counts: dict[int, int]) -> None:
    """``counts[p]`` input records on partition ``p`` (the labels stand for them by offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for part, n in counts.items():
            for i in range(n):
                await producer.send(topic, f"input {i}".encode(), partition=part)
        await producer.flush()
    finally:
        await producer.stop()


async def test_quiet_partition_with_a_backlog_is_waited_for_until_worked_or_stalled(
    kafka_bootstrap: str, kafka_topic_factory: Callable[..., str], shared_data: Path
) -> None:
    """A partition the serving group has not worked for longer than ``idle_partition_s`` while
    its input has a backlog (a starved partition on a loaded box) holds the clock: its labels,
    minutes behind the other partition's, are on time. Worked to the end it may idle again; a
    group whose commit there stops moving for ``stalled_partition_s`` is let go, and said."""
    news = kafka_topic_factory(2, prefix="news")
    labels = kafka_topic_factory(1, prefix="labels")
    group = f"serving-{uuid.uuid4().hex[:8]}"
    cfg = fast_config(
        idle_partition_s=1.0, idle_advance_s=120.0, backlog_poll_s=0.5, stalled_partition_s=20.0
    )
    sb = StreamBuilder(load_corpus(shared_data), topic=news, partitions=2)
    now_ms = int(time.time() * 1000)
    stream = sb.calm(now_ms - 300_000, 240, every_s=0.2)
    p0 = [r for r in stream if r["source"]["partition"] == 0]
    p1 = [r for r in stream if r["source"]["partition"] == 1]
    k = len(p1) // 4  # the daemon has labeled a quarter of news-1, all of news-0
    await fill_input(kafka_bootstrap, news, {0: len(p0), 1: len(p1)})
    tp0, tp1 = TopicPartition(news, 0), TopicPartition(news, 1)
    await commit(kafka_bootstrap, group, {tp0: len(p0), tp1: k})
    await produce(kafka_bootstrap, labels, by_time(p0[: len(p0) // 2], p1[:k]))
    registry = CollectorRegistry()
    engine = AlertEngine(
        cfg,
        KafkaConfig(bootstrap_servers=kafka_bootstrap),
        labels,
        AlertMetrics(registry),
        serving_group=group,
    )
    await engine.start()
    try:
        clock, stats = engine.detector.clock, engine.detector.stats
        await produce(kafka_bootstrap, labels, p0[len(p0) // 2 :])  # news-0 runs on
        await asyncio.sleep(4 * cfg.idle_partition_s)  # news-1 quiet for 4x the idle limit
        assert clock.watermark_ms is not None
        assert clock.watermark_ms <= p1[k - 1]["source"]["timestamp"] - 1000, "news-1 was let go"
        assert clock.held[0] == {(news, 1)}
        # The daemon works news-1 through: minutes behind news-0 in event time, none late.
        await trickle(kafka_bootstrap, labels, p1[k:], gap_s=0.002)
        await commit(kafka_bootstrap, group, {tp1: len(p1)})
        await wait_for(lambda: stats.counted == len(stream), 30, "every label counted")
        assert stats.late == stats.capped == 0
        # Caught up and quiet: idleness applies, the clock follows news-0.
        p0_end = p0[-1]["source"]["timestamp"] - 1000
        await wait_for(lambda: (clock.watermark_ms or 0) >= p0_end, 20, "the clock past idle news-1")

        # More input on news-1 that the group never commits: waited for, then let go.
        more = sb.calm(now_ms - 50_000, 20, every_s=0.1)
        more0 = [r for r in more if r["source"]["partition"] == 0]
        await fill_input(kafka_bootstrap, news, {1: 5})
        with structlog.testing.capture_logs() as logs:
            await wait_for(lambda: clock.held[0] == {(news, 1)}, 10, "news-1 waited for again")
            await trickle(kafka_bootstrap, labels, more0, gap_s=0.005)
            assert (clock.watermark_ms or 0) < more0[-1]["source"]["timestamp"] - 1000
            await wait_for(
                lambda: (clock.watermark_ms or 0) >= more0[-1]["source"]["timestamp"] - 1000,
                30,
                "the clock past stalled news-1",
            )
        stalled = [
            e for e in logs if e["event"].startswith("input partitions not worked by the serving group")
        ]
        assert stalled, logs
        assert stalled[0]["partitions"] == [f"{news}-1"]
        assert registry.get_sample_value("sentiwire_alert_input_backlog_records") == 5
    finally:
        await engine.stop()


async def test_an_input_partition_not_labeled_yet_at_start_up_is_waited_for(
    kafka_bootstrap: str, kafka_topic_factory: Callable[..., str], shared_data: Path
) -> None:
    """The daemon starts its engine while it works a backlog: news-2 has no label yet when the
    engine replays. Told the daemon's input topics, the engine waits for news-2 from the start,
    so its labels, minutes behind the others, are on time; without, they are late."""
    news = kafka_topic_factory(3, prefix="news")
    sb = StreamBuilder(load_corpus(shared_data), topic=news)
    now_ms = int(time.time() * 1000)
    stream = sb.calm(now_ms - 300_000, 240, every_s=0.2)
    first = [r for r in stream if r["source"]["partition"] != 2]
    later = [r for r in stream if r["source"]["partition"] == 2]
    late: dict[bool, int] = {}
    for told in (True, False):
        labels = kafka_topic_factory(1, prefix="labels")
        await produce(kafka_bootstrap, labels, first)
        cfg = fast_config(idle_advance_s=120.0)
        engine = AlertEngine(
            cfg,
            KafkaConfig(bootstrap_servers=kafka_bootstrap),
            labels,
            AlertMetrics(CollectorRegistry()),
            input_topics=[news] if told else [],
        )
        await engine.start()
        try:
            await produce(kafka_bootstrap, labels, later)
            stats = engine.detector.stats
            await wait_for(lambda: stats.records == len(stream), 30, "every label read")  # noqa: B023
            late[told] = stats.late
        finally:
            await engine.stop()
    assert late[True] == 0
    assert late[False] > len(later) // 2  # what the engine did before it was told


async def test_a_broken_backlog_watch_leaves_no_hold_behind(
    kafka_bootstrap: str, kafka_topic_factory: Callable[..., str], shared_data: Path
) -> None:
    """A hold that nothing renews would stop the clock for good: a watch that fails lets go."""
    news = kafka_topic_factory(2, prefix="news")
    labels = kafka_topic_factory(1, prefix="labels")
    group = f"serving-{uuid.uuid4().hex[:8]}"
    sb = StreamBuilder(load_corpus(shared_data), topic=news, partitions=2)
    stream = sb.calm(int(time.time() * 1000) - 120_000, 60, every_s=0.5)
    await fill_input(kafka_bootstrap, news, {0: 10, 1: 10})
    await commit(kafka_bootstrap, group, {TopicPartition(news, 0): 10, TopicPartition(news, 1): 2})
    await produce(kafka_bootstrap, labels, stream)
    cfg = fast_config(idle_advance_s=120.0, backlog_poll_s=0.5)
    engine = AlertEngine(
        cfg, KafkaConfig(bootstrap_servers=kafka_bootstrap), labels, AlertMetrics(CollectorRegistry()),
        serving_group=group,
    )  # fmt: skip
    await engine.start()
    try:
        clock = engine.detector.clock
        await wait_for(lambda: clock.held[0] == {(news, 1)}, 20, "news-1 held for its backlog")

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug in the watch")

        with structlog.testing.capture_logs() as logs:
            engine._backlog.update = broken  # type: ignore[method-assign]
            await wait_for(lambda: clock.held[0] == set(), 20, "the hold let go")
        assert any(e["event"].startswith("serving group backlog watch failed") for e in logs), logs
    finally:
        await engine.stop()
