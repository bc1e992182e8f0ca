"""One incident per burst: scopes that one burst moves are grouped under the scope that explains it.

Pure. A ticker's burst of bad news also raises its topics' and the market's negative share;
judged scope by scope, one burst pages once per scope. Here a newly firing scope joins an
open incident when one of the incident's firing scopes *explains* it — take away the records
the two windows share and the rest would not fire (``SpikeRule.fires``) — or when it explains
one of them (it then joins as related too: the incident keeps the scope that opened it).
Otherwise it opens an incident of its own. Within one boundary the most specific scope goes
first (entity, topic, global), so a ticker opens the incident its topics and the market join.
What two windows share comes from the detector (``AlertEvent.overlaps``): an entity's
records per topic, and every scope's records for the global one.

An incident fires once (its opening scope's event), is ``updated`` when a scope joins, and
resolves when its last scope resolves. Per-scope state (metrics, the state topic) is not
touched: this only decides what is paged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from streamer.alerting.events import AlertEvent, Overlap
from streamer.alerting.rule import Evaluation, SpikeRule

IncidentState = Literal["firing", "updated", "resolved"]
Relation = Literal["primary", "explained_by_incident", "explains_incident"]
ScopeKey = tuple[str, str]
SPECIFICITY = {"entity": 0, "topic": 1, "global": 2}


@dataclass
class Member:
    """One scope of an incident and its latest event."""

    event: AlertEvent
    relation: Relation
    shared_negatives: float = 0.0  # negatives its window shares with the scope it joined through
    active: bool = True

    def to_json(self) -> dict[str, Any]:
        e = self.event
        return {
            "scope_kind": e.scope_kind,
            "scope": e.scope,
            "alert_id": e.alert_id,
            "state": "firing" if self.active else "resolved",
            "relation": self.relation,
            "started_at": e.started_at_ms,
            "negative_share": round(e.negative_share, 6),
            "baseline_share": round(e.baseline_share, 6),
            "count": e.count,
            "negatives": e.negatives,
            "shared_negatives": self.shared_negatives,
        }


@dataclass
class Incident:
    incident_id: str  # the alert id of the scope that opened it
    primary: ScopeKey
    members: dict[ScopeKey, Member] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return any(m.active for m in self.members.values())

    def related(self) -> list[Member]:
        return [m for k, m in self.members.items() if k != self.primary]


@dataclass(frozen=True)
class IncidentEvent:
    """What goes to the alerts topic: the opening scope's event plus the related scopes."""

    incident_id: str
    state: IncidentState
    at_ms: int
    primary: AlertEvent
    related: tuple[dict[str, Any], ...]

    @property
    def key(self) -> ScopeKey:
        return self.primary.key

    def to_json(self) -> dict[str, Any]:
        doc = self.primary.to_json()
        doc["state"] = self.state
        doc["at"] = self.at_ms
        if self.state == "resolved":
            doc["resolved_at"] = self.at_ms
        doc["incident_id"] = self.incident_id
        doc["related"] = list(self.related)
        return doc


def _rest_fires(rule: SpikeRule, ev: Evaluation, shared_n: float, shared_neg: float) -> bool:
    rest = rule.evaluate(ev.at_ms, ev.count - shared_n, ev.negatives - shared_neg, ev.baseline_share, 0.0)
    return rule.fires(rest)


def _event_eval(e: AlertEvent) -> Evaluation:
    return Evaluation(
        e.at_ms, e.count, e.negatives, e.negative_share, e.baseline_share, e.baseline_count, e.statistic_value
    )


