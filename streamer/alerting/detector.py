"""Negative-sentiment spike detection over labeled records. Pure: no I/O, no clocks.

Time is event time (``source.timestamp`` of each labeled record, ms). The event clock
(``clock``) admits each record on its lane (input partition): a redelivered source offset is
dropped as ``duplicate``, a record behind the watermark as ``late`` (or ``capped`` when its
lane is too far behind to be waited for), never silently. An admitted record is counted into
the windows of its scopes (global, its topic label, each entity it names; ``windows``);
every bucket boundary the watermark passes is judged once per scope by the rule (``rule``),
and a decision that changes a scope's state becomes an ``AlertEvent`` (``events``). Entity
scopes are bounded (least recently seen evicted first, never one that is firing unless
every one is).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from streamer.alerting.clock import DEFAULT_LANE, EventClock, Lane, Verdict
from streamer.alerting.entities import EntityExtractor
from streamer.alerting.events import AlertEvent, AlertState, Overlap, make_event
from streamer.alerting.records import ParsedRecord, RecordError, parse_record
from streamer.alerting.rule import ActiveAlert, Evaluation, SpikeRule
from streamer.alerting.windows import NEVER, ScopeWindows, WindowShape
from streamer.config import AlertsConfig

ScopeKind = Literal["global", "topic", "entity"]
ScopeKey = tuple[str, str]
GLOBAL_SCOPE: ScopeKey = ("global", "all")


@dataclass
class ScopeState(ScopeWindows):
    """A scope's windows plus what the rule decided for it."""

    kind: str
    name: str
    active: ActiveAlert | None = None
    cooldown_until_ms: int = NEVER
    last: Evaluation = field(default_factory=Evaluation)

    @property
    def key(self) -> ScopeKey:
        return (self.kind, self.name)


@dataclass
class DetectorStats:
    records: int = 0  # parsed records; each is counted, late, capped or a duplicate
    invalid: int = 0
    late: int = 0
    capped: int = 0
    duplicate: int = 0
    evicted: int = 0
    evaluations: int = 0
    last_invalid: str | None = None
    last_late: dict[str, Any] | None = None  # source and lag of the newest late/capped record

    @property
    def counted(self) -> int:
        return self.records - self.late - self.capped - self.duplicate


def lane_of(rec: ParsedRecord, partition: int | None) -> tuple[Lane, int | None]:
    """The record's lane and its source offset (for de-duplication), see ``clock``."""
    src = rec.source
    topic, part, offset = src.get("topic"), src.get("partition"), src.get("offset")
    labels_part = 0 if partition is None else partition
    if isinstance(topic, str) and topic and isinstance(part, int) and not isinstance(part, bool):
        return (labels_part, topic, part), offset if isinstance(offset, int) and not isinstance(
            offset, bool
        ) else None
    return (labels_part, "", -1) if partition is not None else DEFAULT_LANE, None


