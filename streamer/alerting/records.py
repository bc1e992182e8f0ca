"""What the detector reads from a labels-topic record: event time, negativity, topic, entities.

Pure. A record the detector cannot use raises :class:`RecordError` naming the field; the
detector counts it as ``invalid`` instead of guessing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamer.alerting.entities import EntityExtractor
from streamer.config import AlertsConfig
from streamer.errors import UsageError

# Sorts before every real event time (records without one; parse rejects them).
NO_TIME = -(2**62)


class RecordError(UsageError):
    """A labeled record the detector cannot use; the message names the field."""


@dataclass(frozen=True)
class ParsedRecord:
    ts_ms: int
    negative: float
    topic: str | None
    entities: tuple[str, ...]
    id: str | None
    text: str | None
    source: dict[str, Any]


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
    return NO_TIME


def parse_record(record: Mapping[str, Any], cfg: AlertsConfig, entities: EntityExtractor) -> ParsedRecord:
    """Read what the detector needs from a labels-topic record (README "Message schema")."""
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
    ents = tuple(entities.extract(text, record.get("tickers"))) if cfg.scope_entities else ()
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
