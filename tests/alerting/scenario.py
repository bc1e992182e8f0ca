"""Labeled-record streams built from real sentences in ../shared/data.

Gold sentiment labels stand in for the model's output (the detector only sees labels).
Tweets carry their real ``$CASHTAG``s. The tweets have no topic label, so each calm record
gets a topic drawn from the real topic distribution of twitter-financial-news-topic;
incident records get the topic (or ticker) the scenario is about. Hours of traffic are
compressed through event timestamps (``source.timestamp``), never by sleeping.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FED_RE = re.compile(r"\b(Fed|Powell|rate hike|rates|inflation|ECB|central bank)", re.IGNORECASE)
SENTIMENTS = ("negative", "neutral", "positive")


@dataclass
class Corpus:
    tweets: list[tuple[str, str]]  # (text, sentiment); calm traffic
    fed_negative: list[str]  # real negative tweets about central banks (excluded from calm)
    phrasebank_negative: list[str]  # 100%-agreement negative news sentences
    topic_labels: list[str]  # one per topic-set row: sampling it gives the real distribution


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def load_corpus(data: Path) -> Corpus:
    sent = data / "twitter-financial-news-sentiment"
    tweets_all = [(r["text"], r["label"]) for name in ("train.csv", "valid.csv") for r in _rows(sent / name)]
    fed = [t for t, label in tweets_all if label == "negative" and FED_RE.search(t)]
    fed_set = set(fed)
    tweets = [(t, label) for t, label in tweets_all if t not in fed_set]
    pb = [
        r["text"]
        for r in _rows(data / "financial-phrasebank" / "train.csv")
        if r["label"] == "negative" and r["agreement"] == "100"
    ]
    topics = [r["label"] for r in _rows(data / "twitter-financial-news-topic" / "train.csv")]
    return Corpus(tweets=tweets, fed_negative=fed, phrasebank_negative=pb, topic_labels=topics)


class StreamBuilder:
    """Makes labels-topic records (README "Message schema") with increasing offsets per partition."""

    def __init__(self, corpus: Corpus, *, seed: int = 7, partitions: int = 3, topic: str = "news") -> None:
        self.corpus = corpus
        self.rng = random.Random(seed)
        self.partitions = partitions
        self.topic = topic
        self.offsets = [0] * partitions
        self.n = 0

    def record(
        self,
        text: str,
        sentiment: str,
        topic_label: str,
        ts_ms: int,
        *,
        tickers: list[str] | None = None,
        score: float = 0.9,
    ) -> dict[str, Any]:
        self.n += 1
        part = self.n % self.partitions
        offset = self.offsets[part]
        self.offsets[part] += 1
        rest = (1.0 - score) / 2
        rec: dict[str, Any] = {
            "id": f"m{self.n}",
            "labels": {
                "sentiment": {
                    "label": sentiment,
                    "score": score,
                    "scores": {s: (score if s == sentiment else rest) for s in SENTIMENTS},
                },
                "topic": {"label": topic_label, "score": 0.8, "scores": {topic_label: 0.8}},
            },
            "model": {"name": "gold-labels", "version": "test"},
            "source": {"topic": self.topic, "partition": part, "offset": offset, "timestamp": ts_ms},
            "processed_at": ts_ms + 50,
            "text": text,
        }
        if tickers is not None:
            rec["tickers"] = tickers
        return rec

    def calm(self, start_ms: int, duration_s: float, every_s: float) -> list[dict[str, Any]]:
        """Mixed real tweets, shuffled, one every ``every_s`` seconds of event time."""
        out = []
        tweets = self.corpus.tweets[:]
        self.rng.shuffle(tweets)
        count = int(duration_s / every_s)
        for i in range(count):
            text, label = tweets[i % len(tweets)]
            ts = start_ms + int(i * every_s * 1000) + self.rng.randrange(0, int(every_s * 1000))
            out.append(self.record(text, label, self.rng.choice(self.corpus.topic_labels), ts))
        return out

    def ticker_burst(
        self, ticker: str, start_ms: int, duration_s: float, count: int, *, score: float = 0.9
    ) -> list[dict[str, Any]]:
        """Real negative news sentences about one company (named in the tickers field)."""
        texts = self.rng.sample(self.corpus.phrasebank_negative, count)
        return [
            self.record(
                t,
                "negative",
                self.rng.choice(self.corpus.topic_labels),
                start_ms + int(i * duration_s * 1000 / count),
                tickers=[ticker],
                score=score,
            )
            for i, t in enumerate(texts)
        ]

    def topic_wave(self, topic_label: str, start_ms: int, duration_s: float) -> list[dict[str, Any]]:
        """Every real negative central-bank tweet, labeled with that topic."""
        texts = self.corpus.fed_negative
        return [
            self.record(t, "negative", topic_label, start_ms + int(i * duration_s * 1000 / len(texts)))
            for i, t in enumerate(texts)
        ]

    def market_selloff(self, start_ms: int, duration_s: float, count: int) -> list[dict[str, Any]]:
        """Broad negative news across all topics."""
        texts = self.rng.sample(self.corpus.phrasebank_negative, count)
        return [
            self.record(
                t,
                "negative",
                self.rng.choice(self.corpus.topic_labels),
                start_ms + int(i * duration_s * 1000 / count),
            )
            for i, t in enumerate(texts)
        ]


def by_time(*streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged = [r for s in streams for r in s]
    merged.sort(key=lambda r: r["source"]["timestamp"])
    return merged


def jitter(records: list[dict[str, Any]], max_delay_ms: int, seed: int = 3) -> Iterator[dict[str, Any]]:
    """Arrival order where each record is delayed by less than ``max_delay_ms`` (out of order)."""
    rng = random.Random(seed)
    keyed = sorted(
        ((r["source"]["timestamp"] + rng.randrange(0, max_delay_ms), i) for i, r in enumerate(records)),
    )
    for _, i in keyed:
        yield records[i]
