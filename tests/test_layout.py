"""README "Layout" lists every product module with its role, and nothing that is not there."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("streamer", "training", "sentiwire", "bench")


def _modules() -> set[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {p for p in out if p.endswith(".py") and not p.endswith("__main__.py") and (ROOT / p).is_file()}


def _layout_rows() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+\.py)` \|", section, flags=re.M))


def test_every_module_has_a_layout_line() -> None:
    missing = sorted(_modules() - _layout_rows())
    assert not missing, f"modules without a line in README Layout: {missing}"


def test_layout_names_only_modules_that_exist() -> None:
    stale = sorted(p for p in _layout_rows() if not (ROOT / p).is_file())
    assert not stale, f"README Layout names files that do not exist: {stale}"
