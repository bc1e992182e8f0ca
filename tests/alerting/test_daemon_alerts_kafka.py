"""The engine inside ``sentiwire serve`` (alerts.enabled): it reads the labels the daemon writes.

The tiny test model labels at random, so this checks the wiring and the record contract
(every label record is usable by the detector: event time, sentiment, topic, tickers), not
spikes; those are covered with controlled labels in test_engine_kafka.py.
"""

from __future__ import annotations

import asyncio
import csv
import time
import uuid
from pathlib import Path

import orjson
from prometheus_client import REGISTRY

from tests.streamer.helpers import config_dict, produce, running_daemon, settings_from

N = 120


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_daemon_runs_the_alert_engine_on_its_labels(
    kafka_bootstrap: str, kafka_topic_factory, tiny_bundle: Path, shared_data: Path, tmp_path: Path
) -> None:
    topic, labels, dlq = kafka_topic_factory(3), kafka_topic_factory(3), kafka_topic_factory(1)
    with (shared_data / "twitter-financial-news-sentiment" / "valid.csv").open(encoding="utf-8") as fh:
        texts = [r["text"] for r in csv.DictReader(fh) if "$" in r["text"]][:N]
    values = [orjson.dumps({"id": f"t{i}", "text": t}) for i, t in enumerate(texts)]
    suffix = uuid.uuid4().hex[:8]
    cfg = config_dict(
        bootstrap=kafka_bootstrap,
        bundle=tiny_bundle,
        topic=topic,
        labels=labels,
        dlq=dlq,
        group="alerts-e2e",
        alerts={
            "enabled": True,
            "alerts_topic": f"alerts-{suffix}",
            "state_topic": f"alerts-state-{suffix}",
            "short_window_s": 10.0,
            "baseline_window_s": 600.0,
            "bucket_s": 1.0,
            "allowed_lateness_s": 1.0,
            "idle_advance_s": 1.0,
        },
    )
    settings = settings_from(tmp_path, cfg)
    counted0 = sample("sentiwire_alert_records_total", outcome="counted")
    invalid0 = sample("sentiwire_alert_records_total", outcome="invalid")
    async with running_daemon(settings, timeout_s=60):
        await produce(kafka_bootstrap, topic, values)
        deadline = time.monotonic() + 60
        while sample("sentiwire_alert_records_total", outcome="counted") - counted0 < N:
            assert time.monotonic() < deadline, "the alert engine did not see every label record"
            await asyncio.sleep(0.2)
        # Give the engine's clock a moment to judge a window, so gauges are set.
        deadline = time.monotonic() + 20
        while (
            REGISTRY.get_sample_value("sentiwire_negative_share", {"scope_kind": "global", "scope": "all"})
            is None
        ):
            assert time.monotonic() < deadline, "no negative share exported for the global scope"
            await asyncio.sleep(0.2)
    assert sample("sentiwire_alert_records_total", outcome="counted") - counted0 == N
    assert sample("sentiwire_alert_records_total", outcome="invalid") == invalid0
    # Cashtags in the daemon's output text became entity scopes.
    assert sample("sentiwire_alert_tracked_entities") > 10
    share = REGISTRY.get_sample_value("sentiwire_negative_share", {"scope_kind": "global", "scope": "all"})
    assert share is not None
    assert 0.0 <= share <= 1.0
