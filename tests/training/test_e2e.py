"""train -> export -> parity -> predict -> evaluate with a tiny random BERT on real data.

The tiny encoder (2 layers, hidden 32) keeps this fast; it exercises exactly the code path of
a real fine-tune (multi-head loss masking, early stopping, reports, export, int8, manifest).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from streamer.model.bundle import load_bundle
from streamer.model.classifier import Classifier
from training.cli import register
from training.config import TrainConfig
from training.data import parse_source
from training.trainer import train

pytestmark = pytest.mark.train

runner = CliRunner()


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def tiny_args(shared: Path, out: Path) -> list[str]:
    return [
        "train",
        "--base-model",
        "random:tiny",
        "--data",
        f"sentiment={shared}/financial-phrasebank/train.csv?slice=agreement",
        "--data",
        f"topic={shared}/twitter-financial-news-topic/train.csv",
        "--max-rows",
        "300",
        "--epochs",
        "2",
        "--steps-per-epoch",
        "12",
        "--batch-size",
        "16",
        "--max-length",
        "48",
        "--lr",
        "1e-3",
        "--force",
        "--no-progress",
        "--output",
        str(out),
    ]


@pytest.fixture(scope="module")
def trained(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "bundle"
    result = runner.invoke(cli(), tiny_args(shared_data, out))
    assert result.exit_code == 0, result.output
    return out


def test_bundle_contents(trained: Path) -> None:
    b = load_bundle(trained)  # verifies every sha256
    m = b.manifest
    assert [h.name for h in b.heads] == ["sentiment", "topic"]
    assert b.heads[0].labels == ("negative", "neutral", "positive")
    assert len(b.heads[1].labels) == 20
    assert b.max_length == 48
    assert m["export"]["parity_max_abs_diff"] < 1e-4
    assert set(m["export"]["int8_agreement"]) == {"sentiment", "topic"}
    assert m["base_model"]["name"] == "random:tiny"
    assert {d["head"] for d in m["data"]} == {"sentiment", "topic"}
    assert all(len(d["sha256"]) == 64 and d["rows"] > 300 for d in m["data"])
    pb = m["metrics"]["sentiment"]["by_source"]["financial-phrasebank"]
    assert set(pb["slices"]) <= {"50", "66", "75", "100"}
    assert pb["n"] == sum(s["n"] for s in pb["slices"].values())
    for head in ("sentiment", "topic"):
        for f in ("classification_report.json", "confusion_matrix.png", "training_curves.png"):
            assert f"report/{head}/{f}" in m["files"]
    recipe = TrainConfig.from_json(m["recipe"])
    assert recipe.max_rows_per_source == 300
    assert recipe.data[0].slice_column == "agreement"
    assert m["history"][0]["event"] == "train"


def test_predict_then_evaluate_agree(trained: Path, shared_data: Path, tmp_path: Path) -> None:
    rows = list(csv.DictReader((shared_data / "financial-phrasebank/train.csv").open(encoding="utf-8")))[:40]
    test_csv = tmp_path / "test.csv"
    with test_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows({"text": r["text"], "label": r["label"]} for r in rows)
        w.writerow({"text": "  ", "label": "neutral"})  # row 41: blank
    out = tmp_path / "pred.jsonl"
    res = runner.invoke(cli(), ["predict", "-m", str(trained), "-i", str(test_csv), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "40 of 41 rows labeled" in res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["row"] for x in lines] == list(range(1, 42))
    assert lines[-1] == {"row": 41, "error": "blank text in column 'text'"}
    for x in lines[:-1]:
        assert set(x["labels"]) == {"sentiment", "topic"}
        assert abs(sum(x["labels"]["sentiment"]["scores"].values()) - 1) < 1e-5
    predicted_acc = (
        sum(x["labels"]["sentiment"]["label"] == r["label"] for x, r in zip(lines, rows, strict=False)) / 40
    )

    report = tmp_path / "eval.json"
    res = runner.invoke(
        cli(), ["evaluate", "-m", str(trained), "--data", f"sentiment={test_csv}", "--report", str(report)]
    )
    assert res.exit_code == 0, res.output
    assert "1 row(s) skipped" in res.output
    result = json.loads(report.read_text())
    ev = result["heads"]["sentiment"]
    assert ev["n"] == 40
    assert ev["accuracy"] == pytest.approx(predicted_acc)  # one inference path, same answers
    assert len(ev["confusion_matrix"]) == 3
    assert set(ev["per_class"]) == {"negative", "neutral", "positive"}
    res = runner.invoke(
        cli(), ["evaluate", "-m", str(trained), "--data", f"sentiment={test_csv}", "--strict"]
    )
    assert res.exit_code == 2
    assert "row 41: blank text" in res.output


def test_two_label_set_scored_on_positive_vs_negative(trained: Path, shared_data: Path) -> None:
    from training.evaluate import evaluate_bundle

    spec = parse_source(f"sentiment={shared_data}/uci-review-sentences/all.csv?where=source:amazon")
    clf = Classifier(load_bundle(trained))
    result = evaluate_bundle(trained, [spec], classifier=clf)
    m = result["heads"]["sentiment"]["by_source"]["uci-review-sentences"]
    assert m["scored_labels"] == ["negative", "positive"]
    assert m["n"] == 1000
    # recompute by hand: argmax over P(negative) vs P(positive) only, never "neutral"
    rows = [
        r
        for r in csv.DictReader((shared_data / "uci-review-sentences/all.csv").open())
        if r["source"] == "amazon"
    ]
    probs = clf.infer(clf.encode([r["text"] for r in rows]))["sentiment"]
    manual = ["negative" if p[0] >= p[2] else "positive" for p in probs]
    assert m["accuracy"] == pytest.approx(
        sum(p == r["label"] for p, r in zip(manual, rows, strict=True)) / len(rows)
    )
    assert "neutral" not in m["per_class"]
    assert sum(map(sum, m["confusion_matrix"])) == 1000


def test_cli_bad_inputs_named(trained: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,label\nhello,positive\n")
    res = runner.invoke(cli(), ["evaluate", "-m", str(trained), "--data", f"sentiment={bad}"])
    assert res.exit_code == 2
    assert "bad.csv: missing column(s) ['text']" in res.output
    res = runner.invoke(
        cli(), ["predict", "-m", str(trained), "-i", str(bad), "-o", str(tmp_path / "o.jsonl")]
    )
    assert res.exit_code == 2
    assert "missing column 'text'" in res.output
    assert not (tmp_path / "o.jsonl").exists()
    res = runner.invoke(cli(), ["evaluate", "-m", str(trained), "--data", f"nohead={bad}?text=sentence"])
    assert res.exit_code == 2
    assert "bundle has no head 'nohead'" in res.output
    lab = tmp_path / "lab.csv"
    lab.write_text("text,label\nhello,Bullish\n")
    res = runner.invoke(cli(), ["evaluate", "-m", str(trained), "--data", f"sentiment={lab}", "--strict"])
    assert res.exit_code == 2
    assert "lab.csv: row 1: label outside the label set: 'Bullish'" in res.output
    res = runner.invoke(
        cli(),
        [
            "evaluate",
            "-m",
            str(trained),
            "--data",
            f"sentiment={lab}",
            "--label-map",
            "sentiment:Bullish=positive",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli(), ["evaluate", "-m", str(tmp_path), "--data", f"sentiment={lab}"])
    assert res.exit_code == 2
    assert "missing bundle manifest" in res.output


def test_existing_output_refused_without_overwrite(trained: Path, shared_data: Path) -> None:
    res = runner.invoke(cli(), tiny_args(shared_data, trained))
    assert res.exit_code == 2
    assert "already exists" in res.output


def _tiny_config(shared: Path, out: Path) -> TrainConfig:
    return TrainConfig(
        data=[parse_source(f"sentiment={shared}/financial-phrasebank/train.csv")],
        base_model="random:tiny",
        output=str(out),
        max_rows_per_source=200,
        epochs=1,
        steps_per_epoch=8,
        batch_size=8,
        max_length=32,
        force=True,
        progress=False,
    )


def test_same_seed_same_metrics(shared_data: Path, tmp_path: Path) -> None:
    a = load_bundle(train(_tiny_config(shared_data, tmp_path / "a")))
    b = load_bundle(train(_tiny_config(shared_data, tmp_path / "b")))
    assert a.manifest["metrics"] == b.manifest["metrics"]
    assert a.manifest["files"]["tokenizer.json"] == b.manifest["files"]["tokenizer.json"]
    pa = Classifier(a).infer(Classifier(a).encode(["Profit fell", "Sales rose 5%"]))["sentiment"]
    pb = Classifier(b).infer(Classifier(b).encode(["Profit fell", "Sales rose 5%"]))["sentiment"]
    assert (abs(pa - pb) < 1e-6).all()


def test_interrupt_during_training_leaves_nothing(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.dataset as trainer

    real, calls = trainer.collate, {"n": 0}

    def collate_then_interrupt(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "collate", collate_then_interrupt)
    out = tmp_path / "models" / "b"
    args = tiny_args(shared_data, out)
    res = runner.invoke(cli(), args)
    assert res.exit_code == 130
    assert "no bundle was written" in res.output
    assert not out.exists()


def test_interrupt_during_export_leaves_no_partial_bundle(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.export as export

    def interrupted(src: Path, dst: Path, level: str = "all") -> None:
        dst.write_bytes(b"half")  # something was being written
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "quantize_int8", interrupted)
    parent = tmp_path / "models"
    with pytest.raises(KeyboardInterrupt):
        train(_tiny_config(shared_data, parent / "b"))
    assert list(parent.iterdir()) == []  # no bundle, no staging directory


def test_predict_and_evaluate_do_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, training.cli, training.evaluate, training.predict, training.data, training.metrics;"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"
