"""Event-time buckets of one scope and the event clock that says which windows are complete.

Pure. Records are counted into fixed buckets (``bucket_s``). For a boundary ``T`` the short
window is ``[T - short_window_s, T)`` and the baseline ``[T - baseline_window_s, T -
short_window_s)``; the baseline is kept as running sums, so judging a boundary costs the
short window's buckets, not the baseline's. Buckets beyond the baseline are dropped.

The clock's watermark trails the highest event time by ``allowed_lateness_s``: a boundary
is judged once the watermark passes it, so anything out of order within the lateness is in
before its window is judged; records behind the watermark are late.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamer.alerting.config import AlertsConfig
from streamer.alerting.records import ParsedRecord

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

    def add(self, rec: ParsedRecord, max_examples: int, example_chars: int) -> None:
        self.n += 1.0
        self.neg += rec.negative
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

    def count(self, bucket: int, rec: ParsedRecord, max_examples: int, example_chars: int) -> None:
        if self.lo is None:
            self.lo = bucket
            self.base_hi = bucket
        b = self.buckets.get(bucket)
        if b is None:
            b = self.buckets[bucket] = Bucket()
        b.add(rec, max_examples, example_chars)
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
            self.base_hi = short_lo

    def short_window(self, tb: int, shape: WindowShape) -> ShortWindow:
        """Sums of ``[tb - short, tb)`` in buckets; first/last/examples in event-time order."""
        out = ShortWindow()
        lo = tb - shape.short_buckets
        # Sparse scopes (most entities) hold fewer buckets than the window has slots.
        window = (
            sorted(b for b in self.buckets if lo <= b < tb)
            if len(self.buckets) < shape.short_buckets
            else range(lo, tb)
        )
        for b in window:
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


class EventClock:
    """Highest event time seen and the watermark trailing it by the allowed lateness."""

    def __init__(self, lateness_ms: int) -> None:
        self.lateness_ms = lateness_ms
        self.max_ts_ms: int | None = None

    @property
    def watermark_ms(self) -> int | None:
        return None if self.max_ts_ms is None else self.max_ts_ms - self.lateness_ms

    def is_late(self, ts_ms: int) -> bool:
        return self.max_ts_ms is not None and ts_ms < self.max_ts_ms - self.lateness_ms

    def observe(self, ts_ms: int) -> None:
        if self.max_ts_ms is None or ts_ms > self.max_ts_ms:
            self.max_ts_ms = ts_ms

    def advance_to(self, ts_ms: int) -> bool:
        """Move event time without a record; False if that is not ahead of the clock."""
        if self.max_ts_ms is None or ts_ms <= self.max_ts_ms:
            return False
        self.max_ts_ms = ts_ms
        return True
