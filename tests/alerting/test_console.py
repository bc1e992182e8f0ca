"""The console line ``make demo`` prints for an alerts-topic record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamer.alerting.console import format_alert
from streamer.alerting.detector import SpikeDetector
from streamer.alerting.publish import timing
from streamer.config import AlertsConfig
from tests.alerting.scenario import StreamBuilder, by_time, load_corpus

T0 = 1_764_000_000_000


@pytest.fixture(scope="module")
def events(shared_data: Path) -> list[dict[str, object]]:
    sb = StreamBuilder(load_corpus(shared_data))
    stream = by_time(sb.calm(T0, 7200, every_s=1.5), sb.ticker_burst("NOK", T0 + 5_400_000, 150, 40))
    det = SpikeDetector(AlertsConfig(enabled=True))
    # Through JSON, exactly as a consumer of the alerts topic sees them.
    return [json.loads(json.dumps(e.to_json())) for e in det.process_many(stream)]


def test_firing_line(events: list[dict[str, object]]) -> None:
    line = format_alert(events[0])
    assert line.startswith("FIRING")
    assert "entity NOK" in line
    assert f"{events[0]['negative_share']:.0%}" in line
    assert "vs baseline" in line
    assert 'e.g. "' in line
    assert "\n" not in line


def test_resolved_line(events: list[dict[str, object]]) -> None:
    line = format_alert(events[1])
    assert line.startswith("RESOLVED")
    assert "entity NOK" in line
    assert "resolved " in line
    assert "e.g." not in line


def test_backfill_is_said_on_the_line(events: list[dict[str, object]]) -> None:
    at = int(str(events[0]["at"]))
    when = timing(at, at + 372_000, backfill_after_s=120.0, labels_behind=1500)
    assert when == {
        "event_time": at,
        "processing_time": at + 372_000,
        "lag_s": 372.0,
        "labels_behind": 1500,
        "backfill": True,
    }
    line = format_alert({**events[0], "backfill": True, "timing": when})
    assert "BACKFILL: window " in line
    assert "decided 6m12s later" in line
    assert not timing(at, at + 30_000, backfill_after_s=120.0, labels_behind=0)["backfill"]
    assert "BACKFILL" not in format_alert(events[0])
