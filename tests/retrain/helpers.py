"""Real labeled rows for retraining tests, and the tiny-but-trainable recipe they use.

Review sentences (UCI, negative/positive) are learnable by the tiny random BERT in seconds;
a "worse" model is produced honestly by training on the same rows with shuffled labels.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

SENTIMENT = ["negative", "neutral", "positive"]


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


def train_current(data: Path, models: Path, version: str = "v0") -> Path:
    """Train the "served" bundle through the real trainer and link models/current to it."""
    from training.config import RANDOM_TINY, TrainConfig
    from training.data import SourceSpec
    from training.retrain.registry import swap_symlink
    from training.trainer import train

    cfg = TrainConfig(
        data=[SourceSpec("sentiment", str(data))],
        labels={"sentiment": SENTIMENT},
        base_model=RANDOM_TINY,
        output=str(models / "versions" / version),
        version=version,
        name="sentiwire-retrain-test",
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
