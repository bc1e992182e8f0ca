"""With the real broker: a running daemon picks up a promoted version; corrections come from a topic."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import orjson
import pytest
import yaml

from streamer.testing import daemon_config
from tests.retrain.conftest import served_copy
from tests.retrain.helpers import Splits
from tests.streamer.helpers import (
    consume_all,
    json_messages,
    produce,
    running_daemon,
    settings_from,
)
from training.data import SourceSpec
from training.retrain.corrections import read_corrections
from training.retrain.registry import read_history
from training.retrain.run import RetrainOptions, retrain

TEXTS = [
    "The food was cold and the service was slow.",
    "Great phone, the battery lasts for days.",
    "I would not recommend this movie to anyone.",
    "Absolutely loved the atmosphere and the staff.",
]


def _lines(specs: list[SourceSpec]) -> dict[str, list[str]]:
    return {s.head: Path(s.path).read_text(encoding="utf-8").splitlines() for s in specs}


@pytest.mark.train
@pytest.mark.slow
async def test_running_daemon_serves_the_promoted_version(
    kafka_bootstrap: str,
    kafka_topic_factory,  # type: ignore[no-untyped-def]
    weak_bundle: Path,
    retrain_splits: Splits,
    tmp_path: Path,
) -> None:
    served = served_copy(weak_bundle, tmp_path / "models")
    topic, labels, dlq = kafka_topic_factory(2), kafka_topic_factory(2), kafka_topic_factory(1)
    cfg = daemon_config(
        bootstrap=kafka_bootstrap, bundle=served, topics=topic, labels=labels, dlq=dlq, group="retrain-e2e"
    )
    cfg["model"] = {"path": str(served), "reload_interval_s": 0.2}
    settings = settings_from(tmp_path, cfg)
    async with running_daemon(settings) as daemon:
        await produce(kafka_bootstrap, topic, json_messages(TEXTS, prefix="before-"))
        before = await consume_all(kafka_bootstrap, labels, len(TEXTS), timeout_s=60)
        assert {orjson.loads(r.value)["model"]["version"] for r in before} == {"v0"}

        # The real retrain, in a worker thread while the daemon keeps serving. Tolerance 1.0:
        # this test is about pick-up, not the decision (tests/retrain/test_retrain_train.py).
        opts = RetrainOptions(
            served=served,
            data=[SourceSpec("sentiment", str(retrain_splits.new_good))],
            holdout=[SourceSpec("sentiment", str(retrain_splits.holdout))],
            tolerance=1.0,
            overrides={"epochs": 1, "steps_per_epoch": 10},
        )
        record = await asyncio.to_thread(retrain, opts)
        assert record["decision"]["promote"] is True
        new = record["candidate"]["version"]

        for _ in range(600):  # the reloader polls every 0.2 s; allow 30 s for load + warm-up
            if daemon.models.current.bundle.version == new:
                break
            await asyncio.sleep(0.05)
        assert daemon.models.current.bundle.version == new
        await produce(kafka_bootstrap, topic, json_messages(TEXTS, prefix="after-"))
        out = await consume_all(kafka_bootstrap, labels, 2 * len(TEXTS), timeout_s=60)
    after = [orjson.loads(r.value) for r in out if orjson.loads(r.value)["id"].startswith("after-")]
    assert len(after) == len(TEXTS)
    assert {v["model"]["version"] for v in after} == {new}
    assert daemon.exit_code == 0
    assert read_history(tmp_path / "models" / "history.jsonl")[-1]["candidate"]["version"] == new


async def test_corrections_topic_is_read_to_its_end(
    kafka_bootstrap: str,
    kafka_topic_factory,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = kafka_topic_factory(3)
    good = [
        {"text": "Profit warning sinks the shares", "head": "sentiment", "label": "negative"},
        {"text": "Record quarter for the retailer", "labels": {"sentiment": "positive", "topic": "Earnings"}},
        {"text": "Fed holds rates", "head": "topic", "label": "Macro"},
    ]
    bad: list[bytes] = [b"not json", json.dumps({"head": "sentiment", "label": "negative"}).encode()]
    bad.append(json.dumps({"text": "no label at all"}).encode())
    values = [json.dumps(g).encode() for g in good] + bad
    await produce(kafka_bootstrap, topic, values, keys=[str(i).encode() for i in range(len(values))])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": kafka_bootstrap}}))

    specs = await asyncio.to_thread(read_corrections, config, topic, tmp_path / "out", timeout_s=30)
    by_head = _lines(specs)
    assert sorted(by_head) == ["sentiment", "topic"]
    assert sorted(by_head["sentiment"][1:]) == [
        "Profit warning sinks the shares,negative",
        "Record quarter for the retailer,positive",
    ]
    assert sorted(by_head["topic"][1:]) == [
        "Fed holds rates,Macro",
        "Record quarter for the retailer,Earnings",
    ]
    err = capsys.readouterr().err
    assert "skipped 3 record(s)" in err
    assert "not a JSON object with a non-empty text" in err
    assert "no head/label pair" in err
