"""``sentiwire alert``: bad configuration is refused with the field named, before any I/O (exit 2);
Kafka out of reach is UNAVAILABLE (exit 3), to be retried."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from sentiwire.procs import free_port

ROOT = Path(__file__).resolve().parents[2]


def run_alert(config: dict[str, object], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "alert.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIWIRE_")}
    return subprocess.run(
        [sys.executable, "-m", "sentiwire", "alert", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def test_bad_window_is_refused_naming_the_field(tmp_path: Path) -> None:
    out = run_alert({"alerts": {"short_window_s": 600, "baseline_window_s": 300}}, tmp_path)
    assert out.returncode == 2
    assert "baseline_window_s" in out.stderr
    assert "alerts" in out.stderr


def test_unknown_alert_setting_is_refused(tmp_path: Path) -> None:
    out = run_alert({"alerts": {"shortwindow_s": 60}}, tmp_path)
    assert out.returncode == 2
    assert "shortwindow_s" in out.stderr


def test_unreachable_kafka_exits_unavailable(tmp_path: Path) -> None:
    config = {"kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}"}, "http": {"enabled": False}}
    out = run_alert(config, tmp_path)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "alert engine cannot start" in out.stdout + out.stderr
