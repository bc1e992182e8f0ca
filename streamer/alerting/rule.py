"""The firing rule of one scope: Wilson bound against a shrunk baseline, hysteresis, cooldown.

Pure arithmetic on counts; it knows nothing about buckets, scopes or records. A scope fires
when its short window holds at least ``min_count`` messages, its negative share is at least
``absolute_floor``, and the one-sided Wilson lower bound of that share (at ``confidence``)
exceeds the baseline plus ``min_lift``. It resolves once the bound is no longer above the
baseline plus ``resolve_lift`` (hysteresis), and may not fire again for ``cooldown_s``.
A sparse scope's baseline is shrunk towards the global one (``baseline_prior_weight``
pseudo-messages), so a new ticker is judged against the market, not 0/0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from streamer.config import AlertsConfig

STATISTIC = "wilson_lower_bound"


def wilson_lower(negatives: float, n: float, z: float) -> float:
    """One-sided Wilson score lower bound of a proportion (0 for an empty window)."""
    if n <= 0:
        return 0.0
    p = min(max(negatives / n, 0.0), 1.0)
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z2 / n))


def shrunk_share(negatives: float, n: float, prior: float, weight: float) -> float:
    """Negative share with ``weight`` pseudo-messages at ``prior`` (empirical Bayes)."""
    denom = n + weight
    return (negatives + weight * prior) / denom if denom > 0 else prior


@dataclass
class ActiveAlert:
    alert_id: str
    started_at_ms: int
    peak_share: float


@dataclass
class Evaluation:
    """The numbers behind one scope's latest decision (also what the metrics export)."""

    at_ms: int = 0
    count: float = 0.0
    negatives: float = 0.0
    share: float = 0.0
    baseline_share: float = 0.0
    baseline_count: float = 0.0
    statistic: float = 0.0
    threshold: float = 0.0


class SpikeRule:
    """The thresholds of ``AlertsConfig`` as decisions on an ``Evaluation``."""

    def __init__(self, config: AlertsConfig) -> None:
        self.config = config
        self.z = NormalDist().inv_cdf(config.confidence)

    def global_baseline(self, base_negatives: float, base_n: float) -> float:
        cfg = self.config
        return shrunk_share(base_negatives, base_n, cfg.default_baseline_share, cfg.baseline_prior_weight)

    def scope_baseline(self, base_negatives: float, base_n: float, global_baseline: float) -> float:
        return shrunk_share(base_negatives, base_n, global_baseline, self.config.baseline_prior_weight)

    def evaluate(
        self, at_ms: int, n: float, negatives: float, baseline: float, baseline_count: float
    ) -> Evaluation:
        share = negatives / n if n > 0 else 0.0
        stat = wilson_lower(negatives, n, self.z)
        return Evaluation(
            at_ms, n, negatives, share, baseline, baseline_count, stat, baseline + self.config.min_lift
        )

    def fires(self, ev: Evaluation) -> bool:
        """The window alone would fire (cooldown aside)."""
        cfg = self.config
        return ev.count >= cfg.min_count and ev.share >= cfg.absolute_floor and ev.statistic > ev.threshold

    def may_fire(self, ev: Evaluation, cooldown_until_ms: int) -> bool:
        return ev.at_ms >= cooldown_until_ms and self.fires(ev)

    def resolves(self, ev: Evaluation) -> bool:
        return ev.statistic <= ev.baseline_share + self.config.resolve_lift

    def cooldown_until(self, resolved_at_ms: int) -> int:
        return resolved_at_ms + int(self.config.cooldown_s * 1000)
