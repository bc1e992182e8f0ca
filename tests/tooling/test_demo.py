"""The demo's pieces that can break silently: its daemon config and its screen lines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from sentiwire.demo import ALERTS, LABELS, NEWS, demo_config, format_alert_line, format_label
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
