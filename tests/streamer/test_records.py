from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from streamer.model.classifier import HeadPrediction
from streamer.records import (
    H_ERROR,
    H_SOURCE_OFFSET,
    DeadLetter,
    DeadLetterReason,
    Source,
    TextMessage,
    build_label_record,
    dead_letter_headers,
    decode,
)

SRC = Source("news", 2, 41, 1_700_000_000_123, b"key", (("trace", b"t1"),))
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "streamer/schemas/labels.schema.json").read_text())


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe", DeadLetterReason.NOT_UTF8),
        (b"{not json", DeadLetterReason.NOT_JSON),
        (b"42", DeadLetterReason.NOT_OBJECT),
        (b'{"body": "x"}', DeadLetterReason.MISSING_TEXT),
        (b'{"text": null}', DeadLetterReason.MISSING_TEXT),
        (None, DeadLetterReason.MISSING_TEXT),
        (b'{"text": ["a"]}', DeadLetterReason.TEXT_NOT_STRING),
        (b'{"text": " \\t "}', DeadLetterReason.BLANK_TEXT),
        (b'{"text": "' + b"a" * 200 + b'"}', DeadLetterReason.TOO_LARGE),
    ],
)
def test_bad_messages_become_dead_letters(value: bytes | None, reason: DeadLetterReason) -> None:
    out = decode(value, SRC, fmt="json", max_bytes=100)
    assert isinstance(out, DeadLetter)
    assert out.reason == reason
    assert out.value == value  # original bytes, untouched
    assert out.detail


def test_json_message_keeps_id_and_passes_fields_through() -> None:
    out = decode(
        b'{"id": 7, "text": "Profit fell.", "ts": 5, "tickers": ["A"]}', SRC, fmt="json", max_bytes=1000
    )
    assert isinstance(out, TextMessage)
    assert out.id == "7"
    assert out.text == "Profit fell."
    assert dict(out.fields) == {"id": 7, "ts": 5, "tickers": ["A"]}


def test_missing_id_falls_back_to_position() -> None:
    out = decode(b'{"text": "x"}', SRC, fmt="json", max_bytes=1000)
    assert isinstance(out, TextMessage)
    assert out.id == "news-2-41"


def test_plain_text_format() -> None:
    out = decode("Gewinn stieg €".encode(), SRC, fmt="text", max_bytes=1000)
    assert isinstance(out, TextMessage)
    assert out.text == "Gewinn stieg €"
    blank = decode(b"  ", SRC, fmt="text", max_bytes=1000)
    assert isinstance(blank, DeadLetter)
    assert blank.reason is DeadLetterReason.BLANK_TEXT
    bad = decode(b"\xc3", SRC, fmt="text", max_bytes=1000)
    assert isinstance(bad, DeadLetter)
    assert bad.reason is DeadLetterReason.NOT_UTF8


def test_dead_letter_headers_keep_originals_and_name_the_source() -> None:
    dl = decode(b"nope", SRC, fmt="json", max_bytes=1000)
    assert isinstance(dl, DeadLetter)
    headers = dead_letter_headers(dl)
    assert headers[0] == ("trace", b"t1")
    d = dict(headers)
    assert d[H_ERROR] == b"not_json"
    assert d[H_SOURCE_OFFSET] == b"41"
    assert d["sentiwire.source.partition"] == b"2"
    assert d["sentiwire.source.topic"] == b"news"


def test_label_record_matches_schema_and_keeps_input_source() -> None:
    msg = decode(
        b'{"id": "a1", "text": "Shares fell.", "ts": 1, "source": "tweets", "labels": "spoofed", "extra": {"k": 1}}',
        SRC,
        fmt="json",
        max_bytes=1000,
    )
    assert isinstance(msg, TextMessage)
    pred = {
        "sentiment": HeadPrediction("negative", 0.8, {"negative": 0.8, "neutral": 0.15, "positive": 0.05}),
        "topic": HeadPrediction("Earnings", 0.6, {"Earnings": 0.6, "Macro": 0.4}),
    }
    rec = build_label_record(
        msg, pred, model_name="m", model_version="v2", processed_at_ms=99, truncated=False, include_text=True
    )
    jsonschema.validate(orjson.loads(orjson.dumps(rec)), SCHEMA)
    assert rec["labels"]["sentiment"]["label"] == "negative"
    assert rec["source"] == {
        "topic": "news",
        "partition": 2,
        "offset": 41,
        "timestamp": 1_700_000_000_123,
        "origin": "tweets",
    }
    assert rec["extra"] == {"k": 1}
    assert rec["ts"] == 1
    assert rec["text"] == "Shares fell."
    assert rec["labels"] != "spoofed"  # reserved keys are never overwritten by input fields
    no_text = build_label_record(
        msg, pred, model_name="m", model_version="v2", processed_at_ms=99, truncated=True, include_text=False
    )
    assert "text" not in no_text
    assert no_text["truncated"] is True
