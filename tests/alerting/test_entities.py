"""Which entities a labeled message is about."""

from __future__ import annotations

import csv
from pathlib import Path

from streamer.alerting.entities import EntityExtractor


def test_cashtags_tickers_field_and_dedup() -> None:
    ex = EntityExtractor()
    text = "$CCL $rcl - Nomura points to bookings weakness; $BRK.B flat, up $5.2bn, costs $100 https://t.co/x$AAPL"
    assert ex.extract(text, ["ccl", "$TSLA"]) == ["CCL", "TSLA", "RCL", "BRK.B"]
    assert ex.extract(None, "NVDA, AMD") == ["NVDA", "AMD"]
    assert ex.extract("no tags here", None) == []


def test_aliases_are_whole_words_case_insensitive() -> None:
    ex = EntityExtractor({"NOK": ["Nokia", "Nokia Oyj"], "TSLA": ["Tesla"]})
    assert ex.extract("NOKIA OYJ cuts jobs as Tesla rallies") == ["NOK", "TSLA"]
    assert ex.extract("Nokian Tyres and Teslas") == []


def test_cap_per_message() -> None:
    ex = EntityExtractor(max_per_message=3)
    assert ex.extract("$A $B $C $D $E") == ["A", "B", "C"]


def test_real_tweets_yield_their_cashtags(shared_data: Path) -> None:
    ex = EntityExtractor()
    path = shared_data / "twitter-financial-news-sentiment" / "train.csv"
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    found = {t for r in rows for t in ex.extract(r["text"])}
    assert {"TSLA", "SPY", "AAPL", "NVDA"} <= found
    assert not any(t[0].isdigit() for t in found)


def test_real_phrasebank_aliases(shared_data: Path) -> None:
    ex = EntityExtractor({"NOK": ["Nokia"]})
    path = shared_data / "financial-phrasebank" / "train.csv"
    with path.open(newline="", encoding="utf-8") as f:
        hits = [r for r in csv.DictReader(f) if ex.extract(r["text"]) == ["NOK"]]
    assert len(hits) > 50
    assert all("nokia" in r["text"].lower() for r in hits)
