"""End to end on the real broker: real texts in, labels out equal to Classifier.predict
(the `sentiwire predict` path); every bad-message kind dead-lettered with its reason;
/metrics parses and its counters match what was sent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import jsonschema
import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streamer.app import Daemon
from streamer.model.bundle import load_bundle
from streamer.model.classifier import Classifier
from streamer.records import H_ERROR, H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TOPIC
from streamer.testing import daemon_config
from tests.streamer.helpers import (
    consume_all,
    json_messages,
    produce,
    read_topic,
    real_texts,
    running_daemon,
    settings_from,
)

pytestmark = pytest.mark.kafka

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "streamer/schemas/labels.schema.json").read_text())

N_TEXTS = 120
N_LONG = 8

BAD = {
    "not_utf8": b'{"text": "caf\xe9"}',
    "not_json": b'{"text": "unterminated',
    "not_object": b'["a", "list"]',
    "missing_text": b'{"id": "x", "body": "no text field"}',
    "text_not_string": b'{"text": 42}',
    "blank_text": b'{"text": "   \\n "}',
    "too_large": orjson.dumps({"text": "x" * 5000}),
}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_labels_match_predict_dead_letters_and_metrics(
    kafka_bootstrap: str, kafka_topic_factory, tiny_bundle: Path, shared_data: Path, tmp_path: Path
) -> None:
    topic, labels, dlq = kafka_topic_factory(3), kafka_topic_factory(3), kafka_topic_factory(1)
    texts = real_texts(shared_data, N_TEXTS, long_texts=N_LONG)
    good = json_messages(texts)
    keys = [f"k{i % 7}".encode() for i in range(len(good))]
    sent = await produce(kafka_bootstrap, topic, good, keys=keys)
    bad_sent = await produce(
        kafka_bootstrap,
        topic,
        list(BAD.values()),
        keys=[r.encode() for r in BAD],
        headers=[("trace", b"abc")],
    )

    cfg = daemon_config(
        bootstrap=kafka_bootstrap,
        bundle=tiny_bundle,
        topics=topic,
        labels=labels,
        dlq=dlq,
        group="e2e",
        input={"max_message_bytes": 4096},
    )
    settings = settings_from(tmp_path, cfg)
    async with running_daemon(settings) as daemon:
        out = await consume_all(kafka_bootstrap, labels, len(good), timeout_s=60)
        dead = await consume_all(kafka_bootstrap, dlq, len(BAD), timeout_s=30)
        assert daemon.http is not None
        assert daemon.http.port
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{daemon.http.port}"
            for _ in range(50):  # acks are counted right after the broker answers; allow a moment
                metrics = _samples(await (await http.get(f"{base}/metrics")).text())
                lags = [v for k, v in metrics.items() if k[0] == "sentiwire_consumer_lag"]
                published = metrics.get(("sentiwire_messages_published_total", (("topic", labels),)))
                if published == len(good) and len(lags) == 3 and sum(lags) == 0:
                    break
                await asyncio.sleep(0.1)
            assert (await http.get(f"{base}/healthz")).status == 200
            assert (await http.get(f"{base}/readyz")).status == 200
    assert daemon.exit_code == 0

    # Labels: one per input, equal to the offline predict path on the same texts.
    assert len(out) == len(good)
    clf = Classifier(load_bundle(tiny_bundle))
    expected = clf.predict(texts)
    enc = clf.encode(texts)
    by_id = {}
    for rec in out:
        value = orjson.loads(rec.value)
        jsonschema.validate(value, SCHEMA)
        by_id[value["id"]] = (rec, value)
    assert set(by_id) == {f"m{i}" for i in range(len(texts))}
    for i, text in enumerate(texts):
        rec, value = by_id[f"m{i}"]
        assert value["text"] == text
        assert rec.key == keys[i]
        assert value["ts"] == 1_700_000_000_000 + i
        assert value["tickers"] == ["ACME"]
        assert value["source"]["topic"] == topic
        assert (value["source"]["partition"], value["source"]["offset"]) == sent[i]
        assert value["model"] == {"name": clf.bundle.name, "version": clf.bundle.version}
        assert value["truncated"] == bool(enc.truncated[i])
        for head, pred in expected[i].items():
            got = value["labels"][head]
            assert got["label"] == pred.label, (i, head)
            assert got["score"] == pytest.approx(pred.score, abs=1e-4)
            assert got["scores"] == pytest.approx(pred.scores, abs=1e-4)
    # Per-partition order holds downstream: within an output partition, source offsets increase.
    last: dict[tuple[int, int], int] = {}
    for rec in sorted(out, key=lambda r: (r.partition, r.offset)):
        src = orjson.loads(rec.value)["source"]
        k = (rec.partition, src["partition"])
        assert src["offset"] > last.get(k, -1)
        last[k] = src["offset"]

    # Dead letters: original bytes and headers, our headers naming reason and source position.
    assert len(dead) == len(BAD)
    dead_by_key = {rec.key.decode(): rec for rec in dead}
    for (reason, raw), (part, off) in zip(BAD.items(), bad_sent, strict=True):
        rec = dead_by_key[reason]  # produced with the reason as key
        headers = dict(rec.headers)
        assert headers[H_ERROR].decode() == reason
        assert rec.value == raw
        assert headers["trace"] == b"abc"
        assert headers[H_SOURCE_TOPIC].decode() == topic
        assert (int(headers[H_SOURCE_PARTITION]), int(headers[H_SOURCE_OFFSET])) == (part, off)

    # Metrics match what was sent.
    n_trunc = int(enc.truncated.sum())
    assert n_trunc >= N_LONG // 2  # the BBC articles are longer than the tiny model's max_length
    total = len(good) + len(BAD)
    assert metrics[("sentiwire_messages_consumed_total", (("topic", topic),))] == total
    assert metrics[("sentiwire_messages_published_total", (("topic", labels),))] == len(good)
    for reason in BAD:
        assert metrics[("sentiwire_messages_dead_lettered_total", (("reason", reason),))] == 1
    assert metrics[("sentiwire_messages_truncated_total", ())] == n_trunc
    for head in ("sentiment", "topic"):
        per_label = {
            k[1][1][1]: v
            for k, v in metrics.items()
            if k[0] == "sentiwire_predictions_total" and k[1][0][1] == head
        }
        want: dict[str, int] = {}
        for pred in expected:
            want[pred[head].label] = want.get(pred[head].label, 0) + 1
        assert per_label == want
    assert metrics[("sentiwire_batch_size_count", ())] == metrics[("sentiwire_batches_total", ())]
    assert metrics[("sentiwire_end_to_end_seconds_count", ())] == len(good)
    assert metrics[("sentiwire_processing_seconds_count", ())] == len(good)
    lags = {dict(k[1])["partition"]: v for k, v in metrics.items() if k[0] == "sentiwire_consumer_lag"}
    assert lags == {"0": 0, "1": 0, "2": 0}  # everything sent was committed
    assert metrics[("sentiwire_batch_size_sum", ())] == len(good)
    info = [k for k in metrics if k[0] == "sentiwire_model_info"]
    assert info
    assert dict(info[0][1])["provider"] == "CPUExecutionProvider"
    assert dict(info[0][1])["version"] == clf.bundle.version
    assert metrics[("sentiwire_ready", ())] == 1


async def test_backpressure_bounds_in_flight(
    kafka_bootstrap: str, kafka_topic_factory, tiny_bundle: Path, tmp_path: Path
) -> None:
    """A backlog far larger than max_in_flight: fetched-but-unacknowledged never exceeds the bound,
    fetching pauses, and everything is still labeled."""
    topic, labels, dlq = kafka_topic_factory(2), kafka_topic_factory(2), kafka_topic_factory(1)
    n, bound = 3000, 64
    await produce(
        kafka_bootstrap, topic, json_messages([f"Backlog item {i} beat estimates." for i in range(n)])
    )
    cfg = daemon_config(
        bootstrap=kafka_bootstrap,
        bundle=tiny_bundle,
        topics=topic,
        labels=labels,
        dlq=dlq,
        group="backpressure",
        batching={"max_batch_size": 16, "max_in_flight": bound},
    )
    peak, paused_seen = 0, False
    async with running_daemon(settings_from(tmp_path, cfg)) as daemon:
        assert daemon.pipeline is not None
        reg = daemon.metrics.registry
        while (reg.get_sample_value("sentiwire_messages_published_total", {"topic": labels}) or 0) < n:
            peak = max(peak, daemon.pipeline.in_flight)
            paused_seen |= reg.get_sample_value("sentiwire_fetch_paused") == 1
            await asyncio.sleep(0.002)
    assert peak <= bound
    assert peak >= bound // 2  # the bound was actually reached: this is a backlog
    assert paused_seen
    out = await consume_all(kafka_bootstrap, labels, n, timeout_s=30)
    assert len({orjson.loads(r.value)["id"] for r in out}) == n


async def test_alert_engine_runs_in_process(
    kafka_bootstrap: str, kafka_topic_factory, tiny_bundle: Path, tmp_path: Path
) -> None:
    topic, labels, dlq = kafka_topic_factory(1), kafka_topic_factory(1), kafka_topic_factory(1)
    cfg = daemon_config(
        bootstrap=kafka_bootstrap,
        bundle=tiny_bundle,
        topics=topic,
        labels=labels,
        dlq=dlq,
        group="with-alerts",
        alerts={"enabled": True, "alerts_topic": f"{labels}.alerts", "state_topic": f"{labels}.state"},
    )
    async with running_daemon(settings_from(tmp_path, cfg)) as daemon:
        assert daemon.alerts is not None
        for _ in range(200):
            if daemon.alerts.ready:
                break
            await asyncio.sleep(0.05)
        assert daemon.alerts.ready
        assert daemon.healthy()[0]
    assert daemon.exit_code == 0


async def test_oversized_records_leave_out_text_or_value(
    kafka_bootstrap: str, kafka_topic_factory, tiny_bundle: Path, tmp_path: Path
) -> None:
    topic, labels, dlq = kafka_topic_factory(1), kafka_topic_factory(1), kafka_topic_factory(1)
    big = "Revenue grew strongly across all regions. " * 80  # ~3.4 KB: fine as input, too big as a label
    await produce(kafka_bootstrap, topic, [*json_messages(["Short headline.", big]), b"\xff" * 3000])
    await produce(kafka_bootstrap, topic, [None], keys=[b"gone"])  # a tombstone
    cfg = daemon_config(
        bootstrap=kafka_bootstrap,
        bundle=tiny_bundle,
        topics=topic,
        labels=labels,
        dlq=dlq,
        group="big-label",
        output={"max_record_bytes": 2048},
    )
    async with running_daemon(settings_from(tmp_path, cfg)):
        out = await consume_all(kafka_bootstrap, labels, 2, timeout_s=30)
        dead = await consume_all(kafka_bootstrap, dlq, 2, timeout_s=30)
    values = {v["id"]: v for v in (orjson.loads(r.value) for r in out)}
    assert values["m0"]["text"] == "Short headline."
    assert "text_omitted" not in values["m0"]
    assert "text" not in values["m1"]
    assert values["m1"]["text_omitted"] is True
    assert values["m1"]["truncated"] is True
    jsonschema.validate(values["m1"], SCHEMA)
    assert len(dead) == 2
    dropped, tombstone = sorted(dead, key=lambda r: r.offset)
    # A 3 KB non-UTF-8 value: dead-lettered without its too-big value (and no key: an empty value).
    assert dropped.value == b""
    assert dict(dropped.headers)[H_ERROR] == b"not_utf8"
    assert dict(dropped.headers)["sentiwire.value_dropped"] == b"original value was 3000 bytes"
    # A tombstone: dead-lettered (missing_text) with its key, not a crash.
    assert tombstone.key == b"gone"
    assert tombstone.value is None
    assert dict(tombstone.headers)[H_ERROR] == b"missing_text"
    assert dict(tombstone.headers)[H_SOURCE_OFFSET] == b"3"


class _PoisonedClassifier(Classifier):
    """The real classifier, except that it fails on texts containing POISON (or on everything)."""

    fail_all = False

    def encode(self, texts):  # type: ignore[no-untyped-def]
        if self.fail_all or any("POISON" in t for t in texts):
            raise RuntimeError("tokenizer exploded")
        return super().encode(texts)


@pytest.mark.parametrize("fail_all", [False, True])
async def test_model_failure_on_one_message_dead_letters_it(
    fail_all: bool, kafka_bootstrap: str, kafka_topic_factory, tiny_bundle: Path, tmp_path: Path
) -> None:
    topic, labels, dlq = kafka_topic_factory(1), kafka_topic_factory(1), kafka_topic_factory(1)
    texts = [f"Normal headline {i}." for i in range(20)]
    texts[7] = "POISON pill"
    await produce(kafka_bootstrap, topic, json_messages(texts))
    cfg = daemon_config(
        bootstrap=kafka_bootstrap, bundle=tiny_bundle, topics=topic, labels=labels, dlq=dlq, group="poison"
    )

    def loader(model_cfg):  # type: ignore[no-untyped-def]
        clf = _PoisonedClassifier(load_bundle(model_cfg.path))
        clf.fail_all = fail_all
        return clf

    daemon = Daemon(settings_from(tmp_path, cfg), registry=CollectorRegistry(), loader=loader)
    task = asyncio.create_task(daemon.run())
    if (
        fail_all
    ):  # a broken model is not "bad messages": the daemon stops (exit 1) instead of dead-lettering all
        assert await asyncio.wait_for(task, timeout=60) == 1
        assert not await read_topic(kafka_bootstrap, dlq)
        return
    try:
        out = await consume_all(kafka_bootstrap, labels, 19, timeout_s=30)
        dead = await consume_all(kafka_bootstrap, dlq, 1, timeout_s=30)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, timeout=30) == 0
    assert sorted(orjson.loads(r.value)["id"] for r in out) == sorted(f"m{i}" for i in range(20) if i != 7)
    assert len(dead) == 1
    assert dict(dead[0].headers)[H_ERROR] == b"inference_error"
    assert orjson.loads(dead[0].value)["text"] == "POISON pill"  # the original bytes
