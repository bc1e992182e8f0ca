"""The served-precision gate: int8 within 0.5 point of fp32 on every head's and source's dev metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import training.export as export
from streamer.enums import Variant
from streamer.model.bundle import load_bundle
from streamer.model.classifier import Classifier
from streamer.model.errors import InferenceError
from training.precision import MAX_METRIC_DELTA, MetricDeltas, scored_for

pytestmark = pytest.mark.train

HOLDOUT = {
    "sentiment": {
        "news": (
            ["Shares fell 10%", "Profit rose", "The board met on Monday"],
            ["negative", "positive", "neutral"],
        ),
        "reviews": (
            ["Great film", "Awful food", "Works fine", "Broke in a day"],
            ["positive", "negative"] * 2,
        ),
    }
}
SLICES = {"sentiment": {"reviews": ["imdb", "yelp", "amazon", "amazon"]}}


def build(out: Path, force: bool = False) -> Path:
    import torch

    from streamer.model.bundle import HeadSpec
    from training.base_models import minilm_dir
    from training.model import TINY_BERT, MultiHeadClassifier, random_encoder

    torch.manual_seed(0)
    enc, hidden = random_encoder(TINY_BERT)
    model = MultiHeadClassifier(enc, hidden, [HeadSpec("sentiment", ("negative", "neutral", "positive"))])
    return export.build_bundle(
        model,
        tokenizer_file=minilm_dir() / "tokenizer.json",
        out_dir=out,
        name="t",
        version="1",
        max_length=32,
        base_model={"name": "tiny"},
        parity_texts=["Shares fell", "Profit rose"],
        holdout=HOLDOUT,
        holdout_slices=SLICES,
        force=force,
    )


def test_scored_labels() -> None:
    labels = ["negative", "neutral", "positive"]
    assert scored_for(labels, {"negative", "positive"}) == ["negative", "positive"]
    assert scored_for(labels, {"neutral", "positive"}) == labels
    assert scored_for(labels, {"neutral"}, ["positive", "neutral"]) == ["neutral", "positive"]


def test_deltas_stored_per_head_and_source(tmp_path: Path) -> None:
    b = load_bundle(build(tmp_path / "b"))
    gate = b.manifest["export"]["int8_metrics"]
    assert gate["limit"] == MAX_METRIC_DELTA
    assert gate["max_delta"] <= MAX_METRIC_DELTA
    head = gate["heads"]["sentiment"]
    assert set(head["by_source"]) == {"news", "reviews"}
    assert head["overall"]["n"] == 3  # the head's full-label sources only
    reviews = head["by_source"]["reviews"]
    assert reviews["n"] == 4
    assert set(reviews["accuracy"]) == {"fp32", "int8", "delta"}
    assert set(reviews["slices"]) == {"amazon", "imdb", "yelp"}
    assert b.manifest["export"]["int8_max_metric_delta_tried"] == {"all": gate["max_delta"]}


def fake_deltas(bad_levels: set[str] | dict[str, float], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Real measurement, but the given levels move a dev metric by 0.02 (or the value given)."""
    real_quantize, real_measure = export.quantize_int8, MetricDeltas.measure
    moved = bad_levels if isinstance(bad_levels, dict) else dict.fromkeys(bad_levels, 0.02)
    seen: list[str] = []

    def quantize(src: Path, dst: Path, level: str = "all") -> None:
        seen.append(level)
        real_quantize(src, dst, level)

    def measure(self: MetricDeltas, int8: Any) -> dict[str, Any]:
        out = real_measure(self, int8)
        return {**out, "max_delta": moved[seen[-1]]} if seen[-1] in moved else out

    monkeypatch.setattr(export, "quantize_int8", quantize)
    monkeypatch.setattr(MetricDeltas, "measure", measure)
    return seen


def test_a_metric_moved_by_int8_falls_back_to_the_next_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = fake_deltas({"all"}, monkeypatch)
    b = load_bundle(build(tmp_path / "b"))
    assert seen == ["all", "ffn-out-fp32"]
    assert b.manifest["export"]["int8_level"] == "ffn-out-fp32"
    assert b.manifest["export"]["int8_max_metric_delta_tried"]["all"] == 0.02
    assert b.manifest["export"]["int8_gate"] == {"passed": True, "servable": True, "reason": ""}
    Classifier(b, variant=Variant.INT8)  # servable


def test_no_level_within_half_a_point_ships_fp32_and_refuses_int8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = fake_deltas({"all": 0.03, "ffn-out-fp32": 0.01, "ffn-fp32": 0.02}, monkeypatch)
    b = load_bundle(build(tmp_path / "models" / "b"))  # written: its fp32 graph is fine
    # every level tried, then the least bad one re-quantized and kept (measured, not servable)
    assert seen == [*export.QUANT_LEVELS, "ffn-out-fp32"]
    exp = b.manifest["export"]
    assert exp["int8_level"] == "ffn-out-fp32"
    assert exp["int8_metrics"]["max_delta"] == 0.01
    assert exp["int8_gate"]["passed"] is False
    assert exp["int8_gate"]["servable"] is False
    assert "by 0.0100 > 0.005" in exp["int8_gate"]["reason"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["b"]  # no staging left
    Classifier(b, variant=Variant.FP32)
    with pytest.raises(InferenceError, match=r"int8 graph failed the export precision gate .* --force"):
        Classifier(b, variant=Variant.INT8)
    Classifier(b, variant=Variant.INT8, failed_int8_ok=True)  # benchmarks may still time it

    forced = load_bundle(build(tmp_path / "forced", force=True))
    assert forced.manifest["export"]["int8_gate"]["passed"] is False
    assert forced.manifest["export"]["int8_gate"]["servable"] is True
    Classifier(forced, variant=Variant.INT8)  # --force accepted it
