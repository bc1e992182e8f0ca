"""Data loading, source specs, label maps and every bad-input case (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.data import (
    DataError,
    SourceSpec,
    head_labels,
    load_source,
    parse_label_maps,
    parse_source,
    read_rows,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    return write(
        tmp_path / "train.csv",
        "text,label,agreement\n"
        "Profit rose,Bullish,100\n"
        "Shares fell,Bearish,75\n"
        '"Flat quarter, as expected",Neutral,100\n',
    )


def test_parse_source_defaults_and_options() -> None:
    s = parse_source("sentiment=data/financial-phrasebank/train.csv")
    assert (s.head, s.path, s.text_column, s.label_column) == (
        "sentiment",
        "data/financial-phrasebank/train.csv",
        "text",
        "label",
    )
    assert s.display_name == "financial-phrasebank"  # generic stem -> folder name
    s = parse_source("topic=x/tweets.jsonl?text=body&label=tag&map=A:b,C:d&where=lang:en&slice=src&name=tw")
    assert s.text_column == "body"
    assert s.label_column == "tag"
    assert dict(s.label_map) == {"A": "b", "C": "d"}
    assert s.where == ("lang", "en")
    assert s.slice_column == "src"
    assert s.display_name == "tw"
    assert parse_source("h=x/tweets.csv").display_name == "tweets"


def test_parse_source_global_label_map_and_override() -> None:
    s = parse_source("sentiment=a.csv", label_map={"Bearish": "negative"})
    assert dict(s.label_map) == {"Bearish": "negative"}
    s = parse_source("sentiment=a.csv?map=Bullish:positive", label_map={"Bearish": "negative"})
    assert dict(s.label_map) == {"Bullish": "positive"}


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("sentiment", "expected HEAD=PATH"),
        ("=a.csv", "expected HEAD=PATH"),
        ("two words=a.csv", "simple identifier"),
        ("h=a.csv?colour=red", "unknown option"),
        ("h=a.csv?map=A-b", "FROM:TO"),
        ("h=a.csv?where=nocolon", "COLUMN:VALUE"),
    ],
)
def test_parse_source_errors(spec: str, problem: str) -> None:
    with pytest.raises(DataError, match=problem):
        parse_source(spec)


def test_source_spec_json_round_trip() -> None:
    s = parse_source("topic=x/t.csv?text=body&map=A:b&where=c:d&slice=e&name=n")
    assert SourceSpec.from_json(json.loads(json.dumps(s.to_json()))) == s


def test_parse_label_maps() -> None:
    maps = parse_label_maps(["sentiment:Bearish=negative,Bullish=positive", "sentiment:Neutral=neutral"])
    assert maps == {"sentiment": {"Bearish": "negative", "Bullish": "positive", "Neutral": "neutral"}}
    with pytest.raises(DataError, match="HEAD:FROM=TO"):
        parse_label_maps(["Bearish=negative"])
    with pytest.raises(DataError, match="FROM=TO"):
        parse_label_maps(["sentiment:Bearish"])


def test_label_map_applied(csv_file: Path) -> None:
    spec = parse_source(f"sentiment={csv_file}?map=Bullish:positive,Bearish:negative,Neutral:neutral")
    data = load_source(spec, allowed_labels=["negative", "neutral", "positive"])
    assert data.labels == ["positive", "negative", "neutral"]
    assert data.texts[2] == "Flat quarter, as expected"
    assert data.report.used == 3
    assert data.report.n_skipped == 0
    assert len(data.sha256) == 64


def test_labels_outside_map_are_skipped_and_counted(csv_file: Path) -> None:
    spec = parse_source(f"sentiment={csv_file}?map=Bullish:positive,Bearish:negative")
    data = load_source(spec, allowed_labels=["negative", "neutral", "positive"])
    assert data.labels == ["positive", "negative"]
    assert data.report.n_skipped == 1
    assert "row 3" in data.report.examples[0]
    assert "'Neutral'" in data.report.examples[0]
    with pytest.raises(DataError, match=r"train\.csv: row 3: label outside the label set.*--strict"):
        load_source(spec, allowed_labels=["negative", "neutral", "positive"], strict=True)


def test_blank_text_and_blank_label(tmp_path: Path) -> None:
    f = write(tmp_path / "d.csv", "text,label\nok,positive\n   ,negative\nfine,\n")
    data = load_source(parse_source(f"sentiment={f}"))
    assert data.texts == ["ok"]
    assert data.report.skipped == {"blank text in column 'text'": 1, "blank label in column 'label'": 1}
    with pytest.raises(DataError, match=r"d\.csv: row 2: blank text"):
        load_source(parse_source(f"sentiment={f}"), strict=True)


def test_where_filter_and_slices(csv_file: Path) -> None:
    data = load_source(parse_source(f"s={csv_file}?where=agreement:100&slice=agreement"))
    assert data.texts == ["Profit rose", "Flat quarter, as expected"]
    assert data.slices == ["100", "100"]
    assert data.report.filtered == 1
    assert data.report.n_skipped == 0


def test_missing_columns_named(csv_file: Path) -> None:
    with pytest.raises(DataError, match=r"missing column\(s\) \['sentence'\]"):
        load_source(parse_source(f"s={csv_file}?text=sentence"))
    with pytest.raises(DataError, match=r"missing column\(s\) \['lang'\]"):
        load_source(parse_source(f"s={csv_file}?where=lang:en"))


def test_jsonl_and_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": "up", "label": "positive"}, {"text": "down", "label": "negative"}]
    j = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    for path in (j, tmp_path / "d.parquet"):
        data = load_source(parse_source(f"s={path}"))
        assert data.texts == ["up", "down"]
        assert data.labels == ["positive", "negative"]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.csv", "", "empty file"),
        ("header_only.csv", "text,label\n", "no data rows"),
        ("blank.jsonl", "\n\n", "no data rows"),
        ("bad.jsonl", '{"text": "a", "label": "b"}\n{"text": oops}\n', r"row 2: invalid JSON"),
        ("list.jsonl", "[1, 2]\n", "row 1: expected a JSON object"),
        ("extra.csv", "text,label\na,b,c\n", "row 1 .*more fields than the header"),
        ("d.txt", "text\n", "unsupported file type .txt"),
        ("bad.parquet", "not parquet", "unreadable Parquet"),
    ],
)
def test_unreadable_or_empty_files(tmp_path: Path, name: str, content: str, problem: str) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(DataError, match=problem) as err:
        read_rows(path)
    assert name in str(err.value)


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "latin1.csv"
    p.write_bytes("text,label\ncaf\xe9,positive\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv: not UTF-8"):
        read_rows(p)
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        read_rows(tmp_path / "nope.csv")


def test_no_usable_rows(tmp_path: Path) -> None:
    f = write(tmp_path / "d.csv", "text,label\n,positive\n")
    with pytest.raises(DataError, match=r"no usable rows .*blank text"):
        load_source(parse_source(f"s={f}"))


def test_head_labels_order() -> None:
    assert head_labels("sentiment", ["positive", "negative"]) == ("negative", "neutral", "positive")
    assert head_labels("topic", ["b", "a", "b"]) == ("a", "b")
    assert head_labels("x", [], ["z", "y"]) == ("z", "y")
    with pytest.raises(DataError, match="fewer than 2 labels"):
        head_labels("topic", ["a", "a"])
    with pytest.raises(DataError, match="duplicate"):
        head_labels("x", [], ["a", "a"])


def test_real_data_labels_are_already_canonical(shared_data: Path) -> None:
    """The sentiment CSVs already use negative/neutral/positive: no map needed."""
    for rel in ("financial-phrasebank/train.csv", "twitter-financial-news-sentiment/train.csv"):
        data = load_source(
            parse_source(f"sentiment={shared_data / rel}"), allowed_labels=["negative", "neutral", "positive"]
        )
        assert data.report.n_skipped == 0
        assert set(data.labels) == {"negative", "neutral", "positive"}
