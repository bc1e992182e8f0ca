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
from streamer.config import AlertsConfig

IncidentState = Literal["firing", "updated", "resolved"]
Relation = Literal["primary", "explains", "explained_by", "part_of", "contains", "linked"]
ScopeKey = tuple[str, str]
SPECIFICITY = {"entity": 0, "topic": 1, "global": 2}
_INVERSE: dict[Relation, Relation] = {
    "explains": "explained_by",
    "explained_by": "explains",
    "part_of": "contains",
    "contains": "part_of",
}


@dataclass
class Member:
    """One scope of an incident and its latest event."""

    event: AlertEvent
    relation: Relation  # how it relates to ``via``
    via: ScopeKey | None = None  # the incident's scope it was linked to
    shared_negatives: float = 0.0  # negatives its window shares with ``via``
    active: bool = True

    def to_json(self) -> dict[str, Any]:
        e = self.event
        return {
            "scope_kind": e.scope_kind,
            "scope": e.scope,
            "alert_id": e.alert_id,
            "state": "firing" if self.active else "resolved",
            "relation": self.relation,
            "via": None if self.via is None else f"{self.via[0]}:{self.via[1]}",
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
    # Not paged yet: waiting until this event time for a more specific scope that explains it.
    pending_until_ms: int | None = None
    held: list[AlertEvent] = field(default_factory=list)  # its scopes' events, recorded once paged

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


def _fires(rule: SpikeRule, ev: Evaluation, n: float, neg: float, baseline: float) -> bool:
    return rule.fires(rule.evaluate(ev.at_ms, n, neg, baseline, 0.0))


def _evaluation(e: AlertEvent) -> Evaluation:
    return Evaluation(
        e.at_ms, e.count, e.negatives, e.negative_share, e.baseline_share, e.baseline_count, e.statistic_value
    )


def link(rule: SpikeRule, a: AlertEvent, o: Overlap) -> tuple[str, Relation] | None:
    """How firing scope ``a`` and the scope of overlap ``o`` are one burst, if they are.

    Returns (the scope key that leads, how ``a`` relates to the other scope). Between a more
    specific scope S and a broader one B: S *explains* B when B without their shared records
    would not fire; S is *part of* B when S judged against B's short-window share would not
    fire (a market-wide move, not S's own). Scopes of one kind are never linked.
    """
    ea, eb = _evaluation(a), o.other
    sa, sb = SPECIFICITY.get(a.scope_kind, 3), SPECIFICITY.get(o.scope_kind, 3)
    if sa == sb:
        return None
    specific, broad = (ea, eb) if sa < sb else (eb, ea)
    if not _fires(rule, broad, broad.count - o.n, broad.negatives - o.negatives, broad.baseline_share):
        return ("a" if sa < sb else "b"), ("explains" if sa < sb else "explained_by")
    if not _fires(rule, specific, specific.count, specific.negatives, broad.share):
        return ("b" if sa < sb else "a"), ("part_of" if sa < sb else "contains")
    return None


@dataclass
class Decisions:
    """What one ``observe`` decided: incident events to page, and the scope events to record now
    (a scope of an incident that is not paged yet is recorded when it is)."""

    incidents: list[IncidentEvent] = field(default_factory=list)
    record: list[AlertEvent] = field(default_factory=list)


class IncidentTracker:
    """Feed each batch of per-scope events with ``observe``; it returns what to page and record.

    An incident opened by a topic or the market waits ``grace_ms`` of event time before it
    is paged: a ticker that explains it often crosses its threshold a bucket later, and then
    opens the incident instead (the topic joins it as related). An entity pages at once.
    """

    def __init__(self, rule: SpikeRule, *, group: bool = True, grace_ms: int = 0) -> None:
        self.rule = rule
        self.group = group
        self.grace_ms = grace_ms if group else 0
        self.incidents: dict[str, Incident] = {}
        self._of: dict[ScopeKey, str] = {}  # scope -> incident id, while the scope is firing in it
        self._last: dict[ScopeKey, str] = {}  # scope -> the incident it last belonged to

    @classmethod
    def for_config(cls, rule: SpikeRule, config: AlertsConfig) -> IncidentTracker:
        grace_ms = config.incident_grace_buckets * round(config.bucket_s * 1000)
        return cls(rule, group=config.group_incidents, grace_ms=grace_ms)

    def incident_of(self, key: ScopeKey) -> str | None:
        return self._of.get(key)

    def last_incident_of(self, key: ScopeKey) -> str | None:
        """The incident a scope is or was last in (for its state record; kept after it resolves)."""
        return self._of.get(key) or self._last.get(key)

    def _join(self, key: ScopeKey, iid: str) -> None:
        self._of[key] = iid
        self._last[key] = iid

    def open_incidents(self) -> list[Incident]:
        """Incidents paged and not resolved (not those still waiting for their grace)."""
        return [i for i in self.incidents.values() if i.pending_until_ms is None]

    def observe(self, events: Iterable[AlertEvent], *, until_ms: int | None = None) -> Decisions:
        """Per-scope events in boundary order; ``until_ms``: event time judged so far (pages what waited)."""
        if len(self._last) > 2 * len(self._of) + 1024:  # bounded: forget scopes in no incident
            self._last = {k: v for k, v in self._last.items() if k in self._of}
        out = Decisions()
        batch: list[AlertEvent] = []
        for e in events:
            if batch and e.at_ms != batch[0].at_ms:
                self._boundary(batch, out)
                batch = []
            batch.append(e)
        if batch:
            self._boundary(batch, out)
        if until_ms is not None:
            self._flush(until_ms, out)
        return out

    def _boundary(self, events: list[AlertEvent], out: Decisions) -> None:
        """Events of one boundary: resolves, then firings joining open incidents, then new ones."""
        t = events[0].at_ms
        for e in events:
            if e.state == "resolved":
                self._resolve(e, out)
        firing = [e for e in events if e.state == "firing"]
        joined: dict[str, Incident] = {}
        fresh: list[AlertEvent] = []
        for e in firing:
            target = self._target(e) if self.group else None
            if target is None:
                fresh.append(e)
                continue
            inc, member = target
            if (
                member.relation == "explains"
                and member.via == inc.primary
                and inc.pending_until_ms is not None
            ):
                inc = self._promote(inc, member)
            else:
                inc.members[e.key] = member
            self._join(e.key, inc.incident_id)
            self._note(inc, e, out)
            if inc.pending_until_ms is None:
                joined[inc.incident_id] = inc
        for group in self._components(fresh):
            inc = self._open(group, t)
            for e, _, _ in group:
                self._note(inc, e, out)
        out.incidents += [self._emit(inc, "updated", t) for inc in joined.values()]
        self._flush(t, out)

    def _note(self, inc: Incident | None, e: AlertEvent, out: Decisions) -> None:
        if inc is not None and inc.pending_until_ms is not None:
            inc.held.append(e)
        else:
            out.record.append(e)

    def _flush(self, until_ms: int, out: Decisions) -> None:
        """Page the incidents whose grace is over."""
        for inc in list(self.incidents.values()):
            if inc.pending_until_ms is not None and inc.pending_until_ms <= until_ms:
                self._page(inc, out)

    def _page(self, inc: Incident, out: Decisions) -> None:
        inc.pending_until_ms = None
        out.incidents.append(self._emit(inc, "firing", inc.members[inc.primary].event.at_ms))
        out.record += inc.held
        inc.held = []

    def _promote(self, inc: Incident, member: Member) -> Incident:
        """A scope that explains a pending incident's opener opens it instead (nothing was paged)."""
        old = inc.members[inc.primary]
        new = Incident(member.event.alert_id, member.event.key, {}, inc.pending_until_ms, inc.held)
        new.members[new.primary] = Member(member.event, "primary")
        new.members[inc.primary] = Member(
            old.event, "explained_by", new.primary, member.shared_negatives, old.active
        )
        for key, m in inc.members.items():
            if key != inc.primary:
                new.members[key] = m
        if SPECIFICITY.get(new.primary[0], 3) == 0 and new.pending_until_ms is not None:
            new.pending_until_ms = min(new.pending_until_ms, member.event.at_ms)  # an entity pages at once
        del self.incidents[inc.incident_id]
        self.incidents[new.incident_id] = new
        for key in new.members:
            if self._of.get(key) == inc.incident_id:
                self._join(key, new.incident_id)
        return new

    def _target(self, e: AlertEvent) -> tuple[Incident, Member] | None:
        """The open incident ``e`` is part of (through its most-shared firing scope), as a member."""
        shared = {(o.scope_kind, o.scope): o for o in e.overlaps}
        best: tuple[Incident, Member] | None = None
        for inc in self.incidents.values():
            for key, m in inc.members.items():
                o = shared.get(key)
                if not m.active or o is None:
                    continue
                found = link(self.rule, e, o)
                if found is None:
                    continue
                if best is None or o.negatives > best[1].shared_negatives:
                    best = (inc, Member(e, found[1], key, o.negatives))
        return best

    def _components(self, fresh: list[AlertEvent]) -> list[list[tuple[AlertEvent, Member | None, int]]]:
        """New firings of one boundary, grouped by links; each with its link and lead score."""
        if not self.group:
            return [[(e, None, 0)] for e in fresh]
        index = {e.key: i for i, e in enumerate(fresh)}
        parent = list(range(len(fresh)))
        score = [0] * len(fresh)
        links: dict[int, list[tuple[int, Relation, float]]] = {i: [] for i in range(len(fresh))}

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, e in enumerate(fresh):
            for o in e.overlaps:
                j = index.get((o.scope_kind, o.scope))
                if j is None or j <= i:
                    continue
                found = link(self.rule, e, o)
                if found is None:
                    continue
                leader, relation = found
                score[i if leader == "a" else j] += 1
                links[i].append((j, relation, o.negatives))
                links[j].append((i, _INVERSE[relation], o.negatives))
                parent[root(i)] = root(j)
        groups: dict[int, list[int]] = {}
        for i in range(len(fresh)):
            groups.setdefault(root(i), []).append(i)
        out = []
        for members in groups.values():
            lead = min(
                members,
                key=lambda i: (
                    -score[i],
                    SPECIFICITY.get(fresh[i].scope_kind, 3),
                    -fresh[i].negatives,
                    fresh[i].key,
                ),
            )
            rows: list[tuple[AlertEvent, Member | None, int]] = [(fresh[lead], None, score[lead])]
            for i in members:
                if i == lead:
                    continue
                direct = next((x for x in links[i] if x[0] == lead), None)
                if direct is not None:
                    member = Member(fresh[i], direct[1], fresh[lead].key, direct[2])
                else:
                    member = Member(fresh[i], "linked", fresh[lead].key, 0.0)
                rows.append((fresh[i], member, score[i]))
            out.append(rows)
        return out

    def _open(self, rows: list[tuple[AlertEvent, Member | None, int]], t: int) -> Incident:
        lead = rows[0][0]
        wait = 0 if SPECIFICITY.get(lead.scope_kind, 3) == 0 else self.grace_ms
        inc = Incident(lead.alert_id, lead.key, {lead.key: Member(lead, "primary")}, t + wait)
        for e, member, _ in rows[1:]:
            assert member is not None
            inc.members[e.key] = member
        self.incidents[inc.incident_id] = inc
        for key in inc.members:
            self._join(key, inc.incident_id)
        return inc

    def _resolve(self, e: AlertEvent, out: Decisions) -> None:
        iid = self._of.pop(e.key, None)
        if iid is not None:
            self._last[e.key] = iid
        inc = self.incidents.get(iid) if iid is not None else None
        if inc is None or e.key not in inc.members:
            out.record.append(e)
            return
        m = inc.members[e.key]
        m.event, m.active = e, False
        self._note(inc, e, out)
        if inc.open:
            return
        if inc.pending_until_ms is not None:  # over before its grace: paged and resolved at once
            self._page(inc, out)
        del self.incidents[inc.incident_id]
        out.incidents.append(self._emit(inc, "resolved", e.at_ms))

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
            inc.members[e.key] = Member(e, "linked")
            if e.alert_id == iid:
                inc.primary = e.key
            self._join(e.key, iid)
        for inc in self.incidents.values():
            inc.members[inc.primary].relation = "primary"
