"""The demo's topics, options and the daemon config it serves with (alert windows for minutes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentiwire.paths import REPO_ROOT
from streamer.enums import Variant
from streamer.model.bundle import load_bundle
from streamer.testing import daemon_config

NEWS, LABELS, DEAD = "news", "labels", "labels.dead-letter"
ALERTS, ALERT_STATE = "sentiwire.alerts", "sentiwire.alerts.state"


@dataclass(frozen=True)
class Topics:
    """The demo's topic names; a prefix keeps a demo on a shared broker apart from everything else."""

    prefix: str = ""

    @property
    def news(self) -> str:
        return self.prefix + NEWS

    @property
    def labels(self) -> str:
        return self.prefix + LABELS

    @property
    def dead(self) -> str:
        return self.prefix + DEAD

    @property
    def alerts(self) -> str:
        return self.prefix + ALERTS

    @property
    def alert_state(self) -> str:
        return self.prefix + ALERT_STATE


@dataclass
class DemoOptions:
    """What ``sentiwire dev demo`` was asked for (its options, resolved)."""

    model: Path
    data_dir: Path
    variant: Variant | None = None  # None: demo_variant() picks
    rate: float = 20.0
    source: str = "mixed"
    duration_s: float | None = None
    burst_ticker: str | None = "TSLA"
    burst_at_s: float = 45.0
    burst_duration_s: float = 40.0
    burst_share: float = 0.7
    bootstrap: str | None = None
    http_port: int | None = None
    workdir: Path = REPO_ROOT / ".kafka" / "demo"
    max_lines_per_s: float = 15.0
    expect_alert: bool = False
    topic_prefix: str = ""


def demo_variant(model: Path, asked: Variant | None) -> tuple[Variant, str]:
    """The graph to serve and why: int8 (the faster one on CPU) unless asked otherwise or the
    bundle's int8 failed its export precision gate, which the daemon would refuse."""
    if asked is not None:
        return asked, f"--variant {asked.value}"
    if load_bundle(model, verify=False).int8_refusal():
        return Variant.FP32, "fp32: this bundle's int8 graph failed its export precision gate"
    return Variant.INT8, "int8: the faster graph on CPU (--variant fp32 for the other)"


def demo_config(
    bootstrap: str, model: Path, variant: Variant, http_port: int, topics: Topics = Topics()
) -> dict[str, Any]:
    """The daemon's YAML config: the ``serve`` defaults plus alert windows sized for minutes, not hours."""
    return daemon_config(
        fast=False,
        bootstrap=bootstrap,
        bundle=model,
        topics=topics.news,
        labels=topics.labels,
        dlq=topics.dead,
        group=f"{topics.prefix}sentiwire-demo",
        input={"auto_offset_reset": "earliest"},
        output={"include_text": True},
        model={"variant": str(variant), "reload_interval_s": 10},
        batching={"max_batch_size": 32, "max_wait_ms": 20},
        http={"port": http_port},
        shutdown_timeout_s=20,
        alerts={
            "enabled": True,
            "alerts_topic": topics.alerts,
            "state_topic": topics.alert_state,
            # A demo lasts minutes: 20 s windows against a 5-minute baseline, 5 s buckets.
            "short_window_s": 20,
            "baseline_window_s": 300,
            "bucket_s": 5,
            "allowed_lateness_s": 5,
            "min_count": 12,
            "cooldown_s": 60,
            "idle_advance_s": 10,
        },
    )
