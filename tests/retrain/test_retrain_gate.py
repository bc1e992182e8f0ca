"""Every served head is judged before a promotion, and a refused or failed retrain ends cleanly.

The scenario of the issue at small scale: the served bundle has a sentiment and a topic head;
new rows label only sentiment; the candidate's topic head is starved (its source never sampled,
as a too-short schedule did to the real one) while sentiment improves. The gate scores topic
on the holdout the served bundle keeps and refuses, naming the head.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from streamer.errors import ExitCode
from tests.retrain.conftest import served_copy
from tests.retrain.helpers import Splits, TwoHeads, make_two_heads, train_two_heads
from training.retrain.registry import read_history

pytestmark = [pytest.mark.train, pytest.mark.slow]

runner = CliRunner()


def _retrain(*args: str) -> Result:
    from sentiwire.cli import _register, app

    _register()
    return runner.invoke(app, ["retrain", *args])


@pytest.fixture(scope="module")
def two_heads(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TwoHeads:
    return make_two_heads(shared_data, tmp_path_factory.mktemp("two-heads-data"))


@pytest.fixture(scope="module")
def two_head_bundle(two_heads: TwoHeads, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_two_heads(two_heads, tmp_path_factory.mktemp("two-heads-template"))


def _no_traceback(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output


def test_bundle_keeps_its_dev_rows_as_holdout(two_head_bundle: Path) -> None:
    from streamer.model.bundle import load_bundle

    bundle = load_bundle(two_head_bundle)  # the holdout files are verified bundle files
    listing = bundle.manifest["holdout"]
    assert sorted(listing) == ["sentiment", "topic"]
    for head, entries in listing.items():
        assert sum(e["rows"] for e in entries) == bundle.manifest["metrics"][head]["n"]
        for e in entries:
            assert bundle.manifest["files"][e["path"]] == e["sha256"]
    assert [e["source"] for e in listing["topic"]] == ["topic-base"]


def test_candidate_that_breaks_an_unlabeled_head_is_refused(
    two_head_bundle: Path, retrain_splits: Splits, tmp_path: Path
) -> None:
    served = served_copy(two_head_bundle, tmp_path / "models")
    before = os.readlink(served)
    result = _retrain(
        "--served", str(served),
        "--data", f"sentiment={retrain_splits.new_good}",
        "--set", "epochs=4",
        "--set", 'source_weights={"topic-base": 0.0}',
    )  # fmt: skip
    _no_traceback(result)
    assert result.exit_code == ExitCode.REFUSED, result.output
    verdict = next(line for line in result.output.splitlines() if line.startswith("REFUSED: "))
    assert "dropped by more than 0.01: topic" in verdict
    assert "served bundle holdout" in result.output
    assert os.readlink(served) == before

    record = read_history(tmp_path / "models" / "history.jsonl")[-1]
    assert record["decision"]["promote"] is False
    assert record["scored_on"] == {"sentiment": "new data", "topic": "served bundle holdout"}
    heads = record["decision"]["heads"]
    assert heads["topic"]["delta"] < -0.01
    assert heads["topic"]["n"] == sum(e["rows"] for e in _manifest(served)["holdout"]["topic"])
    assert record["holdout"]["topic"][0].startswith(str(served.resolve() / "holdout"))


def test_a_scoring_setup_that_cannot_run_is_bad_input_before_training(
    two_head_bundle: Path, retrain_splits: Splits, tmp_path: Path
) -> None:
    """--variant/--precision/--runtime are the daemon's; a combination it refuses is exit 2 at
    once, not a failed candidate after minutes of training."""
    served = served_copy(two_head_bundle, tmp_path / "models")
    new = f"sentiment={retrain_splits.new_good}"
    result = _retrain("--served", str(served), "--data", new, "--variant", "int8", "--precision", "fp32")
    _no_traceback(result)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "--variant=int8 and --precision=fp32 disagree" in result.output
    assert not (tmp_path / "models" / "candidates").exists() or not any(
        (tmp_path / "models" / "candidates").iterdir()
    )
    assert not (tmp_path / "models" / "history.jsonl").exists()
    dry = _retrain("--served", str(served), "--data", new, "--precision", "int8", "--dry-run")
    assert dry.exit_code == ExitCode.OK, dry.output  # int8 alone: the int8 graph, as the config


def test_candidate_without_a_served_head_is_refused_before_training(
    two_head_bundle: Path, retrain_splits: Splits, tmp_path: Path
) -> None:
    served = served_copy(two_head_bundle, tmp_path / "models")
    result = _retrain(
        "--served", str(served), "--data", f"sentiment={retrain_splits.new_good}", "--no-recipe-data"
    )
    _no_traceback(result)
    assert result.exit_code == ExitCode.REFUSED, result.output
    assert "the candidate would have no head(s) ['topic']" in result.output
    record = read_history(tmp_path / "models" / "history.jsonl")[-1]
    assert record["decision"]["promote"] is False
    assert "metrics" not in record  # nothing was trained
    assert not (tmp_path / "models" / "data" / record["candidate"]["version"]).exists()


def test_head_without_any_holdout_blocks_promotion(
    two_head_bundle: Path, two_heads: TwoHeads, retrain_splits: Splits, tmp_path: Path
) -> None:
    from streamer.model.bundle import read_manifest, write_manifest

    # A bundle exported before bundles kept a holdout.
    served = served_copy(two_head_bundle, tmp_path / "models")
    old = served.resolve()
    shutil.rmtree(old / "holdout")
    manifest = read_manifest(old)
    del manifest["holdout"]
    write_manifest(old, manifest)

    result = _retrain("--served", str(served), "--data", f"sentiment={retrain_splits.new_good}")
    _no_traceback(result)
    assert result.exit_code == ExitCode.REFUSED, result.output
    assert "head(s) ['topic'] cannot be scored" in result.output
    assert "--holdout" in result.output
    assert read_history(tmp_path / "models" / "history.jsonl")[-1]["decision"]["promote"] is False

    # Labels for the head, given as a holdout, make it judgeable.
    result = _retrain(
        "--served", str(served),
        "--data", f"sentiment={retrain_splits.new_good}",
        "--holdout", f"topic={two_heads.topic}",
        "--dry-run",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["decision"]["reason"] == "dry run: nothing trained"
    assert record["scored_on"] == {"sentiment": "new data", "topic": "--holdout"}


def test_failed_export_is_one_message_a_history_entry_and_exit_1(
    weak_bundle: Path, retrain_splits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.export as export

    monkeypatch.setattr(export, "PARITY_TOLERANCE", 0.0)  # no fp32 graph can match torch
    served = served_copy(weak_bundle, tmp_path / "models")
    before = os.readlink(served)
    result = _retrain(
        "--served", str(served),
        "--data", f"sentiment={retrain_splits.new_good}",
        "--set", "epochs=1",
        "--set", "steps_per_epoch=10",
    )  # fmt: skip
    _no_traceback(result)
    assert result.exit_code == ExitCode.FAILED, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("FAILED: ")]
    assert len(failed) == 1, result.output
    assert "candidate export failed: fp32 ONNX logits differ from torch" in failed[0]
    assert os.readlink(served) == before

    record = read_history(tmp_path / "models" / "history.jsonl")[-1]
    assert record["decision"]["promote"] is False
    assert record["decision"]["failed"] is True
    assert record["decision"]["reason"] in failed[0]
    models = tmp_path / "models"
    assert not (models / "data" / record["candidate"]["version"]).exists()
    assert not (models / "candidates").exists() or list((models / "candidates").iterdir()) == []


def test_a_candidate_whose_int8_failed_its_gate_is_not_promoted_to_int8_daemons(
    weak_bundle: Path, retrain_splits: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export writes the candidate (its fp32 is fine) but marks int8 not servable; scored as
    the int8 daemons serve, it is refused before scoring, naming the gate."""
    import training.export as export

    monkeypatch.setattr(export, "MIN_INT8_AGREEMENT", 1.01)  # no int8 graph can pass
    served = served_copy(weak_bundle, tmp_path / "models")
    before = os.readlink(served)
    result = _retrain(
        "--served", str(served),
        "--data", f"sentiment={retrain_splits.new_good}",
        "--variant", "int8",
        "--set", "force=false",
        "--set", "epochs=1",
        "--set", "steps_per_epoch=10",
    )  # fmt: skip
    _no_traceback(result)
    assert result.exit_code == ExitCode.REFUSED, result.output
    verdict = next(line for line in result.output.splitlines() if line.startswith("REFUSED: "))
    assert "not promoted: scored as int8" in verdict
    assert "int8 graph failed the export precision gate (least bad level" in verdict
    assert os.readlink(served) == before
    record = read_history(tmp_path / "models" / "history.jsonl")[-1]
    assert record["decision"]["promote"] is False
    assert "failed" not in record["decision"]


def _manifest(served: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((served / "bundle.json").read_text(encoding="utf-8"))
