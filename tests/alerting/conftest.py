"""Fixtures of the alerting tests that start the real daemon."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

SEED = 4


@pytest.fixture(scope="session")
def spike_model(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path
) -> tuple[Path, list[str], list[str]]:
    """(bundle, texts it labels negative, texts it labels otherwise), real tweets.

    The model is a tiny random network (seed 4 labels real tweets with both negative and
    neutral, unlike the session's ``tiny_bundle``). Its labels are not meaningful, so tests
    pick their inputs by what this model says.
    """
    from streamer.model.bundle import load_bundle
    from streamer.model.classifier import Classifier
    from training.testing import build_tiny_bundle

    bundle = build_tiny_bundle(
        tmp_path_factory.mktemp("spike-model") / "bundle", version="tiny-spike", seed=SEED
    )
    with (shared_data / "twitter-financial-news-sentiment" / "valid.csv").open(encoding="utf-8") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)][:1500]
    preds = Classifier(load_bundle(bundle)).predict(texts)
    neg = [t for t, p in zip(texts, preds, strict=True) if p["sentiment"].label == "negative"]
    other = [t for t, p in zip(texts, preds, strict=True) if p["sentiment"].label != "negative"]
    if len(neg) < 100 or len(other) < 200:
        pytest.fail(
            f"tiny model seed {SEED} no longer mixes labels ({len(neg)} negative, {len(other)} other)"
        )
    return bundle, neg, other
