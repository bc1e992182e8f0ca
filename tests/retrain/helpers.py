"""Real labeled rows for retraining tests, and the tiny-but-trainable recipe they use.

Review sentences (UCI, negative/positive) are learnable by the tiny random BERT in seconds;
a "worse" model is produced honestly by training on the same rows with shuffled labels.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SENTIMENT = ["negative", "neutral", "positive"]
# Three keyword-rich topics of the real topic set: learnable by the tiny model in seconds.
TOPICS = ["Dividend", "Energy | Oil", "Fed | Central Banks"]


@dataclass(frozen=True)
class Splits:
    base_shuffled: Path  # what the weak "current" model was trained on
    new_good: Path  # new, correctly labeled rows
    new_bad: Path  # new rows with their labels shuffled
    holdout: Path  # correctly labeled rows no model trains on


def _write(path: Path, rows: list[dict[str, str]], *, shuffle_labels: bool = False, seed: int = 1) -> Path:
    labels = [r["label"] for r in rows]
    if shuffle_labels:
        random.Random(seed).shuffle(labels)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["text", "label"])
        w.writerows((r["text"], lab) for r, lab in zip(rows, labels, strict=True))
    return path


def make_splits(shared_data: Path, out: Path) -> Splits:
    with (shared_data / "uci-review-sentences" / "all.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    random.Random(0).shuffle(rows)
    out.mkdir(parents=True, exist_ok=True)
    return Splits(
        base_shuffled=_write(out / "base_shuffled.csv", rows[:600], shuffle_labels=True),
        new_good=_write(out / "new_good.csv", rows[600:1400]),
        new_bad=_write(out / "new_bad.csv", rows[1400:2200], shuffle_labels=True, seed=2),
        holdout=_write(out / "holdout.csv", rows[2400:2900]),
    )


def _train_served(
    models: Path, version: str, name: str, data: list[Any], labels: dict[str, list[str]]
) -> Path:
    """Train a "served" bundle with the tiny recipe through the real trainer; link models/current to it."""
    from training.config import RANDOM_TINY, TrainConfig
    from training.retrain.registry import swap_symlink
    from training.trainer import train

    cfg = TrainConfig(
        data=data,
        labels=labels,
        base_model=RANDOM_TINY,
        output=str(models / "versions" / version),
        version=version,
        name=name,
        epochs=8,
        lr=3e-3,
        batch_size=32,
        threads=1,
        progress=False,
        force=True,  # random tiny weights: int8 agreement reported, not enforced
    )
    path = train(cfg)
    swap_symlink(models / "current", path)
    return path


def train_current(data: Path, models: Path, version: str = "v0") -> Path:
    """The served sentiment-only bundle (review sentences)."""
    from training.data import SourceSpec

    return _train_served(
        models,
        version,
        "sentiwire-retrain-test",
        [SourceSpec("sentiment", str(data))],
        {"sentiment": SENTIMENT},
    )


@dataclass(frozen=True)
class TwoHeads:
    sentiment: Path  # correctly labeled review sentences, none of them in Splits' files but new_bad's
    topic: Path  # real finance tweets of TOPICS, balanced


def make_two_heads(shared_data: Path, out: Path, per_topic: int = 200) -> TwoHeads:
    with (shared_data / "uci-review-sentences" / "all.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    random.Random(0).shuffle(rows)  # the order make_splits uses: rows[1400:2200] are new_bad's texts
    with (shared_data / "twitter-financial-news-topic" / "train.csv").open(
        encoding="utf-8", newline=""
    ) as fh:
        tweets = [r for r in csv.DictReader(fh) if r["label"] in TOPICS]
    random.Random(0).shuffle(tweets)
    topic = [r for t in TOPICS for r in [x for x in tweets if x["label"] == t][:per_topic]]
    out.mkdir(parents=True, exist_ok=True)
    return TwoHeads(
        sentiment=_write(out / "sentiment_base.csv", rows[1400:2200]),
        topic=_write(out / "topic_base.csv", topic),
    )


def train_two_heads(data: TwoHeads, models: Path, version: str = "v0") -> Path:
    """A served bundle with a sentiment and a topic head, both trained on correct labels."""
    from training.data import SourceSpec

    return _train_served(
        models,
        version,
        "sentiwire-gate-test",
        [
            SourceSpec("sentiment", str(data.sentiment), name="sentiment-base"),
            SourceSpec("topic", str(data.topic), name="topic-base"),
        ],
        {"sentiment": SENTIMENT, "topic": TOPICS},
    )
