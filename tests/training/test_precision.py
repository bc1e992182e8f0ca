"""The served-precision gate: int8 within 0.5 point of fp32 on every head's and source's dev metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import training.export as export
from streamer.model.bundle import load_bundle
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


def fake_deltas(bad_levels: set[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    real_quantize, real_measure = export.quantize_int8, MetricDeltas.measure
    seen: list[str] = []

    def quantize(src: Path, dst: Path, level: str = "all") -> None:
        seen.append(level)
        real_quantize(src, dst, level)

    def measure(self: MetricDeltas, int8: Any) -> dict[str, Any]:
        out = real_measure(self, int8)
        return {**out, "max_delta": 0.02} if seen[-1] in bad_levels else out

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


def test_no_level_within_half_a_point_fails_the_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_deltas(set(export.QUANT_LEVELS), monkeypatch)
    with pytest.raises(
        export.ExportError, match=r"moves a dev accuracy/macro-F1 by up to .* at every quantization level"
    ):
        build(tmp_path / "models" / "b")
    assert list((tmp_path / "models").iterdir()) == []  # nothing half-written
    forced = load_bundle(build(tmp_path / "forced", force=True))
    assert forced.manifest["export"]["int8_metrics"]["max_delta"] == 0.02
