"""``predict`` / ``evaluate`` with the daemon's --runtime / --precision: same loader, same rules, say what ran."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from streamer.model import classifier as classifier_module
from streamer.model.bundle import load_bundle
from streamer.model.classifier import Classifier
from streamer.model.selection import probe
from training.cli import register

pytestmark = pytest.mark.train

runner = CliRunner()
TEXTS = ["Shares fell 12% after the profit warning.", "Record quarterly revenue.", "Fed holds rates."]


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def labeled(tmp_path: Path) -> Path:
    path = tmp_path / "lab.csv"
    rows = zip(TEXTS, ("negative", "positive", "neutral"), strict=True)
    path.write_text("text,label\n" + "".join(f'"{t}",{lab}\n' for t, lab in rows), encoding="utf-8")
    return path


def _evaluate(bundle: Path, data: Path, report: Path, *options: str) -> tuple[int, str, dict[str, object]]:
    args = ["evaluate", "-m", str(bundle), "--data", f"sentiment={data}", "--report", str(report), *options]
    res = runner.invoke(cli(), args)
    return res.exit_code, res.output, json.loads(report.read_text()) if res.exit_code == 0 else {}


def _predict(bundle: Path, data: Path, out: Path, *options: str) -> tuple[int, str]:
    res = runner.invoke(cli(), ["predict", "-m", str(bundle), "-i", str(data), "-o", str(out), *options])
    return res.exit_code, res.output


def test_evaluate_and_predict_report_the_runtime(tiny_bundle: Path, labeled: Path, tmp_path: Path) -> None:
    code, out, report = _evaluate(
        tiny_bundle, labeled, tmp_path / "r.json", "--runtime", "onnxruntime", "--precision", "fp32"
    )
    assert code == 0, out
    assert (report["runtime"], report["precision"], report["variant"]) == ("onnxruntime", "fp32", "fp32")
    assert report["chosen"] == "--runtime=onnxruntime"
    assert "runtime onnxruntime, precision fp32 (fp32 graph" in out
    code, out = _predict(
        tiny_bundle, labeled, tmp_path / "p.jsonl", "--runtime", "onnxruntime", "--precision", "fp32"
    )
    assert code == 0, out
    assert "runtime onnxruntime, precision fp32 (fp32 graph" in out
    assert "3 of 3 rows labeled" in out


def test_precision_int8_runs_the_int8_graph(tiny_bundle: Path, labeled: Path, tmp_path: Path) -> None:
    """--precision alone sets the graph, as model.precision does: the scores are the int8 graph's."""
    code, out, report = _evaluate(tiny_bundle, labeled, tmp_path / "r.json", "--precision", "int8")
    assert code == 0, out
    assert (report["precision"], report["variant"]) == ("int8", "int8")
    code, out = _predict(tiny_bundle, labeled, tmp_path / "p.jsonl", "--precision", "int8")
    assert code == 0, out
    got = [json.loads(line)["labels"]["sentiment"]["scores"] for line in (tmp_path / "p.jsonl").open()]
    bundle = load_bundle(tiny_bundle)
    int8, fp32 = (
        [p["sentiment"].scores for p in Classifier(bundle, variant=v).predict(TEXTS)]
        for v in ("int8", "fp32")
    )
    assert fp32 != int8  # the two graphs are told apart on these texts
    assert all(g == pytest.approx(i, abs=1e-6) for g, i in zip(got, int8, strict=True))


def test_disagreeing_variant_and_precision_exit_2(tiny_bundle: Path, labeled: Path, tmp_path: Path) -> None:
    code, out, _ = _evaluate(
        tiny_bundle, labeled, tmp_path / "r.json", "--variant", "int8", "--precision", "fp32"
    )
    assert code == 2
    assert "error: --variant=int8 and --precision=fp32 disagree" in out
    assert "Traceback" not in out
    code, out = _predict(
        tiny_bundle, labeled, tmp_path / "p.jsonl", "--variant", "int8", "--precision", "fp32"
    )
    assert code == 2
    assert "--variant=int8 and --precision=fp32 disagree" in out
    assert not (tmp_path / "p.jsonl").exists()


def test_bf16_on_onnxruntime_names_the_options(tiny_bundle: Path, labeled: Path, tmp_path: Path) -> None:
    code, out = _predict(
        tiny_bundle, labeled, tmp_path / "p.jsonl", "--runtime", "onnxruntime", "--precision", "bf16"
    )
    assert code == 2
    assert "error: --precision=bf16 needs --runtime=openvino (or auto)" in out


def test_openvino_runs_where_installed(tiny_bundle: Path, labeled: Path, tmp_path: Path) -> None:
    """OpenVINO installed: it runs (through the daemon's agreement gate) and the report says so."""
    pytest.importorskip("openvino")
    code, out, report = _evaluate(tiny_bundle, labeled, tmp_path / "r.json", "--runtime", "openvino")
    assert code == 0, out
    assert (report["runtime"], report["precision"]) == ("openvino", "fp32")
    assert isinstance(report["agreement"], dict)
    assert set(report["agreement"]) == {"sentiment", "topic"}
    assert "runtime openvino, precision fp32" in out


def test_openvino_missing_exit_2_naming_the_runtime(
    tiny_bundle: Path, labeled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = probe()
    monkeypatch.setattr(classifier_module, "probe", lambda: replace(real, openvino=False))
    code, out = _predict(tiny_bundle, labeled, tmp_path / "p.jsonl", "--runtime", "openvino")
    assert code == 2
    assert "error: --runtime=openvino but the openvino package is not installed" in out
    assert "Traceback" not in out
