"""Drift on a real broker: a finance stream is not drift, BBC sport articles are (within one
window), finance again resolves it, and a model reload starts over against the new reference."""

from __future__ import annotations

import asyncio
import csv
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer.testing import daemon_config
from tests.streamer.helpers import (
    consume_all,
    json_messages,
    produce,
    running_daemon,
    settings_from,
    wait_assigned,
)
from training.profile import store_profile

pytestmark = pytest.mark.kafka

WINDOW = 200


def _texts(path: Path, *, label: str | None = None) -> list[str]:
    with path.open(encoding="utf-8") as fh:
        return [r["text"] for r in csv.DictReader(fh) if label is None or r["label"] == label]


async def test_drift_fires_resolves_and_a_reload_resets_it(
    kafka_bootstrap: str,
    kafka_topic_factory: Callable[..., str],
    tiny_bundle_factory: Callable[..., Path],
    shared_data: Path,
    tmp_path: Path,
) -> None:
    finance = _texts(shared_data / "financial-phrasebank" / "train.csv")
    sport = _texts(shared_data / "bbc-news" / "all.csv", label="sport")
    v1 = store_profile(tiny_bundle_factory("drift-1", tmp_path / "versions" / "1"), finance[:500])
    v2 = store_profile(tiny_bundle_factory("drift-2", tmp_path / "versions" / "2"), sport[250:400])
    current = tmp_path / "current"
    current.symlink_to(v1)
    topic, labels, dlq = kafka_topic_factory(1), kafka_topic_factory(1), kafka_topic_factory(1)
    cfg = daemon_config(
        bootstrap=kafka_bootstrap,
        bundle=current,
        topics=topic,
        labels=labels,
        dlq=dlq,
        group="drift",
        model={"path": str(current), "reload_interval_s": 0.1},
        drift={"window_messages": WINDOW, "min_messages": 100, "segments": 4},
    )
    sent = 0

    async def stream(texts: list[str], prefix: str) -> None:
        nonlocal sent
        await produce(kafka_bootstrap, topic, json_messages(texts, prefix=prefix))
        sent += len(texts)
        out = await consume_all(kafka_bootstrap, labels, sent, timeout_s=60)
        assert len(out) >= sent

    async with running_daemon(settings_from(tmp_path, cfg)) as daemon:
        reg = daemon.metrics.registry

        def value(name: str, **labels: str) -> float | None:
            return reg.get_sample_value(name, labels)

        await wait_assigned([daemon], 1)
        await stream(finance[1000:1300], "fin-a")
        assert value("sentiwire_drift_enabled") == 1
        assert value("sentiwire_drift_reference_messages") == 500
        assert value("sentiwire_drift_drifting") == 0
        assert value("sentiwire_drift_transitions_total", state="drifting") is None
        assert value("sentiwire_drift_window_messages") == pytest.approx(WINDOW, abs=WINDOW // 4)

        await stream(sport[: WINDOW + WINDOW // 4], "sport-a")  # one window (and its filling part)
        assert value("sentiwire_drift_drifting") == 1
        assert value("sentiwire_drift_transitions_total", state="drifting") == 1
        assert value("sentiwire_drift_breach", statistic="truncation_rate", head="") == 1
        assert value("sentiwire_drift_truncation_rate", source="window") > 0.5  # type: ignore[operator]

        await stream(finance[1300:1700], "fin-b")  # back to the stream the model was checked on
        assert value("sentiwire_drift_drifting") == 0
        assert value("sentiwire_drift_transitions_total", state="ok") == 1

        await stream(sport[: WINDOW + WINDOW // 4], "sport-b")
        assert value("sentiwire_drift_drifting") == 1
        tmp = tmp_path / "current.tmp"
        tmp.symlink_to(v2)
        os.replace(tmp, current)  # promote a bundle whose reference is sport
        for _ in range(100):
            if value("sentiwire_model_reloads_total", result="success") == 1:
                break
            await asyncio.sleep(0.1)
        assert value("sentiwire_model_reloads_total", result="success") == 1
        await stream(sport[WINDOW : WINDOW + 150], "sport-c")
        assert value("sentiwire_drift_reference_messages") == 150
        assert value("sentiwire_drift_window_messages") == 150  # started over at the new model
        assert value("sentiwire_drift_drifting") == 0
    assert daemon.exit_code == 0