class SpikeDetector:
    """Feed labeled records with ``process``; it returns firing/resolved ``AlertEvent``s."""

    def __init__(self, config: AlertsConfig, *, entities: EntityExtractor | None = None) -> None:
        self.config = config
        self.entities = entities or EntityExtractor(
            config.entity_aliases, max_per_message=config.max_entities_per_message
        )
        self.shape = WindowShape.of(config)
        self.bucket_ms = self.shape.bucket_ms
        self.rule = SpikeRule(config)
        self.z = self.rule.z
        self.clock = EventClock(
            round(config.allowed_lateness_s * 1000),
            idle_s=config.idle_partition_s,
            max_lag_ms=round(config.max_partition_lag_s * 1000),
            max_lanes=config.max_lanes,
            max_ranges=config.dedup_ranges_per_partition,
        )
        self.global_scope = ScopeState(*GLOBAL_SCOPE)
        self.topics: dict[str, ScopeState] = {}
        # Least-recently-seen first; move_to_end on every sighting.
        self.entity_scopes: OrderedDict[str, ScopeState] = OrderedDict()
        self.next_eval_ms: int | None = None
        self.stats = DetectorStats()

    # -- input -----------------------------------------------------------------
    def parse(self, record: Mapping[str, Any]) -> ParsedRecord:
        """Read what the detector needs from a labels-topic record."""
        return parse_record(record, self.config, self.entities)

    def process(
        self, record: Mapping[str, Any], *, partition: int | None = None, now_s: float | None = None
    ) -> list[AlertEvent]:
        """Count one labeled record; return the alert events its arrival caused.

        ``partition`` is its labels-topic partition (the lane of a record without a source
        partition); ``now_s`` is processing time (monotonic seconds), which idleness needs.
        """
        try:
            rec = self.parse(record)
        except RecordError as exc:
            self.stats.invalid += 1
            self.stats.last_invalid = str(exc)
            return []
        return self.add(rec, partition=partition, now_s=now_s)

    def process_many(
        self, records: Iterable[Mapping[str, Any]], *, now_s: float | None = None
    ) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        for record in records:
            events.extend(self.process(record, now_s=now_s))
        return events

    def process_from(
        self, records: Iterable[tuple[Mapping[str, Any], int]], *, now_s: float | None = None
    ) -> list[AlertEvent]:
        """``(record, labels partition)`` pairs, as the engine reads them."""
        events: list[AlertEvent] = []
        for record, partition in records:
            events.extend(self.process(record, partition=partition, now_s=now_s))
        return events

    def add(
        self, rec: ParsedRecord, *, partition: int | None = None, now_s: float | None = None
    ) -> list[AlertEvent]:
        self.stats.records += 1
        lane, offset = lane_of(rec, partition)
        verdict = self.clock.admit(lane, rec.ts_ms, offset, now_s)
        if verdict != "ok":
            self._drop(verdict, rec)
            return []
        if self.next_eval_ms is None:
            self.next_eval_ms = (rec.ts_ms // self.bucket_ms + 1) * self.bucket_ms
        bucket = rec.ts_ms // self.bucket_ms
        cfg = self.config
        scopes: list[ScopeState] = []
        if cfg.scope_global:
            scopes.append(self.global_scope)
        if cfg.scope_topics and rec.topic is not None:
            scope = self.topics.get(rec.topic)
            if scope is None:
                scope = self.topics[rec.topic] = ScopeState("topic", rec.topic)
            scopes.append(scope)
        for name in rec.entities:
            scopes.append(self._entity(name))
        by_topic = cfg.scope_topics and rec.topic is not None
        for scope in scopes:
            scope.count(
                bucket, rec, cfg.max_examples, cfg.example_chars, by_topic=by_topic and scope.kind == "entity"
            )
        return self._run_due()

    def _drop(self, verdict: Verdict, rec: ParsedRecord) -> None:
        st = self.stats
        if verdict == "duplicate":
            st.duplicate += 1
            return
        if verdict == "capped":
            st.capped += 1
        else:
            st.late += 1
        wm = self.clock.watermark_ms
        st.last_late = {
            "reason": verdict,
            "source": rec.source,
            "behind_s": None if wm is None else round((wm - rec.ts_ms) / 1000, 3),
        }

    def advance_to(self, ts_ms: int) -> list[AlertEvent]:
        """Move the event clock without a record (a quiet stream must still resolve)."""
        if not self.clock.advance_to(ts_ms):
            return []
        return self._run_due()

    def expect_sources(self, sources: Iterable[tuple[str, int]], now_s: float) -> None:
        """Input partitions known to exist: the clock waits for each until it delivers or idles."""
        self.clock.expect(sources, now_s)

    def hold(self, sources: Iterable[tuple[str, int]], labels_partitions: Iterable[int]) -> None:
        """Partitions with work still coming: their lanes are not idle however quiet (``clock.hold``)."""
        self.clock.hold(sources, labels_partitions)

    def tick(self, now_s: float) -> list[AlertEvent]:
        """Processing time passed: idle lanes stop holding the clock; judge what that makes due."""
        if not self.clock.expire(now_s):
            return []
        return self._run_due()

    # -- state -------------------------------------------------------------------
    @property
    def max_ts_ms(self) -> int | None:
        return self.clock.max_ts_ms

    @property
    def watermark_ms(self) -> int | None:
        return self.clock.watermark_ms

    @property
    def judged_until_ms(self) -> int | None:
        """The last bucket boundary judged (or passed over as quiet)."""
        return None if self.next_eval_ms is None else self.next_eval_ms - self.bucket_ms

    def _entity(self, name: str) -> ScopeState:
        scope = self.entity_scopes.get(name)
        if scope is not None:
            self.entity_scopes.move_to_end(name)
            return scope
        if len(self.entity_scopes) >= self.config.max_entities:
            victim = next((k for k, s in self.entity_scopes.items() if s.active is None), None)
            if victim is None:  # every tracked entity is firing: evict the stalest anyway
                victim = next(iter(self.entity_scopes))
            del self.entity_scopes[victim]
            self.stats.evicted += 1
        scope = self.entity_scopes[name] = ScopeState("entity", name)
        return scope

    def scopes(self) -> list[ScopeState]:
        return [self.global_scope, *self.topics.values(), *self.entity_scopes.values()]

    def active_alerts(self) -> dict[ScopeKey, ActiveAlert]:
        return {s.key: s.active for s in self.scopes() if s.active is not None}

    def scope(self, kind: str, name: str) -> ScopeState | None:
        if kind == "global":
            return self.global_scope if name == GLOBAL_SCOPE[1] else None
        if kind == "topic":
            return self.topics.get(name)
        return self.entity_scopes.get(name)

    def current_event(self, kind: str, name: str) -> AlertEvent | None:
        """A firing event for a scope active now, from its latest evaluation (used after a restart)."""
        s = self.scope(kind, name)
        if s is None or s.active is None:
            return None
        event = self._event(s, "firing", s.last, None, None, [])
        return replace(event, overlaps=self._overlaps(s, s.last.at_ms // self.bucket_ms, s.last.at_ms))

    def resolved_event(
        self, kind: str, name: str, alert_id: str, started_at_ms: int, at_ms: int
    ) -> AlertEvent:
        """A resolve for an alert published before a restart that is no longer firing."""
        s = self.scope(kind, name)
        last = s.last if s is not None else Evaluation()
        ev = Evaluation(**{**last.__dict__, "at_ms": at_ms})
        return make_event(self.config, kind, name, "resolved", ev, alert_id, started_at_ms, None, None, [])

    # -- evaluation ----------------------------------------------------------------
    def _run_due(self) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        wm = self.watermark_ms
        if wm is None or self.next_eval_ms is None:
            return events
        while wm > self.next_eval_ms:
            t = self.next_eval_ms
            tb = t // self.bucket_ms
            start = tb - self.shape.short_buckets
            due = [s for s in self.scopes() if s.active is not None or s.max_bucket >= start]
            if due:
                events.extend(self._evaluate(t, due))
                self.next_eval_ms = t + self.bucket_ms
            else:
                # Nothing in any window and nothing firing until new data: skip the quiet stretch.
                first_due = (wm // self.bucket_ms) * self.bucket_ms
                self.next_eval_ms = max(t + self.bucket_ms, first_due)
        return events

    def _evaluate(self, t: int, due: list[ScopeState]) -> list[AlertEvent]:
        rule = self.rule
        tb = t // self.bucket_ms
        events: list[AlertEvent] = []
        g = self.global_scope
        if g.lo is not None:
            g.slide(tb, self.shape)
        global_base = rule.global_baseline(g.base_neg, g.base_n)
        for scope in due:
            if scope.lo is None:
                continue
            scope.slide(tb, self.shape)
            win = scope.short_window(tb, self.shape)
            if scope is g:
                baseline = global_base
            else:
                baseline = rule.scope_baseline(scope.base_neg, scope.base_n, global_base)
            ev = rule.evaluate(t, win.n, win.neg, baseline, scope.base_n)
            scope.last = ev
            self.stats.evaluations += 1
            if scope.active is not None:
                scope.active.peak_share = max(scope.active.peak_share, ev.share)
                if rule.resolves(ev):
                    events.append(self._event(scope, "resolved", ev, win.first, win.last, win.examples))
                    scope.active = None
                    scope.cooldown_until_ms = rule.cooldown_until(t)
            elif rule.may_fire(ev, scope.cooldown_until_ms):
                scope.active = ActiveAlert(f"{scope.kind}:{scope.name}:{t}", t, ev.share)
                events.append(self._event(scope, "firing", ev, win.first, win.last, win.examples))
        if any(e.state == "firing" for e in events):
            events = [
                replace(e, overlaps=self._overlaps(self._scope_of(e), tb, t)) if e.state == "firing" else e
                for e in events
            ]
        return events

    def _scope_of(self, event: AlertEvent) -> ScopeState:
        s = self.scope(event.scope_kind, event.scope)
        assert s is not None
        return s

    def _overlaps(self, r: ScopeState, tb: int, t: int) -> tuple[Overlap, ...]:
        """What ``r``'s short window shares with each other firing scope judged at ``t``."""
        out: list[Overlap] = []
        for q in self.scopes():
            if q is r or q.active is None or q.last.at_ms != t:
                continue
            if r.kind == "global":
                n, neg = q.last.count, q.last.negatives
            elif q.kind == "global":
                n, neg = r.last.count, r.last.negatives
            elif r.kind == "topic" and q.kind == "entity":
                n, neg = q.topic_counts(tb, self.shape, r.name)
            elif r.kind == "entity" and q.kind == "topic":
                n, neg = r.topic_counts(tb, self.shape, q.name)
            else:  # two topics never share a record; entities sharing one are not grouped
                continue
            if neg > 0:
                out.append(Overlap(q.kind, q.name, n, neg, q.last))
        return tuple(out)

    def _event(
        self,
        scope: ScopeState,
        state: AlertState,
        ev: Evaluation,
        first: dict[str, Any] | None,
        last: dict[str, Any] | None,
        examples: list[dict[str, Any]],
    ) -> AlertEvent:
        assert scope.active is not None
        return make_event(
            self.config,
            scope.kind,
            scope.name,
            state,
            ev,
            scope.active.alert_id,
            scope.active.started_at_ms,
            first,
            last,
            examples,
        )
