"""Records in and out: decode, label records, dead letters, every header, size fallbacks.

Pure: bytes in, values out, no Kafka client here. Every input record becomes exactly one of
:class:`TextMessage` (to be labeled) or :class:`DeadLetter` (to be published unchanged to the
dead-letter topic with the reason), and every :class:`Item` exactly one :class:`Output`, so
nothing is ever silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

import orjson
from aiokafka import TopicPartition

if TYPE_CHECKING:
    from streamer.model.classifier import BatchResult, HeadPrediction

Header = tuple[str, bytes]

# Header names on dead-lettered records; original headers are kept before them.
H_ERROR = "sentiwire.error"
H_ERROR_DETAIL = "sentiwire.error.detail"
H_SOURCE_TOPIC = "sentiwire.source.topic"
H_SOURCE_PARTITION = "sentiwire.source.partition"
H_SOURCE_OFFSET = "sentiwire.source.offset"
H_SOURCE_TIMESTAMP = "sentiwire.source.timestamp"
# On a dead letter whose original value was too large to republish.
H_VALUE_DROPPED = "sentiwire.value_dropped"

# Output keys the daemon owns; input fields with these names are not passed through
# (the input's own `source` goes to `source.origin`, see build_label_record).
RESERVED_KEYS = frozenset(
    {"id", "labels", "model", "source", "processed_at", "text", "text_omitted", "truncated"}
)

# orjson reads JSON nested up to 1024 levels but writes at most this many: a record parsed
# fine could still fail to become a label record (or even to print its id) and stop the batch.
_MAX_WRITE_DEPTH = 254


class DeadLetterReason(StrEnum):
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_TEXT = "missing_text"
    TEXT_NOT_STRING = "text_not_string"
    BLANK_TEXT = "blank_text"
    INFERENCE_ERROR = "inference_error"  # the model failed on this text alone (see scheduler.py)


@dataclass(frozen=True, slots=True)
class Source:
    """Where an input record came from; enough to dead-letter it or commit past it."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None  # ms since epoch (Kafka record timestamp = event time)
    key: bytes | None = None
    headers: tuple[Header, ...] = ()


@dataclass(frozen=True, slots=True)
class TextMessage:
    source: Source
    id: str
    text: str
    fields: Mapping[str, Any] = field(default_factory=dict)  # passed through to the output
    raw: bytes | None = None  # the original value, for a dead letter should the model fail on it


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source: Source
    value: bytes | None
    reason: DeadLetterReason
    detail: str


Decoded = TextMessage | DeadLetter


def default_id(source: Source) -> str:
    return f"{source.topic}-{source.partition}-{source.offset}"


def decode(
    value: bytes | None,
    source: Source,
    *,
    fmt: Literal["json", "text"],
    max_bytes: int,
    text_field: str = "text",
) -> Decoded:
    """Turn one record value into a message to label or a dead letter naming why."""

    def dead(reason: DeadLetterReason, detail: str) -> DeadLetter:
        return DeadLetter(source, value, reason, detail)

    if value is None:
        return dead(DeadLetterReason.MISSING_TEXT, "record has no value (tombstone)")
    if len(value) > max_bytes:
        return dead(DeadLetterReason.TOO_LARGE, f"value is {len(value)} bytes, limit is {max_bytes}")
    try:
        decoded = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return dead(DeadLetterReason.NOT_UTF8, f"invalid UTF-8 at byte {exc.start}: {exc.reason}")

    if fmt == "text":
        if not decoded.strip():
            return dead(DeadLetterReason.BLANK_TEXT, "value is empty or whitespace")
        return TextMessage(source, default_id(source), decoded, raw=value)

    try:
        obj = orjson.loads(decoded)
    except orjson.JSONDecodeError as exc:
        return dead(DeadLetterReason.NOT_JSON, f"not JSON: {exc}")
    if not isinstance(obj, dict):
        return dead(DeadLetterReason.NOT_OBJECT, f"JSON value is a {type(obj).__name__}, expected an object")
    if text_field not in obj or obj[text_field] is None:
        return dead(DeadLetterReason.MISSING_TEXT, f"no {text_field!r} field")
    text = obj[text_field]
    if not isinstance(text, str):
        return dead(DeadLetterReason.TEXT_NOT_STRING, f"{text_field!r} is a {type(text).__name__}")
    if not text.strip():
        return dead(DeadLetterReason.BLANK_TEXT, f"{text_field!r} is empty or whitespace")
    fields = {k: v for k, v in obj.items() if k != text_field}
    if not _writable(fields, value):
        return dead(
            DeadLetterReason.NOT_JSON,
            f"JSON nested too deep to pass through to a label record (at most {_MAX_WRITE_DEPTH} levels)",
        )
    raw_id = obj.get("id")
    msg_id = default_id(source) if raw_id is None or raw_id == "" else str(raw_id)
    return TextMessage(source, msg_id, text, fields, raw=value)


