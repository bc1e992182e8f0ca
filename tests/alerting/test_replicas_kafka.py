"""Spike alerts across serving replicas, engine restarts and crashes, on the real broker.

The same event-time backlog as test_backlog_kafka (hours compressed into the record
timestamps, produced before anything starts); the daemons are ``sentiwire serve``
subprocesses, made slow on purpose (batches of 4, one inference thread) so that a replica
started later, an engine restarted, or a kill -9 lands in the middle of the catch-up.
"""

from __future__ import annotations

import asyncio
import collections
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from sentiwire.procs import free_port
from streamer.alerting.engine import AlertEngine
from streamer.alerting.entities import EntityExtractor
from streamer.alerting.metrics import AlertMetrics
from streamer.config import AlertsConfig, KafkaConfig
from streamer.kafka.clients import make_reader
from streamer.kafka.reader import read_to_end
from tests.alerting.daemons import (
    HOUR_MS,
    AlertProcess,
    alerts_section,
    backlog,
    engine_outcomes,
    incident_records,
    metric_samples,
    produce_backlog,
    serve_config,
    wait_counted,
    wait_resolved,
    wall_ms,
)
from tests.alerting.test_backlog_kafka import assert_one_burst_incident
from tests.alerting.test_engine_kafka import wait_for
from tests.streamer.helpers import DaemonProcess, committed, log_events, wait_for_log

pytestmark = pytest.mark.slow

SLOW = {
    "batching": {"max_batch_size": 4, "max_wait_ms": 0, "max_in_flight": 8, "commit_interval_ms": 200},
    "model": {"workers": 1, "intra_op_threads": 1},
}


def published(port: int, labels: str) -> float:
    try:
        return metric_samples(port).get(("sentiwire_messages_published_total", (("topic", labels),)), 0.0)
    except OSError:
        return 0.0


