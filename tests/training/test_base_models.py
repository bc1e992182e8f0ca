"""Offline base-model resolution and weight verification."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from training.base_models import MINILM_SHA256, BaseModelError, minilm_dir, resolve_base_model


def test_minilm_resolves_offline_with_pinned_sha() -> None:
    base = resolve_base_model("minilm")
    assert base.sha256 == MINILM_SHA256
    assert (base.path / "tokenizer.json").is_file()
    assert base.weights.name == "model.safetensors"


def local_copy(tmp_path: Path) -> Path:
    d = tmp_path / "my-model"
    d.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(minilm_dir() / name, d / name)
    (d / "model.safetensors").symlink_to(minilm_dir() / "model.safetensors")
    return d


def test_local_dir_with_matching_and_mismatching_pin(tmp_path: Path) -> None:
    d = local_copy(tmp_path)
    assert resolve_base_model(str(d)).sha256 == MINILM_SHA256
    (d / "weights.sha256").write_text(MINILM_SHA256 + "  model.safetensors\n")
    assert resolve_base_model(str(d)).name == "my-model"
    (d / "weights.sha256").write_text("0" * 64 + "\n")
    with pytest.raises(BaseModelError, match="does not match the pinned"):
        resolve_base_model(str(d))


def test_local_dir_problems_named(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="neither 'minilm', 'mpnet' nor a model directory"):
        resolve_base_model(str(tmp_path / "nope"))
    d = local_copy(tmp_path)
    (d / "tokenizer.json").unlink()
    with pytest.raises(BaseModelError, match=r"lacks tokenizer\.json"):
        resolve_base_model(str(d))
    (d / "config.json").write_text("{broken")
    with pytest.raises(BaseModelError, match="unreadable model config"):
        resolve_base_model(str(d))
