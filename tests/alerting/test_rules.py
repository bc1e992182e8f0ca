"""Prometheus alert rules: promtool checks and unit tests, and names aligned with the code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.alerting.promql import EXTERNAL, exported_metric_names, referenced_metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "sentiwire.rules.yml"
# Other rule files (e.g. drift.rules.yml) sit beside it; the chart renders them all.
RULE_FILES = sorted((ROOT / "deploy" / "prometheus").glob("*.rules.yml"))
RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.test.yml"))
EXPECTED = {
    "NegativeSentimentSpike",
    "AlertLabelsDropped",
    "ConsumerLagHigh",
    "NoMessagesProcessed",
    "DeadLetterRateHigh",
    "ModelNotReady",
    "InferenceLatencyHigh",
    "GPUProviderMissing",
}


def rules(path: Path = RULES) -> list[dict[str, object]]:
    doc = yaml.safe_load(path.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def all_rules() -> list[dict[str, object]]:
    return [r for path in RULE_FILES for r in rules(path)]


def test_every_alert_is_there_once_with_severity_and_summary() -> None:
    names = [str(r["alert"]) for r in rules()]
    assert sorted(names) == sorted(EXPECTED)
    everywhere = [str(r["alert"]) for r in all_rules()]
    assert len(everywhere) == len(set(everywhere))
    for r in rules():
        assert r["labels"]["severity"] in {"warning", "critical"}  # type: ignore[index]
        assert r["annotations"]["summary"]  # type: ignore[index]


def test_every_alert_has_a_unit_test() -> None:
    tested = set()
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        for case in doc["tests"]:
            for t in case.get("alert_rule_test", []):
                if t.get("exp_alerts"):
                    tested.add(t["alertname"])
    assert tested == {str(r["alert"]) for r in all_rules()}
    assert tested >= EXPECTED


def test_rules_use_only_metrics_the_code_exports() -> None:
    exported = exported_metric_names()
    for r in rules():
        used = referenced_metrics(str(r["expr"]))
        assert used, r["alert"]
        unknown = used - exported - EXTERNAL
        assert not unknown, (
            f"{r['alert']}: {sorted(unknown)} not exported by streamer.metrics / alerting.metrics"
        )


@pytest.mark.prometheus
def test_promtool_check_rules(promtool: Path) -> None:
    out = subprocess.run(
        [str(promtool), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(EXPECTED)} rules found" in out.stdout


@pytest.mark.prometheus
def test_promtool_unit_tests_pass(promtool: Path) -> None:
    assert RULE_TESTS
    out = subprocess.run(
        [str(promtool), "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.prometheus
def test_promtool_unit_tests_catch_a_broken_rule(promtool: Path, tmp_path: Path) -> None:
    """The unit tests are not vacuous: loosening a threshold makes them fail."""
    broken = (
        RULES.read_text().replace("> 10000", "> 100000").replace("> 0.05", "> 0.5").replace("> 0.01", "> 0.5")
    )
    for path in RULE_FILES:
        (tmp_path / path.name).write_text(broken if path == RULES else path.read_text())
    tests_dir = tmp_path / "tests"
    tests_dir.mkdir()
    for path in RULE_TESTS:
        (tests_dir / path.name).write_text(path.read_text())
    out = subprocess.run(
        [str(promtool), "test", "rules", *[str(tests_dir / p.name) for p in RULE_TESTS]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "ConsumerLagHigh" in out.stdout + out.stderr
    assert "DeadLetterRateHigh" in out.stdout + out.stderr
    assert "AlertLabelsDropped" in out.stdout + out.stderr