async def test_two_replicas_one_started_later(
    kafka_bootstrap: str,
    kafka_topic_factory: Callable[..., str],
    spike_model: tuple[Path, list[str], list[str]],
    tmp_path: Path,
) -> None:
    bundle, neg, other = spike_model
    news, labels, dlq = kafka_topic_factory(3), kafka_topic_factory(3), kafka_topic_factory(1)
    suffix = uuid.uuid4().hex[:8]
    data = backlog(neg, other, start_ms=wall_ms() - 5 * HOUR_MS)
    n = len(data.messages)
    await produce_backlog(kafka_bootstrap, news, data.messages)
    alerts = alerts_section(suffix)
    group = f"replicas-{suffix}"
    engine = AlertProcess(
        tmp_path, "alert", bootstrap=kafka_bootstrap, labels=labels, alerts=alerts, group=group
    )
    ports = [free_port(), free_port()]
    configs = [
        serve_config(
            tmp_path,
            f"serve-{i}.yaml",
            bootstrap=kafka_bootstrap,
            bundle=bundle,
            news=news,
            labels=labels,
            dlq=dlq,
            group=group,
            port=ports[i],
            **SLOW,
        )
        for i in range(2)
    ]
    daemons: list[DaemonProcess] = []
    try:
        await engine.ready()
        daemons.append(DaemonProcess(configs[0], tmp_path / "serve-0.log"))
        # The second replica starts once the first is a quarter through the backlog.
        await wait_for(lambda: published(ports[0], labels) >= n // 4, 120, "replica 0 a quarter through")
        daemons.append(DaemonProcess(configs[1], tmp_path / "serve-1.log"))
        await wait_for_log(daemons[1], "partitions assigned", lambda e: e["partitions"], timeout_s=90)
        outcomes = await wait_counted(engine.port, n, 300, "every label counted by the alert engine")
        by_id = await wait_resolved(kafka_bootstrap, alerts["alerts_topic"], 120)
        outcomes = engine_outcomes(engine.port)
        split = [published(p, labels) for p in ports]
        print(f"two replicas: {n} messages, labels published per replica {split}, engine outcomes {outcomes}")
        assert split[1] > 0, "the second replica took no part"
        assert outcomes["counted"] == n
        assert outcomes["late"] == outcomes["capped"] == outcomes["invalid"] == 0
        assert outcomes["duplicate"] == sum(split) - n  # redelivered around the rebalance, dropped once each
        fired = assert_one_burst_incident(by_id, data.burst_ids, data.burst_at_ms)
        assert fired["backfill"] is True
    finally:
        for d in daemons:
            assert d.terminate(timeout_s=30) == 0, d.tail()
            d.close()
        assert engine.stop() == 0, engine.tail()


async def test_alert_engine_restarted_in_the_middle_of_the_catch_up(
    kafka_bootstrap: str,
    kafka_topic_factory: Callable[..., str],
    spike_model: tuple[Path, list[str], list[str]],
    tmp_path: Path,
) -> None:
    """Restarted before the burst is judged (it must not be missed) and after it paged (it must
    not page again); each engine rebuilds from the labels topic what the one before saw."""
    bundle, neg, other = spike_model
    news, labels, dlq = kafka_topic_factory(3), kafka_topic_factory(3), kafka_topic_factory(1)
    suffix = uuid.uuid4().hex[:8]
    data = backlog(neg, other, start_ms=wall_ms() - 5 * HOUR_MS, burst_after_h=1.5)
    n = len(data.messages)
    await produce_backlog(kafka_bootstrap, news, data.messages)
    alerts = alerts_section(suffix)
    port = free_port()
    group = f"restart-{suffix}"
    config = serve_config(
        tmp_path,
        "serve.yaml",
        bootstrap=kafka_bootstrap,
        bundle=bundle,
        news=news,
        labels=labels,
        dlq=dlq,
        group=group,
        port=port,
        **SLOW,
    )
    engines = [
        AlertProcess(
            tmp_path, "alert-0", bootstrap=kafka_bootstrap, labels=labels, alerts=alerts, group=group
        )
    ]
    daemon: DaemonProcess | None = None

    async def restart() -> float:
        assert engines[-1].stop() == 0, engines[-1].tail()
        at = published(port, labels)
        name = f"alert-{len(engines)}"
        engines.append(
            AlertProcess(tmp_path, name, bootstrap=kafka_bootstrap, labels=labels, alerts=alerts, group=group)
        )
        await engines[-1].ready()
        return at

    async def paged() -> bool:
        return bool(await incident_records(kafka_bootstrap, alerts["alerts_topic"]))

    try:
        await engines[0].ready()
        daemon = DaemonProcess(config, tmp_path / "serve.log")
        # 1. A fifth of the backlog labeled: no partition is near the burst (half-way) yet.
        await wait_for(lambda: engine_outcomes(engines[0].port).get("counted", 0) >= n // 5, 180, "a fifth")
        assert not await paged()
        before = await restart()
        # 2. Paged by the restarted engine; restart again while the catch-up goes on.
        await wait_for(paged, 180, "the burst to page", interval_s=0.2)
        after = await restart()
        outcomes = await wait_counted(engines[-1].port, n, 300, "every label counted by the last engine")
        by_id = await wait_resolved(kafka_bootstrap, alerts["alerts_topic"], 120)
        outcomes = engine_outcomes(engines[-1].port)
        paged_by = [e.log_path.name for e in engines if log_events(e.log_path, "negative sentiment spike")]
        resolved_by = [
            e.log_path.name for e in engines if log_events(e.log_path, "negative sentiment spike resolved")
        ]
        reconciled = [log_events(e.log_path, "alert state reconciled")[0] for e in engines[1:]]
        print(
            f"engine restarts: {n} messages, restarted at {before:.0f} and {after:.0f} labeled; "
            f"last engine outcomes {outcomes}; paged by {paged_by}, resolved by {resolved_by}; "
            f"reconciled {[{k: r[k] for k in ('kept_firing', 'resolved_while_down', 'fired_while_down', 'suppressed_refire')} for r in reconciled]}"
        )
        assert before < n // 2 <= n
        assert outcomes["counted"] == n
        assert outcomes["late"] == outcomes["capped"] == 0
        # One incident, paged once (not missed by the restart before it, not again after it).
        fired = assert_one_burst_incident(by_id, data.burst_ids, data.burst_at_ms)
        assert fired["backfill"] is True
        assert paged_by == ["alert-1.log"]
    finally:
        if daemon is not None:
            assert daemon.terminate(timeout_s=30) == 0, daemon.tail()
            daemon.close()
        for e in engines:
            e.stop()


async def distinct_labels(
    bootstrap: str, labels: str, partitions: int, *, read_committed: bool = True
) -> tuple[dict[tuple[int, int], Any], int]:
    """First label per source (partition, offset); and how many label records there were."""
    consumer = make_reader(KafkaConfig(bootstrap_servers=bootstrap), read_committed=read_committed)
    await consumer.start()
    out: dict[tuple[int, int], Any] = {}
    total = 0

    def handle(rec: Any) -> None:
        nonlocal total
        total += 1
        doc = orjson.loads(rec.value)
        out.setdefault((doc["source"]["partition"], doc["source"]["offset"]), doc)

    try:
        await read_to_end(consumer, [TopicPartition(labels, p) for p in range(partitions)], handle)
    finally:
        await consumer.stop()
    return out, total


def scope_counts(docs: list[dict[str, Any]]) -> collections.Counter[tuple[str, str]]:
    """What every scope should have counted: each distinct input offset once."""
    entities = EntityExtractor()
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for doc in docs:
        counts[("global", "all")] += 1
        counts[("topic", doc["labels"]["topic"]["label"])] += 1
        for e in entities.extract(doc.get("text"), doc.get("tickers")):
            counts[("entity", e)] += 1
    return counts


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
async def test_kill_9_storm_counts_each_input_once(
    delivery: str,
    kafka_bootstrap: str,
    kafka_topic_factory: Callable[..., str],
    spike_model: tuple[Path, list[str], list[str]],
    tmp_path: Path,
) -> None:
    bundle, neg, other = spike_model
    news, labels, dlq = kafka_topic_factory(4), kafka_topic_factory(4), kafka_topic_factory(1)
    suffix = uuid.uuid4().hex[:8]
    data = backlog(neg, other, start_ms=wall_ms() - 3 * HOUR_MS, hours=1.5)
    n = len(data.messages)
    await produce_backlog(kafka_bootstrap, news, data.messages)
    group = f"storm-{delivery}-{suffix}"
    config = serve_config(
        tmp_path,
        "serve.yaml",
        bootstrap=kafka_bootstrap,
        bundle=bundle,
        news=news,
        labels=labels,
        dlq=dlq,
        group=group,
        port=free_port(),
        delivery=delivery,
        exactly_once={"transactional_id": f"storm-{suffix}", "transaction_timeout_ms": 10_000},
        **SLOW,
    )
    registry = CollectorRegistry()
    cfg = alerts_section(suffix)
    engine = AlertEngine(
        AlertsConfig(**cfg),
        KafkaConfig(bootstrap_servers=kafka_bootstrap),
        labels,
        AlertMetrics(registry),
        serving_group=group,
    )
    await engine.start()
    rng = random.Random(11)
    try:
        for k in range(3):
            proc = DaemonProcess(config, tmp_path / f"run{k}.log")
            try:
                await wait_for_log(proc, "partitions assigned", lambda e: e["partitions"], timeout_s=90)
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                proc.kill()  # SIGKILL: no drain, no commit; under exactly_once an open transaction
            finally:
                proc.close()
        progress = sum(c or 0 for c in (await committed(kafka_bootstrap, group, news, 4)).values())
        assert 0 < progress < n, f"the kills should land mid-stream (committed {progress} of {n})"
        final = DaemonProcess(config, tmp_path / "final.log")
        try:
            await wait_for(lambda: engine.detector.stats.counted >= n, 300, "every input counted once")
            await asyncio.sleep(2.0)  # anything more would be a double count
        finally:
            assert (await asyncio.to_thread(final.terminate)) == 0, final.tail()
            final.close()
        distinct, records = await distinct_labels(kafka_bootstrap, labels, 4)
        _, written = await distinct_labels(kafka_bootstrap, labels, 4, read_committed=False)
        st = engine.detector.stats
        print(
            f"kill -9 storm ({delivery}): {n} inputs, {written} label records written "
            f"({written - records} in aborted transactions), {records} visible read_committed, "
            f"engine counted {st.counted}, duplicates dropped {st.duplicate}, late {st.late}"
        )
        assert len(distinct) == n
        assert st.counted == n
        assert st.late == st.capped == st.invalid == 0
        assert st.duplicate == records - n
        want = scope_counts(list(distinct.values()))
        got = {s.key: sum(b.n for b in s.buckets.values()) for s in engine.detector.scopes()}
        assert {k: v for k, v in got.items() if v} == dict(want)
    finally:
        await engine.stop()
