"""``sentiwire serve`` configs for the dev tools (demo, bench) with serve's defaults, not a test's.

``streamer.testing.daemon_config`` is the one config builder; its defaults suit tests (short
linger, frequent commits, a small in-flight window, a quick shutdown). The demo and the bench
show and measure what a deployment runs, so those keys go back to serve's own defaults here,
read from the config models so they cannot drift.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from streamer.config import BatchingConfig, OutputConfig, Settings
from streamer.testing import daemon_config, merge_sections


def serve_defaults() -> dict[str, Any]:
    """The sections where ``daemon_config``'s test defaults differ from serve's."""
    return {
        "output": {"linger_ms": OutputConfig.model_fields["linger_ms"].default},
        "batching": {
            name: BatchingConfig.model_fields[name].default
            for name in ("max_in_flight", "commit_interval_ms")
        },
        "shutdown_timeout_s": Settings.model_fields["shutdown_timeout_s"].default,
    }


def serve_config(
    *,
    bootstrap: str,
    bundle: Path | str,
    topics: list[str] | str,
    labels: str,
    dlq: str,
    group: str,
    **sections: Any,
) -> dict[str, Any]:
    """``daemon_config`` with serve's defaults; each keyword section is merged over them."""
    return daemon_config(
        bootstrap=bootstrap,
        bundle=bundle,
        topics=topics,
        labels=labels,
        dlq=dlq,
        group=group,
        **merge_sections(serve_defaults(), sections),
    )


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """The config as the YAML file ``sentiwire serve --config`` reads; returns ``path``."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
