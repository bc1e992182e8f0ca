"""Export gates: int8 levels fall back before the 99.5% agreement gate fails; a failed gate refuses int8."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import training.export as export
from streamer.enums import Variant
from streamer.model.bundle import load_bundle
from streamer.model.classifier import Classifier
from streamer.model.errors import InferenceError

pytestmark = pytest.mark.train


def fake_agreement(low_levels: set[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Real parity check, but pretend int8 disagrees at the given quantization levels."""
    real_quantize, real_check = export.quantize_int8, export.check_parity
    seen: list[str] = []

    def quantize(src: Path, dst: Path, level: str = "all") -> None:
        seen.append(level)
        real_quantize(src, dst, level)

    def check(*args: Any, **kwargs: Any) -> export.ExportChecks:
        checks = real_check(*args, **kwargs)
        if seen[-1] in low_levels:
            bad = {h: 0.9 for h in checks.int8_agreement}
            return dataclasses.replace(checks, int8_agreement=bad, int8_agreement_min=0.9)
        return checks

    monkeypatch.setattr(export, "quantize_int8", quantize)
    monkeypatch.setattr(export, "check_parity", check)
    return seen


def test_falls_back_to_a_more_conservative_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = fake_agreement({"all"}, monkeypatch)
    b = load_bundle(_build(tmp_path / "b", force=False))
    assert seen == ["all", "ffn-out-fp32"]
    assert b.manifest["export"]["int8_level"] == "ffn-out-fp32"
    assert b.manifest["export"]["int8_tried"]["all"]["sentiment"] == 0.9


def test_every_level_disagreeing_writes_the_bundle_with_int8_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = fake_agreement(set(export.QUANT_LEVELS), monkeypatch)
    b = load_bundle(_build(tmp_path / "models" / "b", force=False))
    assert seen == [*export.QUANT_LEVELS, "all"]  # all equally bad: the first is kept
    gate = b.manifest["export"]["int8_gate"]
    assert gate["passed"] is False
    assert gate["servable"] is False
    assert "label agreement with fp32 {'sentiment': 0.9} < 99.5%" in gate["reason"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["b"]  # no staging directory
    with pytest.raises(InferenceError, match="failed the export precision gate"):
        Classifier(b, variant=Variant.INT8)


def test_a_bundle_from_before_the_recorded_gate_serves_int8(tmp_path: Path) -> None:
    b = load_bundle(_build(tmp_path / "b", force=False))
    del b.manifest["export"]["int8_gate"]  # older bundles passed the all-or-nothing export
    assert b.int8_refusal() is None


def test_fp32_that_does_not_match_torch_fails_the_export_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "PARITY_TOLERANCE", 0.0)
    with pytest.raises(export.ExportError, match="fp32 ONNX logits differ from torch"):
        _build(tmp_path / "models" / "b", force=True)
    assert list((tmp_path / "models").iterdir()) == []  # no bundle, no staging directory


def _build(out: Path, force: bool) -> Path:
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
        force=force,
    )