class IncidentTracker:
    """Feed each batch of per-scope events with ``observe``; it returns the incident events."""

    def __init__(self, rule: SpikeRule, *, group: bool = True) -> None:
        self.rule = rule
        self.group = group
        self.incidents: dict[str, Incident] = {}
        self._of: dict[ScopeKey, str] = {}  # scope -> incident id, while the scope is firing in it
        self._last: dict[ScopeKey, str] = {}  # scope -> the incident it last belonged to

    def incident_of(self, key: ScopeKey) -> str | None:
        return self._of.get(key)

    def last_incident_of(self, key: ScopeKey) -> str | None:
        """The incident a scope is or was last in (for its state record; kept after it resolves)."""
        return self._of.get(key) or self._last.get(key)

    def _join(self, key: ScopeKey, iid: str) -> None:
        self._of[key] = iid
        self._last[key] = iid
        if len(self._last) > 4 * len(self._of) + 1024:  # bounded: drop scopes no longer in any incident
            self._last = {k: v for k, v in self._last.items() if k in self._of}

    def open_incidents(self) -> list[Incident]:
        return list(self.incidents.values())

    def observe(self, events: Iterable[AlertEvent]) -> list[IncidentEvent]:
        out: list[IncidentEvent] = []
        batch: list[AlertEvent] = []
        for e in events:
            if batch and e.at_ms != batch[0].at_ms:
                out += self._boundary(batch)
                batch = []
            batch.append(e)
        if batch:
            out += self._boundary(batch)
        return out

    def _boundary(self, events: list[AlertEvent]) -> list[IncidentEvent]:
        """Events of one boundary: resolves first, then firings, most specific first."""
        out: list[IncidentEvent] = []
        for e in events:
            if e.state == "resolved":
                out += self._resolve(e)
        opened: list[Incident] = []
        joined: dict[str, Incident] = {}
        firing = sorted(
            (e for e in events if e.state == "firing"), key=lambda e: SPECIFICITY.get(e.scope_kind, 3)
        )
        for e in firing:
            target = self._target(e) if self.group else None
            if target is None:
                inc = Incident(e.alert_id, e.key, {e.key: Member(e, "primary")})
                self.incidents[inc.incident_id] = inc
                self._join(e.key, inc.incident_id)
                opened.append(inc)
                continue
            inc, relation, shared = target
            inc.members[e.key] = Member(e, relation, shared)
            self._join(e.key, inc.incident_id)
            if all(inc is not o for o in opened):
                joined[inc.incident_id] = inc
        out += [self._emit(inc, "firing", inc.members[inc.primary].event.at_ms) for inc in opened]
        out += [self._emit(inc, "updated", firing[0].at_ms) for inc in joined.values()]
        return out

    def _target(self, e: AlertEvent) -> tuple[Incident, Relation, float] | None:
        """The open incident ``e`` belongs to, how, and the negatives it shares with it."""
        shared = {(o.scope_kind, o.scope): o for o in e.overlaps}
        best: tuple[Incident, Relation, float] | None = None
        for inc in self.incidents.values():
            for key, m in inc.members.items():
                o: Overlap | None = shared.get(key)
                if not m.active or o is None:
                    continue
                if not _rest_fires(self.rule, _event_eval(e), o.n, o.negatives):
                    relation: Relation = "explained_by_incident"
                elif not _rest_fires(self.rule, o.other, o.n, o.negatives):
                    relation = "explains_incident"
                else:
                    continue
                if best is None or o.negatives > best[2]:
                    best = (inc, relation, o.negatives)
        return best

    def _resolve(self, e: AlertEvent) -> list[IncidentEvent]:
        iid = self._of.pop(e.key, None)
        if iid is not None:
            self._last[e.key] = iid
        inc = self.incidents.get(iid) if iid is not None else None
        if inc is None or e.key not in inc.members:
            return []
        m = inc.members[e.key]
        m.event, m.active = e, False
        if inc.open:
            return []
        del self.incidents[inc.incident_id]
        return [self._emit(inc, "resolved", e.at_ms)]

    def _emit(self, inc: Incident, state: IncidentState, at_ms: int) -> IncidentEvent:
        primary = inc.members[inc.primary].event
        if state == "resolved" and primary.state != "resolved":
            primary = replace(primary, state="resolved", resolved_at_ms=at_ms)
        return IncidentEvent(
            inc.incident_id, state, at_ms, primary, tuple(m.to_json() for m in inc.related())
        )

    def restore(self, members: Iterable[tuple[str, AlertEvent]]) -> None:
        """Open incidents again after a restart: ``(incident id, the scope's firing event)`` pairs.

        The scope whose alert id is the incident id is its primary; if it is not among them,
        the first one listed stands in for it.
        """
        for iid, e in members:
            inc = self.incidents.get(iid)
            if inc is None:
                inc = self.incidents[iid] = Incident(iid, e.key)
            inc.members[e.key] = Member(e, "explained_by_incident")
            if e.alert_id == iid:
                inc.primary = e.key
            self._join(e.key, iid)
        for inc in self.incidents.values():
            inc.members[inc.primary].relation = "primary"
