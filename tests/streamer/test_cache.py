"""The response cache: repeated texts (as the tokenizer normalizes them) reuse their labels,
the label record is the one inference produces, memory is bounded, a reload starts empty."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from tokenizers import Tokenizer

from streamer.config import ModelConfig
from streamer.metrics import Metrics
from streamer.model.bundle import load_bundle
from streamer.model.classifier import BatchResult, Classifier
from streamer.model.loading import load_classifier
from streamer.model.reload import ModelHolder
from streamer.pipeline import Pipeline
from streamer.records import Source, TextMessage, build_label_record
from streamer.testing import ConsumerStub, FakeProducer, FakeRecord, daemon_config
from tests.streamer.helpers import settings_from

TEXTS = [
    "Profit rose sharply in the quarter.",
    "PROFIT rose sharply in the quarter.",
    "Losses widened again.",
]


def _record(clf: Classifier, result: BatchResult, i: int) -> dict[str, object]:
    msg = TextMessage(Source("news", 0, i, 1), f"m{i}", TEXTS[i])
    return build_label_record(
        msg,
        result.predictions[i],
        model_name=clf.bundle.name,
        model_version=clf.bundle.version,
        processed_at_ms=0,
        truncated=result.truncated[i],
        include_text=True,
    )


def test_cached_labels_are_the_ones_inference_gives(tiny_bundle: Path) -> None:
    clf = Classifier(load_bundle(tiny_bundle), cache_entries=100, cache_max_bytes=1 << 20)
    plain = Classifier(load_bundle(tiny_bundle))
    assert not plain.cache.enabled

    first = clf.run_batch(TEXTS)
    assert first.cache_hits == 1  # the upper-cased repeat: the tokenizer lower-cases, so one entry
    assert len(clf.cache) == 2
    again = clf.run_batch(TEXTS)
    assert again.cache_hits == 3
    assert again.real_tokens == 0  # nothing was run through the model

    fresh = plain.run_batch(TEXTS)
    for i in range(len(TEXTS)):
        cached, computed = _record(clf, again, i), _record(plain, fresh, i)
        assert cached == _record(clf, first, i)
        labels_c, labels_f = cached.pop("labels"), computed.pop("labels")
        assert cached == computed
        assert isinstance(labels_c, dict)
        assert isinstance(labels_f, dict)
        for head, got in labels_c.items():
            assert got["label"] == labels_f[head]["label"]
            assert got["scores"] == pytest.approx(labels_f[head]["scores"], abs=1e-5)


def test_the_cache_is_bounded_by_entries_and_bytes(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    by_entries = Classifier(bundle, cache_entries=2, cache_max_bytes=1 << 20)
    result = by_entries.run_batch([f"Company {i} beat estimates." for i in range(5)])
    assert len(by_entries.cache) == 2
    assert result.cache_evictions == 3 == by_entries.cache.evictions
    per_entry = by_entries.cache.entry_bytes
    by_bytes = Classifier(bundle, cache_entries=100, cache_max_bytes=per_entry * 3)
    by_bytes.run_batch([f"Company {i} missed estimates." for i in range(5)])
    assert len(by_bytes.cache) == 3
    assert by_bytes.cache.size_bytes <= per_entry * 3


def test_a_new_model_never_answers_from_the_old_cache(tiny_bundle_factory, tiny_bundle: Path) -> None:
    cfg = ModelConfig(path=tiny_bundle, cache_entries=10)
    old = load_classifier(cfg)
    old.run_batch(TEXTS)
    reloaded = load_classifier(cfg)  # what a hot reload builds
    assert len(reloaded.cache) == 0
    other = Classifier(load_bundle(tiny_bundle_factory("tiny-2")), cache_entries=10, cache_max_bytes=1 << 20)
    assert other.cache_key(TEXTS[0]) != old.cache_key(TEXTS[0])  # the bundle version is in the key


async def test_pipeline_counts_hits_and_misses(tiny_bundle: Path, tmp_path: Path) -> None:
    cfg = daemon_config(
        bootstrap="127.0.0.1:9", bundle=tiny_bundle, topics="news", labels="labels", dlq="dlq", group="g"
    )
    settings = settings_from(tmp_path, cfg)
    metrics = Metrics(CollectorRegistry())
    holder = ModelHolder(load_classifier(settings.model), None, metrics)
    tp = TopicPartition("news", 0)
    values = [orjson.dumps({"id": f"m{i}", "text": "Same syndicated headline."}) for i in range(10)]
    consumer = ConsumerStub(batches=[{tp: [FakeRecord("news", 0, i, v) for i, v in enumerate(values)]}])
    producer = FakeProducer()
    pipeline = Pipeline(settings, consumer, producer, holder, metrics)  # type: ignore[arg-type]
    await pipeline.rebalancer.on_partitions_assigned([tp])
    pipeline.start()
    async with asyncio.timeout(20):
        while len(producer.sent) < 10 or pipeline.in_flight:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert await pipeline.stop(timeout_s=5)
    r = metrics.registry
    assert r.get_sample_value("sentiwire_cache_misses_total") == 1
    assert r.get_sample_value("sentiwire_cache_hits_total") == 9
    assert r.get_sample_value("sentiwire_cache_entries") == 1
    labels = {
        orjson.loads(v)["labels"]["sentiment"]["label"] for t, v in producer.sent if t == "labels" and v
    }
    assert len(labels) == 1


def test_unknown_and_token_counts_come_with_the_labels_cached_or_not(tiny_bundle: Path) -> None:
    """The drift monitor's unknown-token share reads these, so a cache hit must carry them too."""
    clf = Classifier(load_bundle(tiny_bundle), cache_entries=100, cache_max_bytes=1 << 20)
    assert clf.unknown_id is not None
    texts = ["Shares of ACME rose 5% ☃☃☃ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "plain words only"]
    tok = Tokenizer.from_file(str(clf.bundle.tokenizer_path))
    want = [(ids.count(clf.unknown_id), len(ids)) for ids in (tok.encode(t).ids for t in texts)]
    assert want[0][0] > 0  # the symbols are not in the tiny vocabulary
    first = clf.run_batch(texts)
    assert list(zip(first.unknown, first.tokens, strict=True)) == want
    again = clf.run_batch(texts)  # every text from the cache
    assert again.cache_hits == 2
    assert list(zip(again.unknown, again.tokens, strict=True)) == want
