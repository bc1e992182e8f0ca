"""``retrain --shadow`` then ``promote`` on evidence from a daemon shadowing on the real broker:
a copy of the served bundle (agreement 1.0) is promoted, a bundle trained on shuffled labels
refused. ``promote`` reads the daemon's real /metrics over HTTP (from a thread: the daemon's
HTTP server runs on this test's event loop)."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from streamer.testing import daemon_config
from tests.retrain.conftest import served_copy
from tests.retrain.helpers import Splits, train_current
from tests.streamer.helpers import json_messages, produce, running_daemon, settings_from, wait_assigned
from training.retrain.registry import read_history, swap_symlink
from training.testing import copy_bundle_as

pytestmark = [pytest.mark.train, pytest.mark.slow]

N_TEXTS = 300
MIN_SAMPLES = 100  # of N_TEXTS: a shadow behind on a loaded box drops (and counts) some


def _cli(*args: str) -> Result:
    from sentiwire.cli import _register, app

    _register()
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def good_bundle(retrain_splits: Splits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A served sentiment model trained on correct labels (the shuffled one is ``weak_bundle``)."""
    return train_current(retrain_splits.new_good, tmp_path_factory.mktemp("good-template"), "good")


def _texts(splits: Splits) -> list[str]:
    with splits.holdout.open(encoding="utf-8", newline="") as fh:
        return [row["text"] for row in csv.DictReader(fh)][:N_TEXTS]


async def _promote_on_evidence(
    served: Path,
    shadow: Path,
    splits: Splits,
    bootstrap: str,
    topics: Callable[..., str],
    tmp_path: Path,
) -> Result:
    """Run a daemon shadowing ``shadow`` on every message until each is compared or dropped, then ``promote``."""
    topic, labels, dlq = topics(2), topics(2), topics(1)
    cfg = daemon_config(
        bootstrap=bootstrap,
        bundle=served,
        topics=topic,
        labels=labels,
        dlq=dlq,
        group=f"promote-{tmp_path.name}",
        model={
            "path": str(served),
            "reload_interval_s": 0.5,
            "shadow": {"path": str(shadow), "sample_fraction": 1.0, "max_in_flight": 16},
        },
    )
    async with running_daemon(settings_from(tmp_path, cfg)) as daemon:
        await wait_assigned([daemon], 2)
        reg = daemon.metrics.registry
        for _ in range(300):  # the shadow loads on its own task: samples before that are dropped
            if reg.get_sample_value("sentiwire_shadow_reloads_total", {"result": "success"}):
                break
            await asyncio.sleep(0.1)
        await produce(bootstrap, topic, json_messages(_texts(splits)))
        counts: dict[str, float] = {}
        for _ in range(600):  # allow 60 s for labels and shadow on a loaded box
            counts = {
                m.name: sum(s.value for s in m.samples if s.name.endswith("_total"))
                for m in reg.collect()
                if m.name in ("sentiwire_shadow_compared", "sentiwire_shadow_dropped")
            }
            if sum(counts.values()) >= N_TEXTS:
                break
            await asyncio.sleep(0.1)
        assert counts.get("sentiwire_shadow_compared", 0) >= MIN_SAMPLES, counts
        assert daemon.http is not None
        url = f"http://127.0.0.1:{daemon.http.port}/metrics"
        return await asyncio.to_thread(
            _cli,
            "promote",
            "--served",
            str(served),
            "--shadow",
            str(shadow),
            "--metrics-url",
            url,
            "--min-samples",
            str(MIN_SAMPLES),
        )


@pytest.mark.kafka
async def test_a_shadow_that_agrees_is_promoted(
    kafka_bootstrap: str,
    kafka_topic_factory: Callable[..., str],
    good_bundle: Path,
    retrain_splits: Splits,
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    served = served_copy(good_bundle, models)
    twin = copy_bundle_as(good_bundle, models / "versions" / "good-twin", "good-twin")
    swap_symlink(models / "shadow", twin)
    result = await _promote_on_evidence(
        served, models / "shadow", retrain_splits, kafka_bootstrap, kafka_topic_factory, tmp_path
    )
    assert result.exit_code == 0, result.output
    # in-process, the daemon's log lines share stdout with the command's summary
    assert "\nPROMOTED: good-twin (was good)" in f"\n{result.stdout}"
    assert served.resolve() == twin.resolve()
    (rec,) = read_history(models / "history.jsonl")
    head = rec["decision"]["heads"]["sentiment"]
    assert head["agreement"] == 1.0
    assert head["samples"] >= MIN_SAMPLES
    assert rec["replicas"][0]["shadow_version"] == "good-twin"


@pytest.mark.kafka
async def test_a_shadow_trained_on_shuffled_labels_is_refused(
    kafka_bootstrap: str,
    kafka_topic_factory: Callable[..., str],
    good_bundle: Path,
    weak_bundle: Path,
    retrain_splits: Splits,
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    served = served_copy(good_bundle, models)
    served_dir = served.resolve()
    weak = copy_bundle_as(weak_bundle, models / "versions" / "v0", "v0")
    swap_symlink(models / "shadow", weak)
    result = await _promote_on_evidence(
        served, models / "shadow", retrain_splits, kafka_bootstrap, kafka_topic_factory, tmp_path
    )
    assert result.exit_code == 4, result.output
    assert "REFUSED: v0 stays a shadow, good keeps serving: agreement below 0.9: sentiment" in result.output
    assert served.resolve() == served_dir
    (rec,) = read_history(models / "history.jsonl")
    assert rec["decision"]["promote"] is False
    assert rec["decision"]["heads"]["sentiment"]["agreement"] < 0.9


def test_retrain_shadow_keeps_serving_and_points_the_shadow_link(
    weak_bundle: Path, retrain_splits: Splits, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    served = served_copy(weak_bundle, models)
    result = _cli(
        "retrain",
        "--served",
        str(served),
        "--data",
        f"sentiment={retrain_splits.new_good}",
        "--holdout",
        f"sentiment={retrain_splits.holdout}",
        "--tolerance",
        "1.0",  # this test is about where the candidate goes, not the gate
        "--set",
        "epochs=1",
        "--set",
        "steps_per_epoch=10",
        "--shadow",
        str(models / "shadow"),
    )
    assert result.exit_code == 0, result.output
    (rec,) = read_history(models / "history.jsonl")
    new = rec["candidate"]["version"]
    assert f"\nSHADOWED: {new} (current v0)" in f"\n{result.stdout}"  # after the trainer's progress
    assert served.resolve().name == "v0"  # still serving
    assert (models / "shadow").resolve() == (models / "versions" / new).resolve()
    assert rec["decision"]["shadowed"] is True
    assert rec["decision"]["promote"] is False
    assert set(rec["decision"]["heads"]) == {"sentiment"}  # the gate's numbers are kept
