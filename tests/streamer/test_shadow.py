"""Shadow model: config errors name the field; comparisons, agreement and drops, without a broker."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streamer.config import ConfigError, ModelConfig, ShadowConfig
from streamer.metrics import Metrics
from streamer.model.bundle import Bundle, HeadSpec
from streamer.model.classifier import BatchResult, Classifier, HeadPrediction
from streamer.shadow import Shadow, shadow_model_config
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
