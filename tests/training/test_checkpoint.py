"""Resumable training: a stopped run resumed from its checkpoint ends where an unstopped one does."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamer.model.bundle import load_bundle
from streamer.model.classifier import Classifier
from training.config import TrainConfig, TrainError
from training.data import parse_source
from training.trainer import train

pytestmark = pytest.mark.train


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "news" / "news.csv"
    path.parent.mkdir()
    labels = ("positive", "negative", "neutral")
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows((f"shares {('rose', 'fell', 'held')[i % 3]} by {i}%", labels[i % 3]) for i in range(60))
    return path


def cfg(data: Path, out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "data": [parse_source(f"sentiment={data}")],
        "base_model": "random:tiny",
        "epochs": 2,
        "steps_per_epoch": 6,
        "batch_size": 8,
        "max_length": 24,
        "lr": 1e-3,
        "length_buckets": 2,
        "patience": 5,
        "force": True,
        "progress": False,
        "output": str(out),
    }
    return TrainConfig(**{**base, **kw})


def test_resumed_run_matches_an_uninterrupted_one(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import training.dataset as dataset

    straight = load_bundle(train(cfg(data, tmp_path / "a")))

    real, calls = dataset.collate, {"n": 0}

    def collate_then_interrupt(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset, "collate", collate_then_interrupt)
    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        train(cfg(data, out, checkpoint_every=4))
    ckpt = tmp_path / "b.checkpoint.pt"
    assert ckpt.is_file()
    assert not out.exists()
    monkeypatch.setattr(dataset, "collate", real)
    steps = {"n": 0}

    def counting(*args: Any, **kwargs: Any) -> Any:
        steps["n"] += 1
        return real(*args, **kwargs)

    with pytest.raises(
        TrainError, match=r"b\.checkpoint\.pt: checkpoint of another run \(differs in \['lr'\]\)"
    ):
        train(cfg(data, out, checkpoint_every=4, resume=True, lr=2e-3))
    capsys.readouterr()
    monkeypatch.setattr(dataset, "collate", counting)
    resumed = load_bundle(train(cfg(data, out, checkpoint_every=4, resume=True)))
    assert "at step 8" in capsys.readouterr().err
    assert steps["n"] == 12 - 8  # only the steps after the checkpoint were trained
    assert not ckpt.exists()  # removed once the bundle is written
    assert resumed.manifest["metrics"] == straight.manifest["metrics"]
    texts = ["shares rose by 3%", "shares fell", "held steady"]
    a, b = Classifier(straight), Classifier(resumed)
    assert np.allclose(
        a.infer(a.encode(texts))["sentiment"], b.infer(b.encode(texts))["sentiment"], atol=1e-6
    )


def test_resume_needs_no_time_budget(data: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="--resume cannot be combined with --max-train-minutes"):
        train(cfg(data, tmp_path / "c", resume=True, max_train_minutes=5))


def test_weights_kept_by_a_failed_export_export_without_training(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed export keeps the trained weights; ``--from-weights`` exports those (with the
    same recipe) and trains nothing; another recipe is refused, naming what differs."""
    import training.export as export
    import training.trainer as trainer
    from training.export import ExportError

    out = tmp_path / "b"
    with monkeypatch.context() as m:
        m.setattr(export, "PARITY_TOLERANCE", 0.0)  # no fp32 graph can match torch
        with pytest.raises(ExportError, match="--from-weights") as err:
            train(cfg(data, out, force=False))
    (kept,) = tmp_path.glob(".b.failed-export-*.pt")
    assert str(kept) in str(err.value)
    assert not out.exists()

    def no_training(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("--from-weights must not train")

    monkeypatch.setattr(trainer, "run_loop", no_training)
    with pytest.raises(TrainError, match=r"another recipe \(differs in \['lr'\]\)"):
        train(cfg(data, out, from_weights=str(kept), lr=5e-4))
    bundle = load_bundle(train(cfg(data, out, from_weights=str(kept))))  # force: True
    (history,) = bundle.manifest["history"]
    assert history["evals"]  # the kept run's evaluations, not an empty re-export
    assert bundle.manifest["recipe"]["from_weights"] is None  # a re-run of the recipe trains
    again = load_bundle(train(cfg(data, tmp_path / "c", from_weights=str(kept))))
    texts = ["shares rose by 3%", "shares fell by 9%"]
    same = [Classifier(b).predict(texts) for b in (bundle, again)]
    assert [[p.scores for p in row.values()] for row in same[0]] == [
        [p.scores for p in row.values()] for row in same[1]
    ]
