"""Spike alerts while labeling runs behind real time, through the real daemon and broker.

Hours of event time (record timestamp = event time) with one burst about NOK and decoys
(calm tickers, a 3-of-4 flurry) are produced into a 3-partition input topic *before*
anything starts, so the daemon works through them as a backlog, its partitions at their
own speeds. The burst must page exactly once, marked as backfill, and no label may be
dropped as late.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sentiwire.procs import free_port
from tests.alerting.daemons import (
    HOUR_MS,
    alerts_section,
    backlog,
    engine_outcomes,
    produce_backlog,
    serve_config,
    wait_counted,
    wait_resolved,
    wall_ms,
)
from tests.streamer.helpers import DaemonProcess, log_events

pytestmark = pytest.mark.slow


def assert_one_burst_incident(by_id: dict[str, list[dict]], burst_ids: set[str], burst_at_ms: int) -> dict:
    """Exactly one incident, about NOK, fired once and resolved once; returns its firing record."""
    assert len(by_id) == 1, {
        i: [(d["state"], d["scope_kind"], d["scope"]) for d in docs] for i, docs in by_id.items()
    }
    (docs,) = by_id.values()
    states = [d["state"] for d in docs]
    print("incident:", states, [(r["scope_kind"], r["scope"], r["relation"]) for r in docs[-1]["related"]])
    assert states[0] == "firing"
    assert states[-1] == "resolved"
    assert set(states[1:-1]) <= {"updated"}, states
    fired = docs[0]
    assert (fired["scope_kind"], fired["scope"]) == ("entity", "NOK")
    assert {e["id"] for e in fired["examples"]} <= burst_ids
    assert burst_at_ms < fired["at"] <= burst_at_ms + 300_000 + 30_000
    return fired


async def test_backlog_preloaded_before_serve_pages_once_as_backfill(
    kafka_bootstrap: str,
    kafka_topic_factory: Callable[..., str],
    spike_model: tuple[Path, list[str], list[str]],
    tmp_path: Path,
) -> None:
    bundle, neg, other = spike_model
    news, labels, dlq = kafka_topic_factory(3), kafka_topic_factory(3), kafka_topic_factory(1)
    suffix = uuid.uuid4().hex[:8]
    data = backlog(neg, other, start_ms=wall_ms() - 5 * HOUR_MS)
    await produce_backlog(kafka_bootstrap, news, data.messages)
    port = free_port()
    alerts = alerts_section(suffix)
    config = serve_config(
        tmp_path,
        "serve.yaml",
        bootstrap=kafka_bootstrap,
        bundle=bundle,
        news=news,
        labels=labels,
        dlq=dlq,
        group=f"backlog-{suffix}",
        port=port,
        alerts=alerts,
    )
    daemon = DaemonProcess(config, tmp_path / "serve.log")
    try:
        n = len(data.messages)
        outcomes = await wait_counted(port, n, 300, "every label counted by the alert engine")
        by_id = await wait_resolved(kafka_bootstrap, alerts["alerts_topic"], 120)
        outcomes = engine_outcomes(port)
        print(f"backlog: {n} messages, engine outcomes {outcomes}")
        assert outcomes["counted"] == n
        assert outcomes["late"] == outcomes["capped"] == outcomes["duplicate"] == outcomes["invalid"] == 0
        fired = assert_one_burst_incident(by_id, data.burst_ids, data.burst_at_ms)
        # About the past, and said so: record, log line.
        assert fired["backfill"] is True
        assert fired["timing"]["event_time"] == fired["at"]
        assert fired["timing"]["lag_s"] > 3600
        assert fired["timing"]["processing_time"] >= fired["emitted_at"] - 1000
        logged = [
            e for e in log_events(daemon.log_path, "negative sentiment spike") if e.get("scope") == "NOK"
        ]
        assert logged
        assert logged[0]["backfill"] is True
        assert logged[0]["lag_s"] > 3600
    finally:
        assert (daemon.terminate(timeout_s=30)) == 0, daemon.tail()
        daemon.close()
