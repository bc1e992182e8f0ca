"""Event-time buckets of one scope and the event clock that says which windows are complete.

Pure. Records are counted into fixed buckets (``bucket_s``). For a boundary ``T`` the short
window is ``[T - short_window_s, T)`` and the baseline ``[T - baseline_window_s, T -
short_window_s)``; the baseline is kept as running sums, so judging a boundary costs the
short window's buckets, not the baseline's. Buckets beyond the baseline are dropped.

A boundary is judged once the event clock's watermark (``clock``) passes it, so everything
of ``[.., T)`` that is on time is in before ``T`` is judged. Buckets ahead of the watermark
(lanes ahead of the slowest one) simply wait in their scope until their boundary comes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streamer.alerting.records import ParsedRecord
from streamer.config import AlertsConfig

NEVER = -(2**62)


def source_order(src: dict[str, Any]) -> tuple[int, str, int, int]:
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
    # Entity scopes only: [n, neg] per topic label, to tell which scopes one burst explains;
    # dropped with the examples.
    by_topic: dict[str, list[float]] | None = None

    def add(
        self, rec: ParsedRecord, max_examples: int, example_chars: int, *, by_topic: bool = False
    ) -> None:
        self.n += 1.0
        self.neg += rec.negative
        if by_topic and rec.topic is not None:
            if self.by_topic is None:
                self.by_topic = {}
            counts = self.by_topic.get(rec.topic)
            if counts is None:
                self.by_topic[rec.topic] = [1.0, rec.negative]
            else:
                counts[0] += 1.0
                counts[1] += rec.negative
        ts = rec.ts_ms
        first, last = self.first, self.last
        # Timestamps decide; the full order only breaks ties (keeps this cheap per record).
        if (
            first is None
            or ts < first["timestamp"]
            or (ts == first["timestamp"] and source_order(rec.source) < source_order(first))
        ):
            self.first = rec.source
        if (
            last is None
            or ts > last["timestamp"]
            or (ts == last["timestamp"] and source_order(rec.source) > source_order(last))
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
            self.examples.sort(key=lambda e: source_order(e["source"]))
            del self.examples[max_examples:]


@dataclass(frozen=True)
class WindowShape:
    """Window lengths in buckets, from the config."""

    bucket_ms: int
    short_buckets: int
    baseline_buckets: int

    @classmethod
    def of(cls, config: AlertsConfig) -> WindowShape:
        short = max(1, round(config.short_window_s / config.bucket_s))
        return cls(
            bucket_ms=round(config.bucket_s * 1000),
            short_buckets=short,
            baseline_buckets=max(short + 1, round(config.baseline_window_s / config.bucket_s)),
        )


@dataclass
class ShortWindow:
    """Sums of the short window ending at one boundary."""

    n: float = 0.0
    neg: float = 0.0
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class ScopeWindows:
    """One scope's buckets and running baseline sums."""

    buckets: dict[int, Bucket] = field(default_factory=dict)
    base_n: float = 0.0
    base_neg: float = 0.0
    base_hi: int | None = None  # buckets below this are in base_n/base_neg (or already gone)
    lo: int | None = None  # buckets below this have been dropped
    max_bucket: int = NEVER
    last_seen_ms: int = 0

    def count(
        self, bucket: int, rec: ParsedRecord, max_examples: int, example_chars: int, *, by_topic: bool = False
    ) -> None:
        if self.lo is None:
            self.lo = bucket
            self.base_hi = bucket
        b = self.buckets.get(bucket)
        if b is None:
            b = self.buckets[bucket] = Bucket()
        b.add(rec, max_examples, example_chars, by_topic=by_topic)
        self.max_bucket = max(self.max_bucket, bucket)
        self.last_seen_ms = max(self.last_seen_ms, rec.ts_ms)

    def slide(self, tb: int, shape: WindowShape) -> None:
        """Bring the running baseline sums to the windows ending at bucket ``tb``."""
        short_lo = tb - shape.short_buckets
        base_lo = tb - shape.baseline_buckets
        assert self.lo is not None
        assert self.base_hi is not None
        if self.lo < base_lo:
            if base_lo - self.lo > len(self.buckets):
                gone = [b for b in self.buckets if b < base_lo]
            else:
                gone = [b for b in range(self.lo, base_lo) if b in self.buckets]
            for b in gone:
                bk = self.buckets.pop(b)
                if b < self.base_hi:
                    self.base_n -= bk.n
                    self.base_neg -= bk.neg
            self.lo = base_lo
        if self.base_hi < short_lo:
            start = max(self.base_hi, base_lo)
            if short_lo - start > len(self.buckets):
                entering = [b for b in self.buckets if start <= b < short_lo]
            else:
                entering = [b for b in range(start, short_lo) if b in self.buckets]
            for b in entering:
                bk = self.buckets[b]
                self.base_n += bk.n
                self.base_neg += bk.neg
                bk.examples = []
                bk.by_topic = None
            self.base_hi = short_lo

    def _window(self, tb: int, shape: WindowShape) -> Iterable[int]:
        lo = tb - shape.short_buckets
        # Sparse scopes (most entities) hold fewer buckets than the window has slots.
        if len(self.buckets) < shape.short_buckets:
            return sorted(b for b in self.buckets if lo <= b < tb)
        return range(lo, tb)

    def short_window(self, tb: int, shape: WindowShape) -> ShortWindow:
        """Sums of ``[tb - short, tb)`` in buckets; first/last/examples in event-time order."""
        out = ShortWindow()
        for b in self._window(tb, shape):
            bk = self.buckets.get(b)
            if bk is None or bk.n == 0:
                continue
            out.n += bk.n
            out.neg += bk.neg
            if out.first is None:
                out.first = bk.first
            out.last = bk.last
            out.examples.extend(bk.examples)
        return out

    def topic_counts(self, tb: int, shape: WindowShape, topic: str) -> tuple[float, float]:
        """(n, negatives) of this (entity) scope's short window that carry ``topic``."""
        n = neg = 0.0
        for b in self._window(tb, shape):
            bk = self.buckets.get(b)
            if bk is None or bk.by_topic is None:
                continue
            counts = bk.by_topic.get(topic)
            if counts is not None:
                n += counts[0]
                neg += counts[1]
        return n, neg
