"""Helpers shared by the chart tests (rendering, lookups)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "sentiwire"
KUBE_VERSION = "1.37.0"


def render_error(helm_bin: str, *sets: str) -> str:
    """Render expecting failure; returns helm's error output (fails the test if rendering succeeds)."""
    cmd = [helm_bin, "template", "sw", str(CHART), "--kube-version", KUBE_VERSION]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        pytest.fail(f"rendering with {sets} succeeded but must fail")
    return proc.stderr


def find(objs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(hits) == 1, (
        f"expected one {kind} named *{name_suffix}, got {[o['metadata']['name'] for o in hits]}"
    )
    return hits[0]
