"""Retrain pieces without training: the decision, the symlink swap, data preparation, the CLI."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from training.data import SourceSpec
from training.retrain.decision import decide
from training.retrain.errors import RetrainError
from training.retrain.newdata import split_holdout
from training.retrain.registry import ModelsDir, adopt, append_history, read_history, swap_symlink


def m(f1: float, n: int = 100) -> dict[str, float]:
    return {"macro_f1": f1, "n": n}


def test_decide_promotes_within_tolerance_per_head() -> None:
    d = decide({"sentiment": m(0.80), "topic": m(0.60)}, {"sentiment": m(0.79), "topic": m(0.70)}, 0.01)
    assert d.promote, d.reason
    assert [h.head for h in d.heads] == ["sentiment", "topic"]
    assert d.to_json()["heads"]["topic"]["delta"] == pytest.approx(0.10)


def test_decide_refuses_when_any_head_drops_more_than_tolerance() -> None:
    d = decide({"sentiment": m(0.80), "topic": m(0.60)}, {"sentiment": m(0.95), "topic": m(0.58)}, 0.01)
    assert not d.promote
    assert "topic 0.6000 -> 0.5800 (-0.0200)" in d.reason
    assert "sentiment" not in d.reason.split(":", 1)[1]


def test_decide_refuses_unjudged_candidates() -> None:
    assert not decide({}, {"sentiment": m(0.9)}, 0.01).promote
    d = decide({"sentiment": m(0.5), "topic": m(0.5)}, {"sentiment": m(0.9)}, 0.01)
    assert not d.promote
    assert "no score for head(s) ['topic']" in d.reason
    with pytest.raises(RetrainError, match="tolerance"):
        decide({"sentiment": m(0.5)}, {"sentiment": m(0.5)}, -0.1)


def test_decide_refuses_when_a_served_head_has_no_score() -> None:
    d = decide(
        {"sentiment": m(0.5)}, {"sentiment": m(0.9), "topic": m(0.9)}, 0.01, heads=["sentiment", "topic"]
    )
    assert not d.promote
    assert "head(s) ['topic'] cannot be scored" in d.reason
    assert decide({"sentiment": m(0.5)}, {"sentiment": m(0.9)}, 0.01, heads=["sentiment"]).promote


def test_swap_symlink_is_relative_and_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "versions" / "a").mkdir(parents=True)
    (tmp_path / "versions" / "b").mkdir()
    link = tmp_path / "current"
    swap_symlink(link, tmp_path / "versions" / "a")
    assert os.readlink(link) == "versions/a"
    swap_symlink(link, tmp_path / "versions" / "b")
    assert os.readlink(link) == "versions/b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "versions"]


def test_served_path_must_be_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "current").mkdir()
    with pytest.raises(RetrainError, match="must be a symlink"):
        ModelsDir(tmp_path / "current").check()
    dangling = tmp_path / "other"
    dangling.symlink_to("versions/missing")
    with pytest.raises(RetrainError, match="does not exist"):
        ModelsDir(dangling).check()


def test_split_holdout_is_stratified_disjoint_and_seeded() -> None:
    labels = ["a"] * 50 + ["b"] * 30 + ["c"]
    texts = [f"t{i}" for i in range(len(labels))]
    tr, ho = split_holdout(texts, labels, 0.2, seed=1)
    assert set(tr).isdisjoint(ho)
    assert sorted(tr + ho) == list(range(len(labels)))
    assert 80 in tr  # a one-row class cannot be held out
    assert sorted(labels[i] for i in ho).count("a") == 10
    assert split_holdout(texts, labels, 0.2, seed=1) == (tr, ho)
    with pytest.raises(RetrainError, match="too few new rows"):
        split_holdout(["x", "y"], ["a", "b"], 0.2, seed=1)


def test_history_is_append_only_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    append_history(path, {"n": 1})
    append_history(path, {"n": 2})
    assert read_history(path) == [{"n": 1}, {"n": 2}]
    path.write_text(path.read_text() + "{broken\n")
    with pytest.raises(RetrainError, match="line 3"):
        read_history(path)


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


@pytest.mark.train
def test_prepare_data_copies_rows_carves_holdout_and_reports_skips(tiny_bundle: Path, tmp_path: Path) -> None:
    from streamer.model.bundle import load_bundle
    from training.retrain.newdata import prepare_data

    bundle = load_bundle(tiny_bundle)
    rows = [(f"good news {i}", "positive") for i in range(20)] + [
        (f"bad news {i}", "negative") for i in range(20)
    ]
    rows += [
        ("good news 0", "positive"),
        ("what?", "sarcastic"),
    ]  # a duplicate of a row, a label the head lacks
    src = _csv(tmp_path / "new.csv", rows)
    out = tmp_path / "data" / "v1"
    prep = prepare_data(bundle, [SourceSpec("sentiment", str(src))], [], out, fraction=0.25, seed=3)
    assert any("skipped 1 row(s)" in n for n in prep.notes)
    with Path(prep.train[0].path).open(encoding="utf-8") as fh:
        train_rows = list(csv.DictReader(fh))
    held = prep.holdout["sentiment"][0]
    assert Path(prep.train[0].path).parent == out
    assert len(held.texts) == 10
    # No holdout text trains the candidate, the duplicate included.
    assert not {r["text"] for r in train_rows} & set(held.texts)
    assert len(train_rows) + len(held.texts) <= 41
    assert {r["label"] for r in train_rows} <= {"positive", "negative"}

    with pytest.raises(RetrainError, match="head 'mood' is not served"):
        prepare_data(bundle, [SourceSpec("mood", str(src))], [], out, fraction=0.25, seed=3)


@pytest.mark.train
def test_bundle_without_a_usable_recipe_cannot_be_retrained(
    tiny_bundle_factory: Callable[..., Path], tmp_path: Path
) -> None:
    from streamer.model.bundle import load_bundle, read_manifest, write_manifest
    from training.retrain.run import RetrainOptions, candidate_config

    path = tiny_bundle_factory("norecipe", tmp_path / "b")
    with pytest.raises(RetrainError, match="no training recipe"):
        candidate_config(load_bundle(path), RetrainOptions(served=path), [], tmp_path / "c")
    manifest = read_manifest(path)
    manifest["recipe"] = {"data": [], "learning_rate_typo": 1}
    write_manifest(path, manifest)
    with pytest.raises(RetrainError, match=r"recipe is not a training config.*learning_rate_typo"):
        candidate_config(load_bundle(path), RetrainOptions(served=path), [], tmp_path / "c")


@pytest.mark.train
def test_adopt_then_cli_refuses_plain_dir(tiny_bundle_factory: Callable[..., Path], tmp_path: Path) -> None:
    from sentiwire.cli import _register, app

    served = tiny_bundle_factory("plain-1", tmp_path / "models" / "current")
    _register()
    result = CliRunner().invoke(app, ["retrain", "--served", str(served), "--dry-run"])
    assert result.exit_code == 2
    assert "must be a symlink" in result.output, result.output
    dest = adopt(served)
    assert dest == tmp_path / "models" / "versions" / "plain-1"
    assert os.readlink(served) == "versions/plain-1"
    from streamer.model.bundle import load_bundle

    assert load_bundle(served).version == "plain-1"
