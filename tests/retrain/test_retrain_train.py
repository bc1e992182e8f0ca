"""End to end with real training: a better candidate is promoted, a worse one refused, history kept."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from streamer.model.bundle import load_bundle
from tests.retrain.conftest import served_copy
from tests.retrain.helpers import Splits
from training.data import SourceSpec
from training.retrain.errors import RetrainError
from training.retrain.registry import read_history
from training.retrain.run import RetrainOptions, retrain

pytestmark = [pytest.mark.train, pytest.mark.slow]


@pytest.fixture(scope="module")
def splits(retrain_splits: Splits) -> Splits:
    return retrain_splits


@pytest.fixture(scope="module")
def promoted(splits: Splits, weak_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A weak served model (trained on shuffled labels), then `retrain` with correct new rows."""
    models = tmp_path_factory.mktemp("models")
    v0 = served_copy(weak_bundle, models).resolve()
    opts = RetrainOptions(
        served=models / "current",
        data=[SourceSpec("sentiment", str(splits.new_good))],
        holdout=[SourceSpec("sentiment", str(splits.holdout))],
        tolerance=0.0,
    )
    record = retrain(opts)
    return {"models": models, "v0": v0, "record": record}


def test_better_candidate_is_promoted_atomically(promoted: dict[str, Any]) -> None:
    models, v0, record = promoted["models"], promoted["v0"], promoted["record"]
    decision = record["decision"]
    assert decision["promote"] is True, decision["reason"]
    cur = record["metrics"]["current"]["sentiment"]["macro_f1"]
    cand = record["metrics"]["candidate"]["sentiment"]["macro_f1"]
    assert cand > cur
    assert decision["heads"]["sentiment"] == {
        "current": cur,
        "candidate": cand,
        "delta": cand - cur,
        "n": 500,
    }

    new = record["candidate"]["version"]
    current = models / "current"
    assert current.is_symlink()
    assert os.readlink(current) == f"versions/{new}"  # relative: survives remounting the volume elsewhere
    bundle = load_bundle(current)  # every sha256 still verifies after the history rewrite
    assert bundle.version == new
    assert load_bundle(v0).version == "v0"  # the old version stays for rollback
    assert not (models / "candidates" / new).exists()

    # The candidate was trained from v0's recipe plus the new rows (copied beside the versions).
    recipe = bundle.manifest["recipe"]
    v0_recipe = load_bundle(v0).manifest["recipe"]
    paths = [d["path"] for d in recipe["data"]]
    assert paths[0] == v0_recipe["data"][0]["path"]
    assert Path(paths[1]).parent == models / "data" / new
    assert {k: recipe[k] for k in ("epochs", "lr", "base_model")} == {
        k: v0_recipe[k] for k in ("epochs", "lr", "base_model")
    }

    # History: the file beside the versions and the promoted bundle's own history.
    history = read_history(models / "history.jsonl")
    assert history == [json.loads(json.dumps(record))]
    assert bundle.manifest["history"][0]["event"] == "train"
    assert bundle.manifest["history"][-1]["decision"]["promote"] is True
    assert bundle.manifest["history"][-1]["metrics"] == record["metrics"]


def test_worse_candidate_is_refused_and_recorded(promoted: dict[str, Any], splits: Splits) -> None:
    models = promoted["models"]
    before = os.readlink(models / "current")
    served_manifest = (models / "current" / "bundle.json").read_bytes()
    n_history = len(read_history(models / "history.jsonl"))
    record = retrain(
        RetrainOptions(
            served=models / "current",
            data=[SourceSpec("sentiment", str(splits.new_bad))],
            holdout=[SourceSpec("sentiment", str(splits.holdout))],
            recipe_data=False,  # the candidate sees only the shuffled labels
            tolerance=0.01,
        )
    )
    decision = record["decision"]
    assert decision["promote"] is False
    assert "dropped by more than 0.01" in decision["reason"]
    assert decision["heads"]["sentiment"]["delta"] < -0.01
    assert os.readlink(models / "current") == before
    # The served bundle is untouched (a rewrite would make running daemons reload it).
    assert (models / "current" / "bundle.json").read_bytes() == served_manifest
    assert not (models / "versions" / record["candidate"]["version"]).exists()
    assert not (models / "candidates" / record["candidate"]["version"]).exists()
    assert not (models / "data" / record["candidate"]["version"]).exists()
    history = read_history(models / "history.jsonl")
    assert len(history) == n_history + 1
    assert history[-1]["decision"]["promote"] is False
    assert set(history[-1]["metrics"]) == {"current", "candidate"}
    assert history[-1]["current"]["version"] == promoted["record"]["candidate"]["version"]


def test_missing_recipe_data_is_named(promoted: dict[str, Any], splits: Splits, tmp_path: Path) -> None:
    link = _relink_with_relative_recipe(promoted["models"], tmp_path)
    new = [SourceSpec("sentiment", str(splits.new_good))]
    with pytest.raises(RetrainError, match=r"recipe data not found: \[.*nowhere/base\.csv"):
        retrain(RetrainOptions(served=link, data=new, data_root=tmp_path, dry_run=True))
    # Training on the new rows only is opt-in; the dry run shows the candidate's recipe.
    record = retrain(RetrainOptions(served=link, data=new, recipe_data=False, dry_run=True))
    assert [Path(d["path"]).parent for d in record["recipe"]["data"]] == [
        link.parent / "data" / record["candidate"]["version"]
    ]


def test_nothing_new_trains_nothing(promoted: dict[str, Any]) -> None:
    models = promoted["models"]
    history = (models / "history.jsonl").read_bytes()
    record = retrain(RetrainOptions(served=models / "current"))
    assert record["skipped"] is True
    assert record["decision"]["promote"] is False
    assert (models / "history.jsonl").read_bytes() == history


def _relink_with_relative_recipe(models: Path, tmp_path: Path) -> Path:
    """A copy of the served bundle whose recipe names a relative data path that is absent here."""
    import shutil

    from streamer.model.bundle import read_manifest, write_manifest

    dest = tmp_path / "m" / "versions" / "rel"
    shutil.copytree(models / "current", dest)
    manifest = read_manifest(dest)
    manifest["recipe"]["data"][0]["path"] = "nowhere/base.csv"
    write_manifest(dest, manifest)
    link = tmp_path / "m" / "current"
    link.symlink_to("versions/rel")
    return link
