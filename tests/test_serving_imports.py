"""The serving side never imports torch or transformers (not even lazily on the serve path)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import sys
from typer.testing import CliRunner

import streamer
import streamer.app, streamer.pipeline, streamer.model.classifier, streamer.model.bundle, streamer.model.reload
import streamer.config, streamer.http, streamer.kafka.clients, streamer.records, streamer.scheduler
from sentiwire.cli import _register, app

_register()
result = CliRunner().invoke(app, ["serve", "--help"])
assert result.exit_code == 0, result.output
assert "--config" in result.output, result.output
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
print("HEAVY=" + ",".join(heavy))
"""


def test_serving_path_imports_no_torch_or_transformers() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    heavy = [line for line in proc.stdout.splitlines() if line.startswith("HEAVY=")]
    assert heavy == ["HEAVY="], f"serving path imported: {heavy}"


def test_serve_help_subprocess() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sentiwire", "serve", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--config" in proc.stdout
