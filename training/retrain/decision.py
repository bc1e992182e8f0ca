"""The promotion decision, pure: per head, candidate vs current macro-F1 on one holdout."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from training.retrain.errors import RetrainError


@dataclass(frozen=True)
class HeadComparison:
    head: str
    current: float
    candidate: float
    n: int

    @property
    def delta(self) -> float:
        return self.candidate - self.current


@dataclass(frozen=True)
class Decision:
    promote: bool
    tolerance: float
    heads: tuple[HeadComparison, ...]
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "tolerance": self.tolerance,
            "reason": self.reason,
            "heads": {
                h.head: {"current": h.current, "candidate": h.candidate, "delta": h.delta, "n": h.n}
                for h in self.heads
            },
        }


def decide(
    current: Mapping[str, Any],
    candidate: Mapping[str, Any],
    tolerance: float,
    *,
    heads: Collection[str] | None = None,
) -> Decision:
    """Promote iff every head keeps its holdout macro-F1 within ``tolerance``.

    Both metric arguments map head -> metrics dict with ``macro_f1`` and ``n`` (holdout rows).
    ``heads`` are the heads that must be judged (the served ones; default: those ``current``
    was scored on). A head without a current score, a head the candidate lacks, or nothing
    scored at all refuses: nothing is promoted unjudged.
    """
    if tolerance < 0:
        raise RetrainError(f"tolerance must be >= 0, got {tolerance}")
    if not current:
        return Decision(False, tolerance, (), "no head has holdout rows: nothing to judge the candidate on")
    unscored = sorted(h for h in (heads or ()) if current.get(h, {}).get("macro_f1") is None)
    if unscored:
        return Decision(
            False, tolerance, (), f"head(s) {unscored} cannot be scored: no holdout rows for them"
        )
    rows: list[HeadComparison] = []
    missing: list[str] = []
    for head in sorted(current):
        if head not in candidate or candidate[head].get("macro_f1") is None:
            missing.append(head)
            continue
        rows.append(
            HeadComparison(
                head,
                float(current[head]["macro_f1"]),
                float(candidate[head]["macro_f1"]),
                int(current[head]["n"]),
            )
        )
    if missing:
        return Decision(False, tolerance, tuple(rows), f"candidate has no score for head(s) {missing}")
    # A drop of exactly `tolerance` is allowed; 1e-9 absorbs float noise in the subtraction.
    worse = [h for h in rows if h.delta < -tolerance - 1e-9]
    if worse:
        why = ", ".join(f"{h.head} {h.current:.4f} -> {h.candidate:.4f} ({h.delta:+.4f})" for h in worse)
        return Decision(False, tolerance, tuple(rows), f"macro-F1 dropped by more than {tolerance}: {why}")
    summary = ", ".join(f"{h.head} {h.current:.4f} -> {h.candidate:.4f}" for h in rows)
    return Decision(True, tolerance, tuple(rows), f"no head dropped by more than {tolerance}: {summary}")
