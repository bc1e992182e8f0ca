"""Whether a shadow has earned promotion, from the daemons' /metrics: pure but for :func:`scrape`.

Per head, the samples (``sentiwire_shadow_compared_total`` summed over live x shadow labels)
and the agreement (``sentiwire_shadow_agreement``, since that shadow version loaded) of every
replica are combined: counts summed, agreement weighted by each replica's count. Evidence is
only taken from a replica whose shadow is the bundle the shadow link points at, serving beside
the bundle the served link points at, so a promotion never rests on another model's numbers.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamer.errors import UnavailableError

SHADOW_INFO = "sentiwire_shadow_info"
SHADOW_COMPARED = "sentiwire_shadow_compared_total"
SHADOW_AGREEMENT = "sentiwire_shadow_agreement"
MODEL_INFO = "sentiwire_model_info"


class EvidenceUnavailable(UnavailableError):
    """No usable shadow evidence (exit 3): a daemon did not answer, runs no shadow, or another one."""


@dataclass(frozen=True)
class ReplicaEvidence:
    """What one daemon's /metrics says about its shadow."""

    url: str
    shadow: tuple[str, str] | None  # (name, version) from sentiwire_shadow_info; None: no shadow loaded
    served: tuple[str, str] | None  # (name, version) from sentiwire_model_info
    samples: dict[str, float] = field(default_factory=dict)  # head -> compared
    agreement: dict[str, float] = field(default_factory=dict)  # head -> share of equal labels

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "shadow_version": self.shadow[1] if self.shadow else None,
            "served_version": self.served[1] if self.served else None,
            "heads": {
                h: {"samples": int(n), "agreement": self.agreement.get(h)} for h, n in self.samples.items()
            },
        }


def parse_metrics(url: str, text: str) -> ReplicaEvidence:
    """The shadow part of one Prometheus text exposition (prometheus_client's own parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    shadow: tuple[str, str] | None = None
    served: tuple[str, str] | None = None
    samples: dict[str, float] = {}
    agreement: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == SHADOW_INFO and s.value == 1:
                    shadow = (s.labels.get("name", ""), s.labels.get("version", ""))
                elif s.name == MODEL_INFO and s.value == 1:
                    served = (s.labels.get("name", ""), s.labels.get("version", ""))
                elif s.name == SHADOW_COMPARED and "head" in s.labels:
                    samples[s.labels["head"]] = samples.get(s.labels["head"], 0.0) + s.value
                elif s.name == SHADOW_AGREEMENT and "head" in s.labels:
                    agreement[s.labels["head"]] = s.value
    except ValueError as exc:
        raise EvidenceUnavailable(f"{url}: not a Prometheus text exposition ({exc})") from exc
    return ReplicaEvidence(url, shadow, served, samples, agreement)


def scrape(url: str, timeout_s: float = 10.0) -> ReplicaEvidence:
    """GET one daemon's /metrics and parse it; any failure is :class:`EvidenceUnavailable`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            text = resp.read().decode("utf-8")
    except (urllib.error.URLError, OSError, ValueError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise EvidenceUnavailable(f"{url}: metrics not readable ({reason})") from exc
    return parse_metrics(url, text)


def check_replicas(
    replicas: Sequence[ReplicaEvidence], shadow: tuple[str, str], served: tuple[str, str]
) -> None:
    """Refuse evidence that is not about ``shadow`` (name, version) beside ``served``."""
    for r in replicas:
        if r.shadow is None:
            raise EvidenceUnavailable(f"{r.url}: the daemon reports no shadow loaded (no {SHADOW_INFO})")
        if r.shadow != shadow:
            raise EvidenceUnavailable(
                f"{r.url}: the daemon's shadow is {r.shadow[0]} {r.shadow[1]}, the shadow link points at "
                f"{shadow[0]} {shadow[1]}: wait for its reload (model.reload_interval_s) and run again"
            )
        if r.served is not None and r.served != served:
            raise EvidenceUnavailable(
                f"{r.url}: the daemon serves {r.served[0]} {r.served[1]}, the served link points at "
                f"{served[0]} {served[1]}: its agreement is against another model"
            )


@dataclass(frozen=True)
class HeadEvidence:
    head: str
    samples: int
    agreement: float | None  # None: no sample compared


def combine(replicas: Sequence[ReplicaEvidence], heads: Collection[str]) -> tuple[HeadEvidence, ...]:
    """Per head: samples summed over replicas, agreement weighted by each replica's samples."""
    out = []
    for head in sorted(heads):
        n = sum(r.samples.get(head, 0.0) for r in replicas)
        agreed = sum(r.samples.get(head, 0.0) * r.agreement.get(head, 0.0) for r in replicas)
        out.append(HeadEvidence(head, int(n), agreed / n if n > 0 else None))
    return tuple(out)


@dataclass(frozen=True)
class PromoteDecision:
    promote: bool
    reason: str
    heads: tuple[HeadEvidence, ...]
    min_samples: int
    min_agreement: float
    forced: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "reason": self.reason,
            "forced": self.forced,
            "min_samples": self.min_samples,
            "min_agreement": self.min_agreement,
            "heads": {h.head: {"samples": h.samples, "agreement": h.agreement} for h in self.heads},
        }


def decide_promotion(
    evidence: Mapping[str, Mapping[str, Any]], *, min_samples: int, min_agreement: float
) -> PromoteDecision:
    """Promote iff every head has at least ``min_samples`` samples and ``min_agreement`` agreement.

    ``evidence`` maps head -> ``{"samples": int, "agreement": float | None}``; it must name every
    head of the shadow bundle (a head without samples refuses: nothing is promoted unjudged).
    """
    heads = tuple(
        HeadEvidence(h, int(e.get("samples") or 0), e.get("agreement")) for h, e in sorted(evidence.items())
    )
    if not heads:
        return PromoteDecision(False, "no head to judge the shadow on", heads, min_samples, min_agreement)
    few = [h for h in heads if h.samples < min_samples or h.agreement is None]
    if few:
        why = ", ".join(f"{h.head} {h.samples}" for h in few)
        return PromoteDecision(
            False, f"too few samples (need {min_samples} per head): {why}", heads, min_samples, min_agreement
        )
    # Exactly min_agreement passes; 1e-9 absorbs the float noise of the weighted mean.
    low = [h for h in heads if h.agreement is not None and h.agreement < min_agreement - 1e-9]
    if low:
        why = ", ".join(f"{h.head} {h.agreement:.4f} over {h.samples} samples" for h in low)
        return PromoteDecision(
            False, f"agreement below {min_agreement}: {why}", heads, min_samples, min_agreement
        )
    why = ", ".join(f"{h.head} {h.agreement:.4f} over {h.samples}" for h in heads)
    return PromoteDecision(
        True, f"every head agrees >= {min_agreement}: {why}", heads, min_samples, min_agreement
    )
