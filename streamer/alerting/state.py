"""Detector state as plain JSON, and the per-scope records of the compacted state topic.

``snapshot``/``restore`` carry everything (buckets, running baselines, active alerts,
cooldowns), so a restored detector continues exactly where the original stood. The engine
persists only the small ``ScopeAlertRecord`` per scope to Kafka (baselines are rebuilt by
replaying the labels topic) and reconciles it after the replay with ``reconcile``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from streamer.alerting.detector import DetectorStats, ScopeState, SpikeDetector
from streamer.alerting.rule import ActiveAlert, Evaluation
from streamer.alerting.windows import Bucket
from streamer.config import AlertsConfig
from streamer.errors import UsageError

SNAPSHOT_VERSION = 2


class StateError(UsageError):
    """A snapshot or state record that cannot be restored; says which field is wrong."""


def _scope_to_json(s: ScopeState) -> dict[str, Any]:
    return {
        "kind": s.kind,
        "name": s.name,
        "buckets": [
            [b, bk.n, bk.neg, bk.first, bk.last, bk.examples, bk.by_topic]
            for b, bk in sorted(s.buckets.items())
        ],
        "base_n": s.base_n,
        "base_neg": s.base_neg,
        "base_hi": s.base_hi,
        "lo": s.lo,
        "max_bucket": s.max_bucket,
        "last_seen_ms": s.last_seen_ms,
        "active": None if s.active is None else asdict(s.active),
        "cooldown_until_ms": s.cooldown_until_ms,
        "last": asdict(s.last),
    }


def _scope_from_json(d: Mapping[str, Any]) -> ScopeState:
    try:
        s = ScopeState(str(d["kind"]), str(d["name"]))
        s.buckets = {
            int(b): Bucket(float(n), float(neg), first, last, list(ex), by_topic)
            for b, n, neg, first, last, ex, by_topic in d["buckets"]
        }
        s.base_n = float(d["base_n"])
        s.base_neg = float(d["base_neg"])
        s.base_hi = None if d["base_hi"] is None else int(d["base_hi"])
        s.lo = None if d["lo"] is None else int(d["lo"])
        s.max_bucket = int(d["max_bucket"])
        s.last_seen_ms = int(d["last_seen_ms"])
        s.active = None if d["active"] is None else ActiveAlert(**d["active"])
        s.cooldown_until_ms = int(d["cooldown_until_ms"])
        s.last = Evaluation(**d["last"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"scope {d.get('kind')}:{d.get('name')}: bad or missing field ({exc!r})") from exc
    return s


def snapshot(detector: SpikeDetector) -> dict[str, Any]:
    """Everything the detector knows, JSON-serialisable."""
    return {
        "version": SNAPSHOT_VERSION,
        "fingerprint": detector.config.detector_fingerprint(),
        "max_ts_ms": detector.max_ts_ms,
        "clock": detector.clock.to_json(),
        "next_eval_ms": detector.next_eval_ms,
        "stats": asdict(detector.stats),
        "global": _scope_to_json(detector.global_scope),
        "topics": [_scope_to_json(s) for s in detector.topics.values()],
        # In LRU order, least recently seen first.
        "entities": [_scope_to_json(s) for s in detector.entity_scopes.values()],
    }


def restore(config: AlertsConfig, data: Mapping[str, Any]) -> SpikeDetector:
    """A detector equal to the one ``snapshot`` was taken from (same windows required)."""
    if data.get("version") != SNAPSHOT_VERSION:
        raise StateError(f"snapshot version {data.get('version')!r} is not {SNAPSHOT_VERSION}")
    if data.get("fingerprint") != config.detector_fingerprint():
        raise StateError(
            "snapshot was taken with other windows (short_window_s/baseline_window_s/bucket_s); "
            f"fingerprint {data.get('fingerprint')!r} != {config.detector_fingerprint()!r}"
        )
    det = SpikeDetector(config)
    try:
        det.clock.load(data["clock"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"clock: bad or missing field ({exc!r})") from exc
    det.next_eval_ms = data["next_eval_ms"]
    det.stats = DetectorStats(**data["stats"])
    det.global_scope = _scope_from_json(data["global"])
    for d in data["topics"]:
        s = _scope_from_json(d)
        det.topics[s.name] = s
    for d in data["entities"]:
        s = _scope_from_json(d)
        det.entity_scopes[s.name] = s
    return det


@dataclass(frozen=True)
class ScopeAlertRecord:
    """What the state topic holds per scope (key ``kind:name``): the last published state."""

    scope_kind: str
    scope: str
    state: Literal["firing", "resolved"]
    alert_id: str
    started_at_ms: int
    resolved_at_ms: int | None
    cooldown_until_ms: int
    # The incident the scope was paged under (its own alert id when it opened it).
    incident_id: str | None = None

    @property
    def key(self) -> str:
        return scope_key(self.scope_kind, self.scope)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ScopeAlertRecord:
        try:
            state = d["state"]
            if state not in ("firing", "resolved"):
                raise ValueError(f"state {state!r}")
            return cls(
                scope_kind=str(d["scope_kind"]),
                scope=str(d["scope"]),
                state=state,
                alert_id=str(d["alert_id"]),
                started_at_ms=int(d["started_at_ms"]),
                resolved_at_ms=None if d.get("resolved_at_ms") is None else int(d["resolved_at_ms"]),
                cooldown_until_ms=int(d["cooldown_until_ms"]),
                incident_id=None if d.get("incident_id") is None else str(d["incident_id"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"state record {dict(d)!r}: bad or missing field ({exc!r})") from exc


def scope_key(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def record_for(
    detector: SpikeDetector,
    kind: str,
    name: str,
    *,
    state: Literal["firing", "resolved"],
    alert_id: str,
    started_at_ms: int,
    resolved_at_ms: int | None,
    incident_id: str | None = None,
) -> ScopeAlertRecord:
    """The state-topic record after publishing an event for this scope."""
    cooldown = started_at_ms
    if state == "resolved" and resolved_at_ms is not None:
        cooldown = resolved_at_ms + int(detector.config.cooldown_s * 1000)
    return ScopeAlertRecord(kind, name, state, alert_id, started_at_ms, resolved_at_ms, cooldown, incident_id)


@dataclass(frozen=True)
class Reconciled:
    """Events to publish after a replay: alerts that ended, or started, while nobody published."""

    to_fire: list[tuple[str, str]]
    to_resolve: list[ScopeAlertRecord]
    adopted: int
    suppressed: int


def reconcile(detector: SpikeDetector, published: Mapping[str, ScopeAlertRecord]) -> Reconciled:
    """Align the replayed detector with what was published before the restart.

    * published firing, detector firing: keep the published alert (same id), publish nothing.
    * published firing, detector quiet: the incident ended meanwhile; publish its resolve.
    * detector firing, published resolved at/after its start: already told; silence it
      (cooldown), so a restart never re-fires an old alert.
    * detector firing, nothing published since it started: publish it now.
    * published cooldowns carry over.
    """
    to_fire: list[tuple[str, str]] = []
    to_resolve: list[ScopeAlertRecord] = []
    adopted = suppressed = 0
    scopes = {scope_key(s.kind, s.name): s for s in detector.scopes()}
    for key, rec in published.items():
        s = scopes.get(key)
        if rec.state == "firing":
            if s is not None and s.active is not None:
                s.active = ActiveAlert(rec.alert_id, rec.started_at_ms, s.active.peak_share)
                adopted += 1
            else:
                to_resolve.append(rec)
        elif s is not None:
            s.cooldown_until_ms = max(s.cooldown_until_ms, rec.cooldown_until_ms)
            if s.active is not None and (rec.resolved_at_ms or 0) >= s.active.started_at_ms:
                s.active = None
                suppressed += 1
    for key, s in scopes.items():
        if s.active is not None and (key not in published or published[key].state == "resolved"):
            to_fire.append((s.kind, s.name))
    return Reconciled(to_fire, to_resolve, adopted, suppressed)
