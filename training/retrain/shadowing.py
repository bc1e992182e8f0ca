"""The shadow link: ``retrain --shadow`` points it at a gated candidate, ``sentiwire promote``
swaps the served link to its target once the daemons' shadow evidence is good enough.

Both swaps are :func:`~training.retrain.registry.swap_symlink` (atomic) under the models
directory's lock, and every promote decision is a ``history.jsonl`` record. The shadow link is
kept after a promotion (it then names the served version): the daemons' config requires a
bundle at ``model.shadow.path`` to start, so removing it would stop a restarted pod. A second
``promote`` then has nothing to do.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.retrain.errors import RetrainError
from training.retrain.promote import (
    EvidenceUnavailable,
    PromoteDecision,
    ReplicaEvidence,
    check_replicas,
    combine,
    decide_promotion,
    scrape,
)
from training.retrain.registry import ModelsDir, append_history, locked, swap_symlink


def check_shadow_link(link: Path, served: Path) -> None:
    """A path ``retrain --shadow`` may (re)point: not the served link, not a real file or directory."""
    if link.absolute() == served.absolute():
        raise RetrainError(f"--shadow {link}: is the served link; name another path (e.g. models/shadow)")
    if link.exists() and not link.is_symlink():
        raise RetrainError(
            f"--shadow {link}: exists and is not a symlink; it would not be swapped atomically"
        )
    if not link.parent.is_dir():
        raise RetrainError(f"--shadow {link}: directory {link.parent} does not exist")


@dataclass
class PromoteOptions:
    served: Path
    shadow: Path
    metrics_urls: list[str] = field(default_factory=list)
    min_samples: int = 1000
    min_agreement: float = 0.9
    force: bool = False
    timeout_s: float = 10.0


def _check(opts: PromoteOptions) -> None:
    if opts.min_samples < 0:
        raise RetrainError(f"--min-samples must be >= 0, got {opts.min_samples}")
    if not 0.0 <= opts.min_agreement <= 1.0:
        raise RetrainError(f"--min-agreement must be within 0-1, got {opts.min_agreement}")
    if not opts.metrics_urls and not opts.force:
        raise RetrainError(
            "--metrics-url is needed (the daemons' /metrics), or --force to promote without it"
        )
    if not opts.shadow.is_symlink():
        raise RetrainError(
            f"{opts.shadow}: no shadow link there (see `sentiwire retrain --shadow {opts.shadow}`)"
        )
    if not opts.shadow.resolve().is_dir():
        raise RetrainError(f"{opts.shadow}: symlink target {os.readlink(opts.shadow)} does not exist")


def promote_shadow(opts: PromoteOptions) -> dict[str, Any]:
    """Promote the shadow link's bundle if the evidence allows (or ``force``); returns the record.

    A refusal is a record with ``decision.promote`` false. Evidence that cannot be read or is
    about another model raises :class:`EvidenceUnavailable` and records nothing; a shadow that
    is already served is a ``skipped`` record, not written either.
    """
    from streamer.model.bundle import load_bundle

    md = ModelsDir(opts.served)
    md.check()
    _check(opts)
    with locked(md.root):
        started = time.monotonic()
        current = load_bundle(opts.served, verify=False)
        shadow = load_bundle(opts.shadow, verify=True)
        if shadow.path == current.path:
            return {
                "event": "promote",
                "skipped": True,
                "current": {"version": current.version, "path": str(current.path)},
                "candidate": {"version": shadow.version, "path": str(shadow.path)},
                "decision": {"promote": False, "reason": f"{opts.shadow} names the served version"},
            }
        heads = [h.name for h in shadow.heads]
        if heads != [h.name for h in current.heads]:
            raise RetrainError(
                f"{opts.shadow}: the shadow's heads {heads} differ from the served "
                f"{[h.name for h in current.heads]}; it cannot replace it"
            )
        replicas: list[ReplicaEvidence] = []
        unread = None
        try:
            replicas = [scrape(url, opts.timeout_s) for url in opts.metrics_urls]
            check_replicas(replicas, (shadow.name, shadow.version), (current.name, current.version))
        except EvidenceUnavailable as exc:
            if not opts.force:
                raise
            replicas, unread = [], str(exc)
        decision = _decision(opts, replicas, heads, unread)
        record: dict[str, Any] = {
            "event": "promote",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "current": {"version": current.version, "path": str(current.path)},
            "candidate": {"version": shadow.version, "path": str(shadow.path)},
            "shadow_link": str(opts.shadow),
            "replicas": [r.to_json() for r in replicas],
            "decision": decision.to_json(),
        }
        if decision.promote:
            swap_symlink(opts.served, shadow.path)
        record["seconds"] = round(time.monotonic() - started, 1)
        append_history(md.history, record)
        return record


def _decision(
    opts: PromoteOptions, replicas: list[ReplicaEvidence], heads: list[str], unread: str | None
) -> PromoteDecision:
    if not replicas:
        why = f"evidence not read: {unread}" if unread else "no --metrics-url"
        return PromoteDecision(True, f"forced ({why})", (), opts.min_samples, opts.min_agreement, forced=True)
    evidence = {h.head: {"samples": h.samples, "agreement": h.agreement} for h in combine(replicas, heads)}
    decision = decide_promotion(evidence, min_samples=opts.min_samples, min_agreement=opts.min_agreement)
    if opts.force and not decision.promote:
        return replace(
            decision, promote=True, forced=True, reason=f"forced (would refuse: {decision.reason})"
        )
    return decision
