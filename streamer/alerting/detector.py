"""Negative-sentiment spike detection over labeled records. Pure: no I/O, no clocks.

Time is event time (``source.timestamp`` of each labeled record, ms). Records are counted
into fixed buckets per scope (global, each topic label, each entity). The event clock is
the highest timestamp seen; the watermark trails it by ``allowed_lateness_s``. Every bucket
boundary ``T`` the watermark passes is evaluated once, over

* the short window ``[T - short_window_s, T)`` and
* the baseline ``[T - baseline_window_s, T - short_window_s)``,

so a record that arrives out of order but within the lateness changes nothing: all of
``[.., T)`` is in before ``T`` is evaluated. Records older than the watermark are counted
as ``late`` and left out (never silently).

A scope fires when its short window holds at least ``min_count`` messages, its negative
share is at least ``absolute_floor``, and the one-sided Wilson lower bound of that share
(at ``confidence``) exceeds the scope's baseline share plus ``min_lift``. A sparse scope's
baseline is shrunk towards the global one. It resolves (hysteresis) once the lower bound
is no longer above baseline plus ``resolve_lift``, and may not fire again for ``cooldown_s``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

from streamer.alerting.config import AlertsConfig
from streamer.alerting.entities import EntityExtractor

ScopeKind = Literal["global", "topic", "entity"]
ScopeKey = tuple[str, str]
GLOBAL_SCOPE: ScopeKey = ("global", "all")
STATISTIC = "wilson_lower_bound"


class RecordError(ValueError):
    """A labeled record the detector cannot use; the message names the field."""


def wilson_lower(negatives: float, n: float, z: float) -> float:
    """One-sided Wilson score lower bound of a proportion (0 for an empty window)."""
    if n <= 0:
        return 0.0
    p = min(max(negatives / n, 0.0), 1.0)
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z2 / n))


@dataclass(frozen=True)
class ParsedRecord:
    ts_ms: int
    negative: float
    topic: str | None
    entities: tuple[str, ...]
    id: str | None
    text: str | None
    source: dict[str, Any]


def _order(src: dict[str, Any]) -> tuple[int, str, int, int]:
    """Total order on sources so first/last do not depend on arrival order."""
    return (
        int(src.get("timestamp") or 0),
        str(src.get("topic") or ""),
        int(src.get("partition") or 0),
        int(src.get("offset") or 0),
    )


@dataclass
class Bucket:
    n: float = 0.0
    neg: float = 0.0
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    # A few negative examples; dropped once the bucket leaves the short window.
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, rec: ParsedRecord, max_examples: int, example_chars: int) -> None:
        self.n += 1.0
        self.neg += rec.negative
        ts = rec.ts_ms
        first, last = self.first, self.last
        # Timestamps decide; the full order only breaks ties (keeps this cheap per record).
        if (
            first is None
            or ts < first["timestamp"]
            or (ts == first["timestamp"] and _order(rec.source) < _order(first))
        ):
            self.first = rec.source
        if (
            last is None
            or ts > last["timestamp"]
            or (ts == last["timestamp"] and _order(rec.source) > _order(last))
        ):
            self.last = rec.source
        if rec.negative > 0 and max_examples > 0:
            self.examples.append(
                {
                    "id": rec.id,
                    "text": None if rec.text is None else rec.text[:example_chars],
                    "source": rec.source,
                }
            )
            # Keep the earliest few by source order, independent of arrival order.
            self.examples.sort(key=lambda e: _order(e["source"]))
            del self.examples[max_examples:]


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


@dataclass
class ScopeState:
    kind: str
    name: str
    buckets: dict[int, Bucket] = field(default_factory=dict)
    base_n: float = 0.0
    base_neg: float = 0.0
    base_hi: int | None = None  # buckets below this are in base_n/base_neg (or already gone)
    lo: int | None = None  # buckets below this have been dropped
    max_bucket: int = -(2**62)
    last_seen_ms: int = 0
    active: ActiveAlert | None = None
    cooldown_until_ms: int = -(2**62)
    last: Evaluation = field(default_factory=Evaluation)

    @property
    def key(self) -> ScopeKey:
        return (self.kind, self.name)


@dataclass(frozen=True)
class AlertEvent:
    """One state change of one scope: what goes to the alerts topic (see ``to_json``)."""

    alert_id: str
    scope_kind: str
    scope: str
    state: Literal["firing", "resolved"]
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


@dataclass
class DetectorStats:
    records: int = 0
    invalid: int = 0
    late: int = 0
    evicted: int = 0
    evaluations: int = 0
    last_invalid: str | None = None


def _as_ms(value: Any, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(f"{field_name} must be a number of milliseconds, got {value!r}")
    if not math.isfinite(value):
        raise RecordError(f"{field_name} is not finite: {value!r}")
    return int(value)


def event_time(record: Mapping[str, Any]) -> int:
    """Event time of a labels record for ordering (records without one sort first; parse rejects them)."""
    source = record.get("source")
    value = source.get("timestamp") if isinstance(source, Mapping) else None
    if value is None:
        value = record.get("ts")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return int(value)
    return -(2**62)


class SpikeDetector:
    """Feed labeled records with ``process``; it returns firing/resolved ``AlertEvent``s."""

    def __init__(self, config: AlertsConfig, *, entities: EntityExtractor | None = None) -> None:
        self.config = config
        self.entities = entities or EntityExtractor(
            config.entity_aliases, max_per_message=config.max_entities_per_message
        )
        self.bucket_ms = round(config.bucket_s * 1000)
        self.short_buckets = max(1, round(config.short_window_s / config.bucket_s))
        self.baseline_buckets = max(self.short_buckets + 1, round(config.baseline_window_s / config.bucket_s))
        self.lateness_ms = round(config.allowed_lateness_s * 1000)
        self.z = NormalDist().inv_cdf(config.confidence)
        self.global_scope = ScopeState(*GLOBAL_SCOPE)
        self.topics: dict[str, ScopeState] = {}
        # Least-recently-seen first; move_to_end on every sighting.
        self.entity_scopes: OrderedDict[str, ScopeState] = OrderedDict()
        self.max_ts_ms: int | None = None
        self.next_eval_ms: int | None = None
        self.stats = DetectorStats()

    # -- input -----------------------------------------------------------------
    def parse(self, record: Mapping[str, Any]) -> ParsedRecord:
        """Read what the detector needs from a labels-topic record (CONTRACTS.md §5)."""
        cfg = self.config
        if not isinstance(record, Mapping):
            raise RecordError(f"record must be a JSON object, got {type(record).__name__}")
        source = record.get("source")
        if isinstance(source, Mapping) and source.get("timestamp") is not None:
            ts_ms = _as_ms(source.get("timestamp"), "source.timestamp")
            src = {k: source.get(k) for k in ("topic", "partition", "offset")}
        elif record.get("ts") is not None:
            ts_ms = _as_ms(record.get("ts"), "ts")
            src = {"topic": None, "partition": None, "offset": None}
        else:
            raise RecordError("source.timestamp (event time, ms) is missing")
        src["timestamp"] = ts_ms
        labels = record.get("labels")
        if not isinstance(labels, Mapping):
            raise RecordError("labels is missing or not an object")
        sentiment = labels.get(cfg.sentiment_head)
        if not isinstance(sentiment, Mapping) or not isinstance(sentiment.get("label"), str):
            raise RecordError(f"labels.{cfg.sentiment_head}.label is missing")
        negative = 0.0
        if sentiment["label"] == cfg.negative_label:
            score = sentiment.get("score", 1.0)
            if not isinstance(score, int | float) or isinstance(score, bool):
                raise RecordError(f"labels.{cfg.sentiment_head}.score must be a number, got {score!r}")
            negative = 1.0 if float(score) >= cfg.min_negative_confidence else 0.0
        topic: str | None = None
        topic_label = labels.get(cfg.topic_head)
        if isinstance(topic_label, Mapping) and isinstance(topic_label.get("label"), str):
            topic = topic_label["label"]
        text = record.get("text")
        text = text if isinstance(text, str) else None
        ents = tuple(self.entities.extract(text, record.get("tickers"))) if cfg.scope_entities else ()
        rid = record.get("id")
        return ParsedRecord(
            ts_ms=ts_ms,
            negative=negative,
            topic=topic,
            entities=ents,
            id=None if rid is None else str(rid),
            text=text,
            source=src,
        )

    def process(self, record: Mapping[str, Any]) -> list[AlertEvent]:
        """Count one labeled record; return the alert events its arrival caused."""
        try:
            rec = self.parse(record)
        except RecordError as exc:
            self.stats.invalid += 1
            self.stats.last_invalid = str(exc)
            return []
        return self.add(rec)

    def process_many(self, records: Iterable[Mapping[str, Any]]) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        for record in records:
            events.extend(self.process(record))
        return events

    def add(self, rec: ParsedRecord) -> list[AlertEvent]:
        self.stats.records += 1
        if self.max_ts_ms is not None and rec.ts_ms < self.max_ts_ms - self.lateness_ms:
            self.stats.late += 1
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
        for scope in scopes:
            self._count(scope, bucket, rec)
        if self.max_ts_ms is None or rec.ts_ms > self.max_ts_ms:
            self.max_ts_ms = rec.ts_ms
        return self._run_due()

    def advance_to(self, ts_ms: int) -> list[AlertEvent]:
        """Move the event clock without a record (a quiet stream must still resolve)."""
        if self.max_ts_ms is None or ts_ms <= self.max_ts_ms:
            return []
        self.max_ts_ms = ts_ms
        return self._run_due()

    # -- state -------------------------------------------------------------------
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

    def _count(self, scope: ScopeState, bucket: int, rec: ParsedRecord) -> None:
        if scope.lo is None:
            scope.lo = bucket
            scope.base_hi = bucket
        b = scope.buckets.get(bucket)
        if b is None:
            b = scope.buckets[bucket] = Bucket()
        b.add(rec, self.config.max_examples, self.config.example_chars)
        scope.max_bucket = max(scope.max_bucket, bucket)
        scope.last_seen_ms = max(scope.last_seen_ms, rec.ts_ms)

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
        return self._event(s, "firing", s.last, None, None, [])

    def resolved_event(
        self, kind: str, name: str, alert_id: str, started_at_ms: int, at_ms: int
    ) -> AlertEvent:
        """A resolve for an alert published before a restart that is no longer firing."""
        s = self.scope(kind, name)
        last = s.last if s is not None else Evaluation()
        ev = Evaluation(**{**last.__dict__, "at_ms": at_ms})
        return self._make_event(kind, name, "resolved", ev, alert_id, started_at_ms, None, None, [])

    @property
    def watermark_ms(self) -> int | None:
        return None if self.max_ts_ms is None else self.max_ts_ms - self.lateness_ms

    # -- evaluation ----------------------------------------------------------------
    def _run_due(self) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        wm = self.watermark_ms
        if wm is None or self.next_eval_ms is None:
            return events
        while wm > self.next_eval_ms:
            t = self.next_eval_ms
            tb = t // self.bucket_ms
            start = tb - self.short_buckets
            due = [s for s in self.scopes() if s.active is not None or s.max_bucket >= start]
            if due:
                events.extend(self._evaluate(t, due))
                self.next_eval_ms = t + self.bucket_ms
            else:
                # Nothing in any window and nothing firing until new data: skip the quiet stretch.
                first_due = (wm // self.bucket_ms) * self.bucket_ms
                self.next_eval_ms = max(t + self.bucket_ms, first_due)
        return events

    def _slide(self, scope: ScopeState, tb: int) -> None:
        """Bring the scope's running baseline sums to the windows ending at bucket ``tb``."""
        short_lo = tb - self.short_buckets
        base_lo = tb - self.baseline_buckets
        assert scope.lo is not None
        assert scope.base_hi is not None
        if scope.lo < base_lo:
            if base_lo - scope.lo > len(scope.buckets):
                gone = [b for b in scope.buckets if b < base_lo]
            else:
                gone = [b for b in range(scope.lo, base_lo) if b in scope.buckets]
            for b in gone:
                bk = scope.buckets.pop(b)
                if b < scope.base_hi:
                    scope.base_n -= bk.n
                    scope.base_neg -= bk.neg
            scope.lo = base_lo
        if scope.base_hi < short_lo:
            start = max(scope.base_hi, base_lo)
            if short_lo - start > len(scope.buckets):
                entering = [b for b in scope.buckets if start <= b < short_lo]
            else:
                entering = [b for b in range(start, short_lo) if b in scope.buckets]
            for b in entering:
                bk = scope.buckets[b]
                scope.base_n += bk.n
                scope.base_neg += bk.neg
                bk.examples = []
            scope.base_hi = short_lo

    def _evaluate(self, t: int, due: list[ScopeState]) -> list[AlertEvent]:
        cfg = self.config
        tb = t // self.bucket_ms
        events: list[AlertEvent] = []
        g = self.global_scope
        if g.lo is not None:
            self._slide(g, tb)
        w = cfg.baseline_prior_weight
        prior = cfg.default_baseline_share
        global_base = (g.base_neg + w * prior) / (g.base_n + w) if g.base_n + w > 0 else prior
        for scope in due:
            if scope.lo is None:
                continue
            self._slide(scope, tb)
            n = neg = 0.0
            first: dict[str, Any] | None = None
            last: dict[str, Any] | None = None
            examples: list[dict[str, Any]] = []
            lo = tb - self.short_buckets
            # Sparse scopes (most entities) hold fewer buckets than the window has slots.
            window = (
                sorted(b for b in scope.buckets if lo <= b < tb)
                if len(scope.buckets) < self.short_buckets
                else range(lo, tb)
            )
            for b in window:
                bk = scope.buckets.get(b)
                if bk is None or bk.n == 0:
                    continue
                n += bk.n
                neg += bk.neg
                if first is None:
                    first = bk.first
                last = bk.last
                examples.extend(bk.examples)
            if scope is g:
                baseline = global_base
            else:
                denom = scope.base_n + w
                baseline = (scope.base_neg + w * global_base) / denom if denom > 0 else global_base
            share = neg / n if n > 0 else 0.0
            stat = wilson_lower(neg, n, self.z)
            ev = Evaluation(t, n, neg, share, baseline, scope.base_n, stat, baseline + cfg.min_lift)
            scope.last = ev
            self.stats.evaluations += 1
            if scope.active is not None:
                scope.active.peak_share = max(scope.active.peak_share, share)
                if stat <= baseline + cfg.resolve_lift:
                    events.append(self._event(scope, "resolved", ev, first, last, examples))
                    scope.active = None
                    scope.cooldown_until_ms = t + int(cfg.cooldown_s * 1000)
            elif (
                t >= scope.cooldown_until_ms
                and n >= cfg.min_count
                and share >= cfg.absolute_floor
                and stat > ev.threshold
            ):
                scope.active = ActiveAlert(f"{scope.kind}:{scope.name}:{t}", t, share)
                events.append(self._event(scope, "firing", ev, first, last, examples))
        return events

    def _event(
        self,
        scope: ScopeState,
        state: Literal["firing", "resolved"],
        ev: Evaluation,
        first: dict[str, Any] | None,
        last: dict[str, Any] | None,
        examples: list[dict[str, Any]],
    ) -> AlertEvent:
        assert scope.active is not None
        return self._make_event(
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

    def _make_event(
        self,
        kind: str,
        name: str,
        state: Literal["firing", "resolved"],
        ev: Evaluation,
        alert_id: str,
        started_at_ms: int,
        first: dict[str, Any] | None,
        last: dict[str, Any] | None,
        examples: list[dict[str, Any]],
    ) -> AlertEvent:
        cfg = self.config
        # The most recent few negatives of the window.
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
