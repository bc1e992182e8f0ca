"""Alert events and their JSON on the alerts topic (README "Alerts", Outputs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from streamer.alerting.rule import STATISTIC, Evaluation
from streamer.config import AlertsConfig

AlertState = Literal["firing", "resolved"]


@dataclass(frozen=True)
class Overlap:
    """Records a firing scope's short window shares with another firing scope's, at one boundary.

    What incident grouping needs to tell whether one scope's burst explains the other's.
    """

    scope_kind: str
    scope: str
    n: float
    negatives: float
    other: Evaluation  # the other scope's evaluation at the same boundary


@dataclass(frozen=True)
class AlertEvent:
    """One state change of one scope: what goes to the alerts topic (see ``to_json``)."""

    alert_id: str
    scope_kind: str
    scope: str
    state: AlertState
    at_ms: int
    started_at_ms: int
    resolved_at_ms: int | None
    short_window_s: float
    baseline_window_s: float
    negative_share: float
    baseline_share: float
    count: float
    negatives: float
    baseline_count: float
    statistic: str
    statistic_value: float
    threshold: float
    absolute_floor: float
    min_count: float
    confidence: float
    first_source: dict[str, Any] | None
    last_source: dict[str, Any] | None
    examples: tuple[dict[str, Any], ...]
    # Firing events only; not part of the JSON (incidents use it).
    overlaps: tuple[Overlap, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.scope_kind, self.scope)

    def to_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "scope_kind": self.scope_kind,
            "scope": self.scope,
            "state": self.state,
            "at": self.at_ms,
            "started_at": self.started_at_ms,
            "resolved_at": self.resolved_at_ms,
            "windows": {"short_s": self.short_window_s, "baseline_s": self.baseline_window_s},
            "negative_share": round(self.negative_share, 6),
            "baseline_share": round(self.baseline_share, 6),
            "count": self.count,
            "negatives": self.negatives,
            "baseline_count": self.baseline_count,
            "statistic": {
                "name": STATISTIC,
                "value": round(self.statistic_value, 6),
                "threshold": round(self.threshold, 6),
                "confidence": self.confidence,
                "absolute_floor": self.absolute_floor,
                "min_count": self.min_count,
            },
            "first_source": self.first_source,
            "last_source": self.last_source,
            "examples": list(self.examples),
        }


def make_event(
    cfg: AlertsConfig,
    kind: str,
    name: str,
    state: AlertState,
    ev: Evaluation,
    alert_id: str,
    started_at_ms: int,
    first: dict[str, Any] | None,
    last: dict[str, Any] | None,
    examples: list[dict[str, Any]],
) -> AlertEvent:
    """The event for one scope's decision; keeps the most recent few negatives of the window."""
    examples = examples[-cfg.max_examples :] if cfg.max_examples > 0 else []
    return AlertEvent(
        alert_id=alert_id,
        scope_kind=kind,
        scope=name,
        state=state,
        at_ms=ev.at_ms,
        started_at_ms=started_at_ms,
        resolved_at_ms=ev.at_ms if state == "resolved" else None,
        short_window_s=cfg.short_window_s,
        baseline_window_s=cfg.baseline_window_s,
        negative_share=ev.share,
        baseline_share=ev.baseline_share,
        count=ev.count,
        negatives=ev.negatives,
        baseline_count=ev.baseline_count,
        statistic=STATISTIC,
        statistic_value=ev.statistic,
        threshold=ev.threshold,
        absolute_floor=cfg.absolute_floor,
        min_count=cfg.min_count,
        confidence=cfg.confidence,
        first_source=first,
        last_source=last,
        examples=tuple(examples),
    )
