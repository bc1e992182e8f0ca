"""Tiny real model bundles for tests, benchmarks and demos: a random BERT, the MiniLM tokenizer.

``build_tiny_bundle`` goes through the real export path (torch.onnx.export, int8
quantization, parity check, manifest with sha256) in seconds; ``copy_bundle_as`` re-versions a
bundle through the real manifest writer (hot-reload and promotion tests). It needs torch, so it
lives here and not in ``streamer.testing``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

TINY_HEADS = {
    "sentiment": ("negative", "neutral", "positive"),
    "topic": ("Earnings", "Macro", "M&A | Investments", "Stock Commentary"),
}
TINY_MAX_LENGTH = 64


def build_tiny_bundle(out_dir: Path, version: str = "tiny-1", seed: int = 0) -> Path:
    """Export a freshly initialised tiny multi-head model as a complete bundle."""
    import torch

    from streamer.model.bundle import HeadSpec
    from training.base_models import minilm_dir
    from training.export import build_bundle
    from training.model import TINY_BERT, MultiHeadClassifier, random_encoder

    torch.manual_seed(seed)
    encoder, hidden = random_encoder(TINY_BERT)
    heads = [HeadSpec(name, labels) for name, labels in TINY_HEADS.items()]
    model = MultiHeadClassifier(encoder, hidden, heads)
    return build_bundle(
        model,
        tokenizer_file=minilm_dir() / "tokenizer.json",
        out_dir=out_dir,
        name="sentiwire-tiny",
        version=version,
        max_length=TINY_MAX_LENGTH,
        base_model={"name": "tiny-random-bert", "sha256": None, "config": TINY_BERT, "seed": seed},
        parity_texts=[
            "Shares of $ACME fell 12% after the profit warning.",
            "The company reported record quarterly revenue.",
            "Fed holds rates steady.",
        ],
        metrics={},
        recipe={"kind": "tiny-random-fixture", "seed": seed},
        force=True,  # random weights: int8 agreement is reported, not enforced
    )


def copy_bundle_as(src: Path, dst: Path, version: str) -> Path:
    """Same weights, new version, manifest rewritten and re-hashed by the real writer."""
    from streamer.model.bundle import read_manifest, write_manifest

    shutil.copytree(src, dst)
    manifest = read_manifest(dst)
    manifest["version"] = version
    write_manifest(dst, manifest)
    return dst
