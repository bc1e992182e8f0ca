"""Export gates: int8 quantization levels fall back before the 98% agreement gate fails."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import training.export as export
from streamer.model.bundle import load_bundle

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


def test_fails_when_every_level_disagrees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = fake_agreement(set(export.QUANT_LEVELS), monkeypatch)
    with pytest.raises(export.ExportError, match="at every quantization level"):
        _build(tmp_path / "models" / "b", force=False)
    assert seen == list(export.QUANT_LEVELS)
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
