"""Property tests of the decode path: whatever bytes, keys and headers arrive, every record
gets exactly one outcome (a label record or a dead letter with a reason) and nothing raises.

A raise here is a poison pill: the batch never publishes, the daemon stops, and under
Kubernetes it crash-loops on the same offset. Hypothesis draws arbitrary values (raw bytes,
JSON objects with arbitrary fields, JSON text with lone surrogate escapes, NULs, mutated
JSON), keys and headers, both input formats and tight size limits; explicit cases add JSON
nested 200,000 deep, nesting just past what orjson can write back, 1 MB values, invalid
surrogates and NUL bytes. Derandomized and without an example database, so CI sees the same
cases every run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import jsonschema
import orjson
import pytest
from aiokafka import TopicPartition
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamer.model.classifier import BatchResult, HeadPrediction
from streamer.records import (
    H_ERROR,
    H_ERROR_DETAIL,
    H_SOURCE_OFFSET,
    H_SOURCE_PARTITION,
    H_SOURCE_TOPIC,
    H_VALUE_DROPPED,
    DeadLetter,
    DeadLetterReason,
    Item,
    Output,
    Source,
    TextMessage,
    build_outputs,
    decode,
)

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "streamer/schemas/labels.schema.json").read_text())
# `tickers` is passed through from the input whatever its type; the schema's "array" describes
# well-formed inputs only, so the fuzzed records are checked against the daemon-owned keys.
SCHEMA["properties"].pop("tickers")
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
LABELS, DLQ = "labels", "labels.dead-letter"
PRED = {
    "sentiment": HeadPrediction("negative", 0.7, {"negative": 0.7, "neutral": 0.2, "positive": 0.1}),
    "topic": HeadPrediction("Earnings", 0.9, {"Earnings": 0.9, "Macro": 0.1}),
}
MB = 1_000_000

FUZZ = settings(
    max_examples=300,
    deadline=None,  # a loaded CI machine must not turn a slow example into a failure
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# ---------------------------------------------------------------- strategies

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(["text", "id", "source", "labels", "model", "ts", "tickers", "body"]) | st.text(
    max_size=8
)
json_objects = st.dictionaries(field_names, json_values, max_size=6)


@st.composite
def json_with_text(draw: st.DrawFn) -> bytes:
    """A JSON object that usually has a text field: of any type, often a string."""
    obj = draw(json_objects)
    obj["text"] = draw(st.text(max_size=200) | json_values)
    return orjson.dumps(obj)


@st.composite
def escaped_json(draw: st.DrawFn) -> bytes:
    """JSON text spelled with escapes orjson itself would never write: lone or paired surrogates,
    NUL, control characters."""
    pieces = draw(
        st.lists(
            st.sampled_from(
                [
                    "\\ud800",
                    "\\udfff",
                    "\\ud83d\\ude00",
                    "\\udc00\\ud800",
                    "\\u0000",
                    "\\n",
                    "\\t",
                    "a",
                    " ",
                    "é",
                ]
            ),
            max_size=12,
        )
    )
    field = draw(st.sampled_from(["text", "id", "source", "other"]))
    return ('{"' + field + '": "' + "".join(pieces) + '", "text": "fallback"}').encode()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """Valid JSON with bytes inserted, replaced or cut off: NULs, invalid UTF-8, surrogates."""
    base = bytearray(draw(json_with_text()))
    junk = draw(st.sampled_from([b"\x00", b"\xff", b"\xed\xa0\x80", b"\xc3", b"\xe2\x82", b"\\", b'"', b"{"]))
    at = draw(st.integers(min_value=0, max_value=len(base)))
    how = draw(st.sampled_from(["insert", "replace", "cut"]))
    if how == "insert":
        base[at:at] = junk
    elif how == "replace":
        base[at : at + len(junk)] = junk
    else:
        del base[at:]
    return bytes(base)


values = (
    st.none()
    | st.binary(max_size=300)
    | json_values.map(orjson.dumps)  # any JSON, objects or not
    | json_with_text()
    | escaped_json()
    | mutated()
)
keys = st.none() | st.binary(max_size=40)
headers = st.lists(st.tuples(st.text(max_size=12), st.binary(max_size=40)), max_size=4).map(tuple)
formats: st.SearchStrategy[Literal["json", "text"]] = st.sampled_from(["json", "text"])


@st.composite
def records(draw: st.DrawFn) -> tuple[bytes | None, Source]:
    source = Source(
        topic=draw(st.sampled_from(["news", "tweets.v2", "a-b_c"])),
        partition=draw(st.integers(min_value=0, max_value=1000)),
        offset=draw(st.integers(min_value=0, max_value=2**63 - 1)),
        timestamp=draw(st.none() | st.integers(min_value=-1, max_value=2**53)),
        key=draw(keys),
        headers=draw(headers),
    )
    return draw(values), source


# ---------------------------------------------------------------- the properties


def check_decoded(dec: object, value: bytes | None, source: Source) -> None:
    """Exactly one of the two outcomes, and each well-formed."""
    if isinstance(dec, DeadLetter):
        assert isinstance(dec.reason, DeadLetterReason)
        assert dec.detail
        assert dec.value is value  # the original bytes, untouched
        assert dec.source is source
    else:
        assert isinstance(dec, TextMessage)
        assert dec.source is source
        assert dec.text.strip()
        dec.text.encode("utf-8")  # no lone surrogate can reach the tokenizer or the label record
        assert isinstance(dec.id, str)
        assert dec.id


def outputs_for(
    decoded: list[object], *, max_record_bytes: int = MB, include_text: bool = True
) -> tuple[list[Item], list[Output]]:
    items = [Item(TopicPartition(d.source.topic, d.source.partition), d, 0.0) for d in decoded]  # type: ignore[attr-defined]
    n_texts = sum(isinstance(d, TextMessage) for d in decoded)
    result = BatchResult(
        predictions=[PRED] * n_texts,
        truncated=[i % 2 == 0 for i in range(n_texts)],
        tokenize_s=0.0,
        infer_s=0.0,
        real_tokens=0,
        padded_tokens=0,
    )
    outs = build_outputs(
        items,
        result if n_texts else None,
        model_name="m",
        model_version="v1",
        processed_at_ms=1,
        labels_topic=LABELS,
        dead_letter_topic=DLQ,
        max_record_bytes=max_record_bytes,
        include_text=include_text,
    )
    return items, outs


def check_outputs(
    items: list[Item], outs: list[Output], *, max_record_bytes: int = MB, include_text: bool = True
) -> None:
    """One output per item, in order: the label record of a text, the dead letter of the rest."""
    assert len(outs) == len(items)
    for it, out in zip(items, outs, strict=True):
        assert out.item is it
        dec = it.decoded
        src = dec.source
        assert out.key == src.key
        key, value = out.for_producer()
        assert value is not None or key is not None
        for name, hv in out.headers:
            assert isinstance(name, str)
            name.encode("utf-8")  # the producer encodes header names
            assert isinstance(hv, bytes)
        if isinstance(dec, TextMessage):
            assert out.topic == LABELS
            assert out.headers == []
            assert out.value is not None
            record = orjson.loads(out.value)
            VALIDATOR.validate(record)
            assert record["id"] == dec.id
            assert (record["source"]["partition"], record["source"]["offset"]) == (src.partition, src.offset)
            if "text" in record:
                assert include_text
                assert record["text"] == dec.text
            elif include_text:
                assert record["text_omitted"] is True  # too large with its text
                assert len(orjson.dumps({**record, "text": dec.text})) > max_record_bytes
        else:
            assert isinstance(dec, DeadLetter)
            assert out.topic == DLQ
            got = dict(out.headers)
            assert out.headers[: len(src.headers)] == list(src.headers)  # originals first
            assert got[H_ERROR] == dec.reason.value.encode()
            assert got[H_ERROR_DETAIL]
            assert got[H_SOURCE_TOPIC] == src.topic.encode()
            assert (int(got[H_SOURCE_PARTITION]), int(got[H_SOURCE_OFFSET])) == (src.partition, src.offset)
            if dec.value is not None and len(dec.value) > max_record_bytes:
                assert out.value is None
                assert H_VALUE_DROPPED in got
            else:
                assert out.value == dec.value


@FUZZ
@given(
    batch=st.lists(records(), min_size=1, max_size=8),
    fmt=formats,
    max_bytes=st.sampled_from([1, 64, 300, MB]),
    text_field=st.sampled_from(["text", "body", "id", ""]),
    max_record_bytes=st.sampled_from([1025, 4096, MB]),
    include_text=st.booleans(),
)
def test_every_record_gets_exactly_one_outcome(
    batch: list[tuple[bytes | None, Source]],
    fmt: Literal["json", "text"],
    max_bytes: int,
    text_field: str,
    max_record_bytes: int,
    include_text: bool,
) -> None:
    decoded: list[object] = []
    for value, source in batch:
        dec = decode(value, source, fmt=fmt, max_bytes=max_bytes, text_field=text_field)
        check_decoded(dec, value, source)
        decoded.append(dec)
    items, outs = outputs_for(decoded, max_record_bytes=max_record_bytes, include_text=include_text)
    check_outputs(items, outs, max_record_bytes=max_record_bytes, include_text=include_text)


@FUZZ
@given(value=st.binary(max_size=2000), fmt=formats)
@example(value=b"\x00", fmt="text")
@example(value=b"\xed\xa0\x80", fmt="text")  # a UTF-8-encoded surrogate (CESU-8): not UTF-8
def test_arbitrary_bytes_never_raise(value: bytes, fmt: Literal["json", "text"]) -> None:
    source = Source("news", 0, 7, None)
    dec = decode(value, source, fmt=fmt, max_bytes=MB)
    check_decoded(dec, value, source)
    check_outputs(*outputs_for([dec]))


@FUZZ
@given(obj=json_objects, text=st.text(min_size=1, max_size=100))
def test_json_objects_with_a_string_text_are_labeled(obj: dict[str, Any], text: str) -> None:
    """Any JSON object whose text is a non-blank string becomes a label record carrying its fields."""
    obj["text"] = text
    value = orjson.dumps(obj)
    dec = decode(value, Source("news", 1, 2, 3), fmt="json", max_bytes=MB)
    if not text.strip():
        assert isinstance(dec, DeadLetter)
        assert dec.reason is DeadLetterReason.BLANK_TEXT
        return
    assert isinstance(dec, TextMessage)
    assert dec.text == text
    items, outs = outputs_for([dec])
    check_outputs(items, outs)
    record = orjson.loads(outs[0].value or b"")
    reserved = {"id", "labels", "model", "source", "processed_at", "text", "truncated"}
    for k, v in obj.items():
        if k not in reserved:
            assert record[k] == v


# ---------------------------------------------------------------- explicit hostile cases


def _nested(depth: int, *, where: Literal["value", "field", "source", "text"]) -> bytes:
    deep = "[" * depth + "]" * depth
    if where == "value":
        return deep.encode()
    if where == "text":
        return ('{"text": ' + deep + "}").encode()
    name = "source" if where == "source" else "payload"
    return ('{"text": "Profit rose.", "' + name + '": ' + deep + "}").encode()


HOSTILE: dict[str, tuple[bytes | None, Literal["json", "text"], int]] = {
    "tombstone": (None, "json", MB),
    "empty": (b"", "json", MB),
    "nested_200k_array": (_nested(200_000, where="value"), "json", 10 * MB),
    "nested_200k_object": (b'{"a":' * 200_000 + b"1" + b"}" * 200_000, "json", 10 * MB),
    "nested_200k_in_text": (_nested(200_000, where="text"), "json", 10 * MB),
    "nested_200k_in_field": (_nested(200_000, where="field"), "json", 10 * MB),
    "nested_200k_as_text_format": (_nested(200_000, where="value"), "text", 10 * MB),
    # Deep enough for orjson to parse (limit 1024) but past what it can write back (254):
    # the label record could not be encoded, so the record must be dead-lettered instead.
    "nested_300_in_field": (_nested(300, where="field"), "json", MB),
    "nested_1000_in_field": (_nested(1000, where="field"), "json", MB),
    "nested_253_in_source": (_nested(253, where="source"), "json", MB),
    "nested_254_in_field": (_nested(254, where="field"), "json", MB),
    "nested_1000_in_id": (b'{"text": "a", "id": ' + b"[" * 1000 + b"]" * 1000 + b"}", "json", MB),
    "text_omitted_spoofed": (b'{"text": "a", "text_omitted": "yes"}', "json", MB),
    "value_1mb_text": (orjson.dumps({"text": "x" * MB}), "json", 2 * MB),
    "value_1mb_field": (orjson.dumps({"text": "ok", "blob": "y" * MB}), "json", 2 * MB),
    "value_1mb_over_limit": (orjson.dumps({"text": "x" * MB}), "json", MB),
    "value_1mb_binary": (bytes(range(256)) * (MB // 256), "json", 2 * MB),
    "value_1mb_plain_text": (b"z" * MB, "text", 2 * MB),
    "lone_high_surrogate_escape": (b'{"text": "a\\ud800b"}', "json", MB),
    "lone_low_surrogate_escape": (b'{"text": "\\udc00"}', "json", MB),
    "reversed_surrogate_pair": (b'{"text": "\\udc00\\ud800"}', "json", MB),
    "valid_surrogate_pair": (b'{"text": "\\ud83d\\ude00 up"}', "json", MB),
    "surrogate_in_field": (b'{"text": "ok", "x": "\\udfff"}', "json", MB),
    "surrogate_in_id": (b'{"text": "ok", "id": "\\ud800"}', "json", MB),
    "cesu8_surrogate_bytes": (b'{"text": "\xed\xa0\x80"}', "json", MB),
    "cesu8_surrogate_plain": (b"\xed\xb0\x80 text", "text", MB),
    "nul_escape_in_text": (b'{"text": "a\\u0000b"}', "json", MB),
    "raw_nul_in_json_string": (b'{"text": "a\x00b"}', "json", MB),
    "nul_after_json": (b'{"text": "a"}\x00', "json", MB),
    "nul_plain_text": (b"a\x00b", "text", MB),
    "only_nul": (b"\x00", "text", MB),
    "nul_key_in_json": (b'{"text": "a", "\\u0000": 1}', "json", MB),
    "huge_int_id": (b'{"text": "a", "id": ' + b"9" * 5000 + b"}", "json", MB),
    "max_u64_id": (b'{"text": "a", "id": 18446744073709551615}', "json", MB),
    "float_overflow": (b'{"text": "a", "x": 1e400}', "json", MB),
    "bom": (b'\xef\xbb\xbf{"text": "a"}', "json", MB),
    "json_array": (b'[{"text": "a"}]', "json", MB),
    "json_string": (b'"text"', "json", MB),
    "duplicate_text_keys": (b'{"text": "a", "text": 5}', "json", MB),
}


@pytest.mark.parametrize(("value", "fmt", "max_bytes"), list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_values_get_one_outcome(
    value: bytes | None, fmt: Literal["json", "text"], max_bytes: int
) -> None:
    source = Source("news", 3, 99, 1_700_000_000_000, b"\x00key\xff", (("h\x00", b"\xff\x00"), ("", b"")))
    dec = decode(value, source, fmt=fmt, max_bytes=max_bytes)
    check_decoded(dec, value, source)
    for include_text in (True, False):
        items, outs = outputs_for([dec], include_text=include_text)
        check_outputs(items, outs, include_text=include_text)


def test_nesting_orjson_cannot_write_back_is_dead_lettered_as_not_json() -> None:
    """Parsed fine, but no label record could carry it: a dead letter naming why, not a crash."""
    for depth in (255, 300, 1000):
        dec = decode(_nested(depth, where="field"), Source("news", 0, 1, None), fmt="json", max_bytes=MB)
        assert isinstance(dec, DeadLetter), depth
        assert dec.reason is DeadLetterReason.NOT_JSON
        assert "deep" in dec.detail
    # The input's own `source` lands one level deeper in the label record (source.origin).
    dec = decode(_nested(254, where="source"), Source("news", 0, 1, None), fmt="json", max_bytes=MB)
    assert isinstance(dec, DeadLetter)
    shallow = decode(_nested(250, where="field"), Source("news", 0, 1, None), fmt="json", max_bytes=MB)
    assert isinstance(shallow, TextMessage)


def test_hostile_batch_mixed_with_good_records() -> None:
    """One batch holding every hostile case between good records: one outcome each, in order."""
    decoded: list[object] = []
    offset = 0
    for value, fmt, max_bytes in HOSTILE.values():
        for v in (b'{"text": "Good news."}', value):
            source = Source("news", 0, offset, None)
            offset += 1
            decoded.append(decode(v, source, fmt=fmt, max_bytes=max_bytes))
    items, outs = outputs_for(decoded)
    check_outputs(items, outs)
    assert [o.item.offset for o in outs] == list(range(offset))
