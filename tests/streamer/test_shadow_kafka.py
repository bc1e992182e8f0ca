"""Shadow on a real broker: the live bundle as its own shadow agrees 1.0, and the published labels
are the same bytes (but for processed_at) with and without a shadow, in input order; each compared
message is on the shadow labels topic. (Keyless
labels go to any labels partition, so records are matched by their input position.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamer.testing import daemon_config
from tests.streamer.helpers import (
    consume_all,
    json_messages,
    produce,
    real_texts,
    running_daemon,
    settings_from,
    wait_assigned,
)

pytestmark = pytest.mark.kafka


def _by_source(records: list[Any]) -> dict[tuple[int, int], tuple[Any, ...]]:
    """Each label record by its input position: key, value bytes (processed_at aside), headers."""
    out = {}
    for rec in records:
        value = orjson.loads(rec.value)
        value.pop("processed_at")  # the only field that depends on when it ran
        src = value["source"]
        out[(src["partition"], src["offset"])] = (rec.key, orjson.dumps(value), tuple(rec.headers))
    return out


def _in_order(records: list[Any]) -> bool:
    """Within each labels partition, every input partition's offsets only go up."""
    last: dict[tuple[int, int], int] = {}
    for rec in records:
        src = orjson.loads(rec.value)["source"]
        key = (rec.partition, src["partition"])
        if src["offset"] <= last.get(key, -1):
            return False
        last[key] = src["offset"]
    return True


def _totals(reg: Any) -> dict[str, float]:
    """Sampled messages compared (one head's confusion counts) and dropped."""
    out = {"sentiwire_shadow_compared": 0.0, "sentiwire_shadow_dropped": 0.0}
    for metric in reg.collect():
        if metric.name in out:
            for s in metric.samples:
                if s.name.endswith("_total") and s.labels.get("head", "sentiment") == "sentiment":
                    out[metric.name] += s.value
    return out


async def test_shadow_agrees_with_itself_and_changes_no_published_byte(
    kafka_bootstrap: str,
    kafka_topic_factory: Callable[..., str],
    tiny_bundle_factory: Callable[..., Path],
    shared_data: Path,
    tmp_path: Path,
) -> None:
    live = tiny_bundle_factory("shadow-live", tmp_path / "live")
    same = tiny_bundle_factory("shadow-live", tmp_path / "same")  # the same weights, another copy
    topic, dlq, shadow_labels = kafka_topic_factory(2), kafka_topic_factory(1), kafka_topic_factory(1)
    texts = real_texts(shared_data, 300, long_texts=10)
    await produce(kafka_bootstrap, topic, json_messages(texts))
    outputs = {}
    shadowed: list[Any] = []
    compared = 0.0
    for run, shadow in (
        ("plain", None),
        ("shadowed", {"path": str(same), "sample_fraction": 1.0, "max_in_flight": 2}),
    ):
        labels = kafka_topic_factory(2)
        model: dict[str, Any] = {"path": str(live)}
        output: dict[str, Any] = {}
        if shadow is not None:
            model["shadow"] = shadow
            output["shadow_labels_topic"] = shadow_labels
        cfg = daemon_config(
            bootstrap=kafka_bootstrap,
            bundle=live,
            topics=topic,
            labels=labels,
            dlq=dlq,
            group=f"g-{run}",
            model=model,
            output=output,
            # One text per batch: a text's scores then never depend on which texts shared its
            # batch (padding moves the last float bits), so two runs can be compared byte for byte.
            batching={"max_batch_size": 1, "max_wait_ms": 0},
        )
        async with running_daemon(settings_from(tmp_path, cfg, name=f"{run}.yaml")) as daemon:
            await wait_assigned([daemon], 2)
            outputs[run] = await consume_all(kafka_bootstrap, labels, len(texts), timeout_s=60)
            reg = daemon.metrics.registry
            if shadow is not None:
                for _ in range(100):  # the shadow finishes its last samples after the labels are out
                    if sum(_totals(reg).values()) >= len(texts):
                        break
                    await asyncio.sleep(0.1)
                assert (
                    reg.get_sample_value(
                        "sentiwire_shadow_info", {"name": "sentiwire-tiny", "version": "shadow-live"}
                    )
                    == 1
                )
                for head in ("sentiment", "topic"):
                    assert reg.get_sample_value("sentiwire_shadow_agreement", {"head": head}) == 1.0
                totals = _totals(reg)
                compared, dropped = totals["sentiwire_shadow_compared"], totals["sentiwire_shadow_dropped"]
                assert compared > 0
                assert compared + dropped == len(texts)  # every sample compared or counted as dropped
                published = {"result": "ok"}
                for _ in range(100):
                    if reg.get_sample_value("sentiwire_shadow_labels_published_total", published) == compared:
                        break
                    await asyncio.sleep(0.1)
                assert reg.get_sample_value("sentiwire_shadow_labels_published_total", published) == compared
                shadowed = await consume_all(kafka_bootstrap, shadow_labels, int(compared), timeout_s=30)
        assert daemon.exit_code == 0
    assert len(outputs["plain"]) == len(texts)
    assert _by_source(outputs["plain"]) == _by_source(outputs["shadowed"])  # the same bytes
    assert all(_in_order(out) for out in outputs.values())  # in input order
    # Every compared message on the shadow labels topic, named by its input position, agreeing.
    docs = [orjson.loads(r.value) for r in shadowed]
    positions = {(d["source"]["partition"], d["source"]["offset"]) for d in docs}
    assert len(positions) == len(docs) == compared
    assert positions <= set(_by_source(outputs["plain"]))
    assert all(d["agree"] == {"sentiment": True, "topic": True} for d in docs)
    assert {d["shadow"]["model"]["version"] for d in docs} == {"shadow-live"}
