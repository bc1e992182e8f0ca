"""The systems under test and how each is started: the two peers and sentiwire fp32/int8.

Each is a child process given a bootstrap, an input and an output topic and a group; the
label records it writes carry the input record's timestamp (in different fields), which is
what latency is measured from.
"""

from __future__ import annotations

import socket
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.enums import Variant
from streamer.testing import daemon_config, write_config

PY = sys.executable

# bootstrap, input topic, output topic, group, workdir -> the command line
Argv = Callable[[str, str, str, str, Path], list[str]]


def sentiwire_in_ts(value: dict[str, Any]) -> int | None:
    """The input record's timestamp in a sentiwire label record (``source.timestamp``)."""
    src = value.get("source")
    return int(src["timestamp"]) if isinstance(src, dict) and src.get("timestamp") is not None else None


def peer_in_ts(value: dict[str, Any]) -> int | None:
    """The input record's timestamp in a peer's label record (``source_ts``)."""
    ts = value.get("source_ts")
    return int(ts) if ts is not None else None


@dataclass
class System:
    key: str
    label: str
    variant: Variant | None
    argv: Argv
    in_ts: Callable[[dict[str, Any]], int | None]
    startup_timeout_s: float = 180.0
    metrics_port: int | None = None  # sentiwire's /metrics, set when its command line is built


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cache_counters(metrics_text: str) -> dict[str, float]:
    """``sentiwire_cache_*`` samples of a Prometheus text page (hits/misses/evictions totals, entries, bytes)."""
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("sentiwire_cache_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            if name.endswith("_created"):
                continue
            out[name.removeprefix("sentiwire_cache_")] = float(value)
    return out


def scrape_cache(system: System) -> dict[str, float] | None:
    """The running daemon's response-cache counters, or None (a peer, or the page did not answer)."""
    if system.metrics_port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{system.metrics_port}/metrics", timeout=5) as resp:
            return cache_counters(resp.read().decode())
    except OSError:
        return None


def peer_system(kind: str, model_dir: Path, max_length: int, batch_size: int) -> System:
    """``python -m bench.peers naive|batched`` on the pretrained MiniLM (fp32 PyTorch)."""

    def argv(bootstrap: str, src: str, dst: str, group: str, _wd: Path) -> list[str]:
        return [
            PY,
            "-m",
            "bench.peers",
            kind,
            "--bootstrap",
            bootstrap,
            "--input",
            src,
            "--output",
            dst,
            "--group",
            group,
            "--model-dir",
            str(model_dir),
            "--max-length",
            str(max_length),
            "--batch-size",
            str(batch_size),
        ]

    label = (
        "naive peer (pipeline per message)"
        if kind == "naive"
        else f"batched PyTorch peer (batch {batch_size})"
    )
    return System(kind, label, Variant.FP32, argv, peer_in_ts)


def sentiwire_system(
    bundle: Path,
    variant: Variant,
    batch_size: int,
    max_wait_ms: float,
    *,
    bucket: bool = True,
    allow_spinning: bool = False,
    workers: int = 2,
    tag: str = "",
    key_suffix: str = "",
    runtime: str = "auto",
) -> System:
    """``sentiwire serve --config`` with a config file written into the run's workdir.

    ``runtime`` is ``model.runtime`` (``auto`` = what the daemon picks for this machine); the
    precision is the variant's (``model.variant`` and ``model.precision`` move together).
    """

    def argv(bootstrap: str, src: str, dst: str, group: str, wd: Path) -> list[str]:
        system.metrics_port = free_port()
        config = daemon_config(
            fast=False,
            bootstrap=bootstrap,
            bundle=bundle,
            topics=src,
            labels=dst,
            dlq=f"{dst}.dlq",
            group=group,
            input={"auto_offset_reset": "earliest"},
            model={
                "variant": str(variant),
                "runtime": runtime,
                "reload_interval_s": 0,
                "allow_spinning": allow_spinning,
                "workers": workers,
            },
            batching={
                "max_batch_size": batch_size,
                "max_wait_ms": max_wait_ms,
                "bucket_by_length": bucket,
            },
            logging={"level": "WARNING"},
            http={"host": "127.0.0.1", "port": system.metrics_port},
        )
        path = write_config(wd / f"sentiwire-{group}.yaml", config)
        return [PY, "-m", "sentiwire", "serve", "--config", str(path)]

    name = f"sentiwire {variant}{tag}"
    system = System(f"sentiwire-{variant}{key_suffix}", name, variant, argv, sentiwire_in_ts)
    return system
