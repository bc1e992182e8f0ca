"""Shadow model: config errors name the field; comparisons, agreement and drops, without a broker."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry

from streamer.config import ConfigError, ModelConfig, ShadowConfig
from streamer.metrics import Metrics
from streamer.model.bundle import Bundle, HeadSpec
from streamer.model.classifier import BatchResult, Classifier, HeadPrediction
from streamer.records import Source
from streamer.shadow import Shadow, shadow_model_config
from streamer.testing import FakeProducer
from tests.streamer.helpers import settings_from

HEADS: list[dict[str, object]] = [{"name": "sentiment", "labels": ["negative", "neutral", "positive"]}]


def manifest_dir(path: Path, heads: list[dict[str, object]]) -> Path:
    """Just a bundle.json: what config validation reads (the bundle itself is verified at load)."""
    path.mkdir(parents=True)
    (path / "bundle.json").write_text(
        json.dumps({"name": "b", "version": "1", "heads": heads}), encoding="utf-8"
    )
    return path


def config_error(tmp_path: Path, model: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as err:
        settings_from(tmp_path, {"model": model})
    return str(err.value)


def test_bad_shadow_config_names_the_field(tmp_path: Path) -> None:
    live = manifest_dir(tmp_path / "live", HEADS)
    missing = config_error(tmp_path, {"path": str(live), "shadow": {"path": str(tmp_path / "nope")}})
    assert "model.shadow.path" in missing
    assert "no bundle at" in missing
    for fraction in (-0.1, 1.5):
        msg = config_error(
            tmp_path, {"path": str(live), "shadow": {"path": str(live), "sample_fraction": fraction}}
        )
        assert "model.shadow.sample_fraction" in msg
    other = manifest_dir(tmp_path / "other", [{"name": "topic", "labels": ["a", "b"]}])
    msg = config_error(tmp_path, {"path": str(live), "shadow": {"path": str(other)}})
    assert "model.shadow.path" in msg
    assert "differ" in msg
    ok = settings_from(tmp_path, {"model": {"path": str(live), "shadow": {"path": str(live)}}})
    assert ok.model.shadow is not None
    assert ok.model.shadow.sample_fraction == 0.1


def test_shadow_model_config_is_one_thread_per_batch_without_cache(tmp_path: Path) -> None:
    live = manifest_dir(tmp_path / "live", HEADS)
    cfg = ModelConfig(path=live, shadow=ShadowConfig(path=live, max_in_flight=3))
    assert cfg.shadow is not None
    sc = shadow_model_config(cfg, cfg.shadow)
    assert (sc.path, sc.shadow, sc.workers, sc.intra_op_threads, sc.cache_entries) == (live, None, 3, 1, 0)


class FakeClassifier:
    """Labels every text with a fixed label; ``gate`` holds run_batch (a slow shadow)."""

    def __init__(self, label: str, gate: threading.Event | None = None) -> None:
        heads = (HeadSpec("sentiment", ("negative", "neutral", "positive")),)
        self.bundle = Bundle(Path("/x"), "fake", label, heads, 64, {})
        self.label = label
        self.gate = gate

    def run_batch(self, texts: list[str], *, bucket: bool = True) -> BatchResult:
        if self.gate is not None:
            self.gate.wait(5)
        return result([self.label] * len(texts))


def result(labels: list[str]) -> BatchResult:
    preds = [
        {
            "sentiment": HeadPrediction(
                lab, 0.9, {"negative": 0.05, "neutral": 0.05, "positive": 0.05, lab: 0.9}
            )
        }
        for lab in labels
    ]
    return BatchResult(preds, [False] * len(labels), 0.0, 0.0, 0, 0)


def make_shadow(tmp_path: Path, fraction: float, shadow_clf: FakeClassifier, in_flight: int = 1) -> Shadow:
    live = manifest_dir(tmp_path / "b", HEADS)
    cfg = ModelConfig(
        path=live,
        reload_interval_s=0,
        shadow=ShadowConfig(path=live, sample_fraction=fraction, max_in_flight=in_flight),
    )
    shadow = Shadow(cfg, Metrics(CollectorRegistry()), loader=lambda _: shadow_clf)  # type: ignore[arg-type, return-value]
    return shadow


def value(sh: Shadow, metric: str, **labels: str) -> float | None:
    return sh.metrics.registry.get_sample_value(metric, labels)


async def test_agreement_confusion_counts_and_confidence(tmp_path: Path) -> None:
    shadow = make_shadow(tmp_path, 1.0, FakeClassifier("positive"))
    live: Classifier = FakeClassifier("positive")  # type: ignore[assignment]
    shadow.offer(live, ["a", "b"], result(["positive", "positive"]))
    assert value(shadow, "sentiwire_shadow_dropped_total", reason="not_loaded") == 2
    assert await shadow.check_once()
    shadow.offer(live, ["a", "b", "c", "d"], result(["positive", "negative", "positive", "positive"]))
    await asyncio.gather(*shadow._running)
    assert shadow.agreement() == {"sentiment": 0.75}
    assert value(shadow, "sentiwire_shadow_agreement", head="sentiment") == 0.75
    assert (
        value(shadow, "sentiwire_shadow_compared_total", head="sentiment", live="negative", shadow="positive")
        == 1
    )
    assert (
        value(shadow, "sentiwire_shadow_compared_total", head="sentiment", live="positive", shadow="positive")
        == 3
    )
    assert value(shadow, "sentiwire_shadow_confidence_count", head="sentiment", model="shadow") == 4
    assert value(shadow, "sentiwire_shadow_info", name="fake", version="positive") == 1
    await shadow.close()


async def test_a_busy_shadow_drops_samples_and_never_blocks(tmp_path: Path) -> None:
    gate = threading.Event()
    shadow = make_shadow(tmp_path, 1.0, FakeClassifier("neutral", gate))
    await shadow.check_once()
    live: Classifier = FakeClassifier("neutral")  # type: ignore[assignment]
    shadow.offer(live, ["a", "b"], result(["neutral", "neutral"]))  # starts, then waits on the gate
    shadow.offer(live, ["c", "d", "e"], result(["neutral"] * 3))  # returns at once: dropped
    assert value(shadow, "sentiwire_shadow_dropped_total", reason="behind") == 3
    gate.set()
    await asyncio.gather(*shadow._running)
    assert shadow.agreement() == {"sentiment": 1.0}
    await shadow.close()


async def test_sample_fraction_zero_runs_nothing(tmp_path: Path) -> None:
    shadow = make_shadow(tmp_path, 0.0, FakeClassifier("neutral"))
    await shadow.check_once()
    shadow.offer(FakeClassifier("neutral"), ["a"], result(["neutral"]))  # type: ignore[arg-type]
    assert not shadow._running
    await shadow.close()


async def test_the_shadow_reloads_on_its_own_and_survives_a_bad_bundle(tmp_path: Path) -> None:
    loads: list[str] = []

    def loader(cfg: ModelConfig) -> Classifier:
        version = json.loads((cfg.path / "bundle.json").read_text(encoding="utf-8"))["version"]
        loads.append(version)
        if version == "broken":
            raise ValueError("sha256 mismatch")
        return FakeClassifier(version)  # type: ignore[return-value]

    path = manifest_dir(tmp_path / "b", HEADS)
    cfg = ModelConfig(path=path, reload_interval_s=0, shadow=ShadowConfig(path=path))
    shadow = Shadow(cfg, Metrics(CollectorRegistry()), loader=loader)
    assert await shadow.check_once()
    assert not await shadow.check_once()  # same bundle: not loaded again

    def rewrite(version: str) -> None:
        (path / "bundle.json").write_text(json.dumps({"version": version, "heads": HEADS}), encoding="utf-8")

    rewrite("broken")
    assert not await shadow.check_once()
    assert shadow.current is not None
    assert shadow.current.bundle.version == "1"  # the previous shadow keeps running
    assert value(shadow, "sentiwire_shadow_reloads_total", result="failure") == 1
    rewrite("2")
    assert await shadow.check_once()
    assert shadow.current.bundle.version == "2"
    assert value(shadow, "sentiwire_shadow_info", name="fake", version="2") == 1
    assert value(shadow, "sentiwire_shadow_info", name="fake", version="1") is None
    assert loads == ["1", "broken", "2"]
    await shadow.close()


async def loaded(shadow: Shadow) -> None:
    for _ in range(100):
        if shadow.current is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the shadow bundle did not load")


class BrokenProducer(FakeProducer):
    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: Any = None
    ) -> Any:
        raise KafkaConnectionError("broker gone")


async def test_shadow_labels_topic_gets_each_compared_message_with_its_source(tmp_path: Path) -> None:
    live_dir = manifest_dir(tmp_path / "b", HEADS)
    cfg = ModelConfig(
        path=live_dir, reload_interval_s=0, shadow=ShadowConfig(path=live_dir, sample_fraction=1.0)
    )
    good = FakeProducer()
    for producer, outcome in ((good, "ok"), (BrokenProducer(), "failed")):
        shadow = Shadow(
            cfg,
            Metrics(CollectorRegistry()),
            loader=lambda _: FakeClassifier("positive"),  # type: ignore[arg-type, return-value]
            labels_topic="shadow-labels",
            producer=producer,
        )
        shadow.start()  # loads the bundle (its watcher) and starts the producer
        await loaded(shadow)
        live: Classifier = FakeClassifier("live")  # type: ignore[assignment]
        sources = [Source("news", 2, 40 + i, 1_700_000_000_000 + i, key=f"k{i}".encode()) for i in range(2)]
        shadow.offer(live, ["a", "b"], result(["positive", "negative"]), sources)
        await asyncio.gather(*shadow._running)
        assert value(shadow, "sentiwire_shadow_labels_published_total", result=outcome) == 2
        assert shadow.agreement() == {"sentiment": 0.5}  # compared either way
        await shadow.close()
        assert producer.events[0] == "start"
        assert producer.events[-1] == "stop"
    assert [t for t, _ in good.sent] == ["shadow-labels"] * 2
    assert good.keys == [b"k0", b"k1"]
    docs = [json.loads(v or b"") for _, v in good.sent]
    assert docs[1]["source"] == {
        "topic": "news",
        "partition": 2,
        "offset": 41,
        "timestamp": 1_700_000_000_001,
    }
    assert docs[1]["live"]["model"] == {"name": "fake", "version": "live"}
    assert docs[1]["shadow"]["model"] == {"name": "fake", "version": "positive"}
    assert docs[1]["live"]["labels"]["sentiment"]["label"] == "negative"
    assert docs[1]["shadow"]["labels"]["sentiment"] == {"label": "positive", "score": 0.9}
    assert [d["agree"] for d in docs] == [{"sentiment": True}, {"sentiment": False}]


def test_shadow_labels_topic_needs_a_shadow_and_its_own_topic(tmp_path: Path) -> None:
    live = manifest_dir(tmp_path / "live", HEADS)
    with pytest.raises(ConfigError, match=r"output.shadow_labels_topic needs model.shadow"):
        settings_from(tmp_path, {"model": {"path": str(live)}, "output": {"shadow_labels_topic": "s"}})
    with pytest.raises(ConfigError, match=r"output.shadow_labels_topic 'labels' is also"):
        settings_from(
            tmp_path,
            {
                "model": {"path": str(live), "shadow": {"path": str(live)}},
                "output": {"labels_topic": "labels", "shadow_labels_topic": "labels"},
            },
        )
    ok = settings_from(
        tmp_path,
        {"model": {"path": str(live), "shadow": {"path": str(live)}}, "output": {"shadow_labels_topic": "s"}},
    )
    assert ok.output.shadow_labels_topic == "s"


async def test_a_new_shadow_version_starts_every_comparison_series_again(tmp_path: Path) -> None:
    """``sentiwire promote`` reads these series as the loaded version's evidence."""
    versions = iter(["1", "2"])
    path = manifest_dir(tmp_path / "b", HEADS)
    cfg = ModelConfig(path=path, reload_interval_s=0, shadow=ShadowConfig(path=path, sample_fraction=1.0))
    shadow = Shadow(cfg, Metrics(CollectorRegistry()), loader=lambda _: FakeClassifier(next(versions)))  # type: ignore[arg-type, return-value]
    assert await shadow.check_once()
    live: Classifier = FakeClassifier("1")  # type: ignore[assignment]
    shadow.offer(live, ["a", "b"], result(["1", "x"]))
    await asyncio.gather(*shadow._running)
    compared = {"head": "sentiment", "live": "1", "shadow": "1"}
    assert value(shadow, "sentiwire_shadow_compared_total", **compared) == 1
    (path / "bundle.json").write_text(json.dumps({"version": "2", "heads": HEADS}), encoding="utf-8")
    assert await shadow.check_once()
    assert value(shadow, "sentiwire_shadow_compared_total", **compared) is None
    assert value(shadow, "sentiwire_shadow_agreement", head="sentiment") is None
    assert value(shadow, "sentiwire_shadow_confidence_count", head="sentiment", model="shadow") is None
    await shadow.close()
