"""Where the dev tools, the bench and the tests find the checkout and the shared data."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """``$SENTIWIRE_DATA_DIR``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("SENTIWIRE_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
