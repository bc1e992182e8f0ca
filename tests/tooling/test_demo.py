"""The demo's pieces that can break silently: its daemon config and its screen lines."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from sentiwire.demo.config import ALERTS, LABELS, NEWS, demo_config
from sentiwire.demo.screen import format_alert_line, format_label
from sentiwire.devbroker import BrokerHandle
from streamer.config import load_settings


def test_demo_config_is_a_valid_daemon_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("SENTIWIRE_")]:
        monkeypatch.delenv(var)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(demo_config("127.0.0.1:9999", tmp_path / "model", "int8", 8123)))
    s = load_settings(path)
    assert s.kafka.bootstrap_servers == "127.0.0.1:9999"
    assert s.input.topics == [NEWS]
    assert s.output.labels_topic == LABELS
    assert s.output.include_text
    assert s.model.variant == "int8"
    assert s.http.port == 8123
    assert s.alerts.enabled
    assert s.alerts.alerts_topic == ALERTS
    # The demo is minutes long: windows must be short enough for the burst to fire and resolve.
    assert s.alerts.short_window_s <= 30
    assert s.alerts.baseline_window_s <= 600


def _label(**over: object) -> dict[str, object]:
    rec: dict[str, object] = {
        "id": "x",
        "labels": {
            "sentiment": {"label": "negative", "score": 0.934, "scores": {}},
            "topic": {"label": "Earnings", "score": 0.7, "scores": {}},
        },
        "source": {"topic": "news", "partition": 0, "offset": 1, "timestamp": 1_764_040_000_000},
        "text": "Tesla   cuts\nguidance " + "again " * 40,
        "tickers": ["TSLA"],
    }
    rec.update(over)
    return rec


def test_label_line_shows_time_sentiment_topic_tickers_and_fits_the_width() -> None:
    line = format_label(_label(), width=100)
    assert line.startswith("03:06:40  negative 0.93  Earnings")
    assert "[TSLA] Tesla cuts guidance again" in line
    assert len(line) == 100
    assert line.endswith("…")


def test_label_line_colours_only_when_asked() -> None:
    assert "\033[" not in format_label(_label(), width=120)
    coloured = format_label(_label(), width=120, color=True)
    assert "\033[31m" in coloured  # negative in red
    assert len(coloured.replace("\033[31m", "").replace("\033[0m", "")) == 120


def test_label_line_survives_missing_fields() -> None:
    line = format_label({"text": "hello"}, width=80)
    assert line.startswith("--:--:--  ?")
    assert line.endswith("hello")


def test_alert_line_names_state_and_scope() -> None:
    doc = {
        "state": "firing",
        "scope_kind": "entity",
        "scope": "TSLA",
        "negative_share": 0.8,
        "baseline_share": 0.1,
        "count": 30,
        "negatives": 24,
        "statistic": {"value": 0.6, "threshold": 0.2},
        "started_at": 1_764_040_000_000,
        "examples": [{"text": "$TSLA - Tesla cut at Goldman"}],
    }
    line = format_alert_line(doc)
    assert line.startswith("ALERT FIRING")
    assert "entity TSLA" in line
    assert "80%" in line


@pytest.mark.slow
@pytest.mark.train
async def test_demo_runs_end_to_end_and_stops_cleanly(
    kafka_broker: BrokerHandle, tiny_bundle: Path, shared_data: Path, tmp_path: Path
) -> None:
    """The whole demo against the session broker: labels flow, /metrics answers, everything stops with 0."""
    prefix = f"demo-{uuid.uuid4().hex[:6]}."
    cmd = [
        sys.executable,
        "-m",
        "sentiwire",
        "dev",
        "demo",
        "--model",
        str(tiny_bundle),
        "--bootstrap",
        kafka_broker.bootstrap,
        "--topic-prefix",
        prefix,
        "--data-dir",
        str(shared_data),
        "--duration",
        "20",
        "--rate",
        "25",
        "--burst-at",
        "2",
        "--burst-duration",
        "15",
    ]
    env = {**os.environ, "NO_COLOR": "1"}
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out_b, _ = await asyncio.wait_for(proc.communicate(), 240)
    out = out_b.decode()
    assert proc.returncode == 0, out[-3000:]
    assert "daemon ready: metrics at http://127.0.0.1:" in out
    assert "as int8: the faster graph on CPU" in out  # the tiny bundle's int8 is servable (--force)
    assert "/metrics: consumed" in out
    summary = re.search(r"demo over: (\d+) sent, (\d+) labeled", out)
    assert summary is not None, out[-3000:]
    sent, labeled = int(summary.group(1)), int(summary.group(2))
    assert sent > 100
    assert labeled >= 0.9 * sent  # the last ~2 s may still be in flight when the view stops
    label_lines = [
        ln for ln in out.splitlines() if re.match(r"\d\d:\d\d:\d\d  (negative|neutral|positive) ", ln)
    ]
    assert len(label_lines) > 20
    assert any("[TSLA]" in ln for ln in label_lines)  # the burst reached the screen
    assert "daemon exit code 0" in out


def test_demo_serves_int8_unless_the_bundle_refuses_it(tiny_bundle: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from sentiwire.demo.config import demo_variant
    from streamer.enums import Variant

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    assert demo_variant(bundle, None)[0] == Variant.INT8
    assert demo_variant(bundle, Variant.FP32)[0] == Variant.FP32
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["export"]["int8_gate"] = {"passed": False, "servable": False, "reason": "moved 1.4 pt"}
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    variant, why = demo_variant(bundle, None)
    assert variant == Variant.FP32
    assert "failed its export precision gate" in why
