"""The MiniLM bundle every benchmark runs: the trained one if present, else real MiniLM
weights with random heads (throughput does not depend on what the heads learned).
"""

from __future__ import annotations

import csv
from pathlib import Path

from sentiwire.paths import REPO_ROOT
from streamer.model.bundle import load_bundle

TRAINED = REPO_ROOT / "models" / "sentiwire-minilm"
# The served recipe's max_length (MINILM_RECIPE in the Makefile), so both bundles cost the same.
MAX_LENGTH = 64
RANDOM_HEADS = REPO_ROOT / ".cache" / "bench" / f"minilm-random-heads-{MAX_LENGTH}"
SENTIMENT = ("negative", "neutral", "positive")


def topic_labels(data_dir: Path) -> tuple[str, ...]:
    """The 20 finance topics, read from the real topic data set."""
    with (data_dir / "twitter-financial-news-topic" / "train.csv").open(newline="", encoding="utf-8") as fh:
        return tuple(sorted({row["label"] for row in csv.DictReader(fh)}))


def build_random_heads(out_dir: Path, data_dir: Path) -> Path:
    """Export pretrained MiniLM + randomly initialised sentiment/topic heads through the real export."""
    import torch

    from streamer.model.bundle import HeadSpec
    from training.base_models import minilm_dir
    from training.export import build_bundle
    from training.model import MultiHeadClassifier, load_encoder

    torch.manual_seed(0)
    encoder, hidden = load_encoder(minilm_dir())
    heads = [HeadSpec("sentiment", SENTIMENT), HeadSpec("topic", topic_labels(data_dir))]
    model = MultiHeadClassifier(encoder, hidden, heads)
    return build_bundle(
        model,
        tokenizer_file=minilm_dir() / "tokenizer.json",
        out_dir=out_dir,
        name="sentiwire-minilm-bench",
        version="bench-random-heads",
        max_length=MAX_LENGTH,
        base_model={"name": "sentence-transformers/all-MiniLM-L6-v2", "sha256": None},
        parity_texts=[
            "Shares of $ACME fell 12% after the profit warning.",
            "The company reported record quarterly revenue.",
            "Fed holds rates steady.",
        ],
        recipe={"kind": "bench: pretrained MiniLM encoder, random heads, untrained"},
        force=True,  # random heads: int8 agreement is reported, not enforced
        overwrite=True,
    )


def bench_bundle(data_dir: Path, explicit: Path | None = None) -> Path:
    """``explicit`` > models/sentiwire-minilm > the cached random-heads export (built once)."""
    for candidate in (explicit, TRAINED):
        if candidate is not None and (candidate / "bundle.json").exists():
            load_bundle(candidate)
            return candidate
    if explicit is not None:
        raise FileNotFoundError(f"{explicit}: no bundle.json")
    if (RANDOM_HEADS / "bundle.json").exists():
        load_bundle(RANDOM_HEADS)
        return RANDOM_HEADS
    return build_random_heads(RANDOM_HEADS, data_dir)