def _writable(fields: dict[str, Any], value: bytes) -> bool:
    """Whether the fields fit a label record orjson can write, shaped as build_label_record
    nests them (the input's ``source`` one level deeper, as ``source.origin``)."""
    if value.count(b"[") + value.count(b"{") < _MAX_WRITE_DEPTH - 1:
        return True  # too few brackets to nest that deep: the common case, no second encode
    try:
        orjson.dumps({**fields, "source": {"origin": fields.get("source")}})
    except orjson.JSONEncodeError:
        return False
    return True


def model_failure(msg: TextMessage, error: BaseException) -> DeadLetter:
    """A message the model could not label even on its own."""
    detail = f"{type(error).__name__}: {error}"
    return DeadLetter(msg.source, msg.raw, DeadLetterReason.INFERENCE_ERROR, detail)


def build_label_record(
    msg: TextMessage,
    labels: Mapping[str, HeadPrediction],
    *,
    model_name: str,
    model_version: str,
    processed_at_ms: int,
    truncated: bool,
    include_text: bool,
) -> dict[str, Any]:
    """The labels-topic value (schema: streamer/schemas/labels.schema.json)."""
    out: dict[str, Any] = {k: v for k, v in msg.fields.items() if k not in RESERVED_KEYS}
    src: dict[str, Any] = {
        "topic": msg.source.topic,
        "partition": msg.source.partition,
        "offset": msg.source.offset,
        "timestamp": msg.source.timestamp,
    }
    if "source" in msg.fields:
        src["origin"] = msg.fields["source"]
    out["id"] = msg.id
    out["labels"] = {
        head: {"label": p.label, "score": p.score, "scores": dict(p.scores)} for head, p in labels.items()
    }
    out["model"] = {"name": model_name, "version": model_version}
    out["source"] = src
    out["processed_at"] = processed_at_ms
    out["truncated"] = truncated
    if include_text:
        out["text"] = msg.text
    return out


def encode_record(record: Mapping[str, Any]) -> bytes:
    return orjson.dumps(record)


def dead_letter_headers(dl: DeadLetter) -> list[Header]:
    """Original headers first, then ours naming the error and the exact source position."""
    src = dl.source
    ours: Sequence[Header] = (
        (H_ERROR, dl.reason.value.encode()),
        (H_ERROR_DETAIL, dl.detail[:1000].encode("utf-8", "replace")),
        (H_SOURCE_TOPIC, src.topic.encode()),
        (H_SOURCE_PARTITION, str(src.partition).encode()),
        (H_SOURCE_OFFSET, str(src.offset).encode()),
        (H_SOURCE_TIMESTAMP, str(src.timestamp if src.timestamp is not None else "").encode()),
    )
    return [*src.headers, *ours]


@dataclass(slots=True)
class Item:
    """One fetched record on its way through the daemon."""

    tp: TopicPartition
    decoded: Decoded
    fetched_at: float  # monotonic

    @property
    def offset(self) -> int:
        return self.decoded.source.offset


@dataclass(slots=True)
class Output:
    """The one record published for one input item: its label, or its dead letter."""

    item: Item
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[Header]

    def for_producer(self) -> tuple[bytes | None, bytes | None]:
        """(key, value) as a Kafka client accepts them: a record with neither gets an empty value."""
        value = b"" if self.value is None and self.key is None else self.value
        return self.key, value

    def without_value(self, why: str = "value larger than the producer or topic accepts") -> Output:
        """A dead letter too big to republish still leaves a trace: its headers, no value."""
        return Output(self.item, self.topic, self.key, None, [*self.headers, (H_VALUE_DROPPED, why.encode())])


def build_outputs(
    items: Sequence[Item],
    result: BatchResult | None,
    *,
    model_name: str,
    model_version: str,
    processed_at_ms: int,
    labels_topic: str,
    dead_letter_topic: str,
    max_record_bytes: int,
    include_text: bool,
) -> list[Output]:
    """One output per item, in item order; ``result`` holds the predictions of the text items in order.

    A label record over ``max_record_bytes`` goes without its text (``"text_omitted": true``),
    a dead letter without its original value (header ``sentiwire.value_dropped``): rather than
    be rejected by the broker and block the partition.
    """
    outs: list[Output] = []
    i = 0
    for it in items:
        dec = it.decoded
        if isinstance(dec, TextMessage):
            assert result is not None
            record = build_label_record(
                dec,
                result.predictions[i],
                model_name=model_name,
                model_version=model_version,
                processed_at_ms=processed_at_ms,
                truncated=result.truncated[i],
                include_text=include_text,
            )
            i += 1
            value = encode_record(record)
            if len(value) > max_record_bytes and "text" in record:
                del record["text"]
                record["text_omitted"] = True
                value = encode_record(record)
            outs.append(Output(it, labels_topic, dec.source.key, value, []))
        else:
            out = Output(it, dead_letter_topic, dec.source.key, dec.value, dead_letter_headers(dec))
            if dec.value is not None and len(dec.value) > max_record_bytes:
                out = out.without_value(f"original value was {len(dec.value)} bytes")
            outs.append(out)
    return outs
