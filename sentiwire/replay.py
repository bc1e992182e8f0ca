"""Replay real texts from ../shared/data into Kafka at a steady rate (demo, benchmarks, soak).

Each message is JSON ``{"id", "text", "ts", "tickers", "source"}`` with ``ts`` the event time
in ms since the epoch (also the Kafka record timestamp). A scripted burst can turn a share of
the stream into real negative headlines about one ticker for a while, so the spike alerts
have something to fire on in the demo.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import random
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from streamer.errors import UsageError

Kind = Literal["phrasebank", "tweets", "topic", "bbc", "reviews"]
SOURCES: dict[str, tuple[str, ...]] = {
    "phrasebank": ("financial-phrasebank/train.csv",),
    "tweets": ("twitter-financial-news-sentiment/train.csv", "twitter-financial-news-sentiment/valid.csv"),
    "topic": ("twitter-financial-news-topic/train.csv",),
    "bbc": ("bbc-news/all.csv",),
    "reviews": ("uci-review-sentences/all.csv",),
}
# ``mixed`` interleaves these (headlines, tweets, long articles), as a news desk's feed would.
MIXED = ("phrasebank", "tweets", "topic", "bbc")
SOURCE_CHOICES = (*SOURCES, "mixed")

# $TSLA, $BRK.B — a cashtag starts with a letter, so $5.2bn is not one.
CASHTAG_RE = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{0,9}(?:\.[A-Za-z]{1,2})?)\b")


class ReplayError(UsageError):
    """Bad data directory, file, row or option; the message names it (exit 2)."""


@dataclass(frozen=True, slots=True)
class Item:
    """One real text with where it came from (``kind``, file row) and its gold label."""

    kind: str
    row: int
    text: str
    label: str


def extract_tickers(text: str) -> list[str]:
    """Cashtags in first-seen order, upper-cased, without duplicates."""
    return list(dict.fromkeys(m.group(1).upper() for m in CASHTAG_RE.finditer(text)))


def read_csv(path: Path, kind: str) -> list[Item]:
    """Rows with a non-blank ``text``; a file without ``text``/``label`` columns is an error."""
    if not path.exists():
        raise ReplayError(f"{path}: data file not found (is --data-dir the shared data folder?)")
    items: list[Item] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"text", "label"} - set(reader.fieldnames or ())
        if missing:
            raise ReplayError(f"{path}: missing column(s) {sorted(missing)}")
        for i, row in enumerate(reader, start=2):  # line 1 is the header
            text = (row.get("text") or "").strip()
            if text:
                items.append(Item(kind=kind, row=i, text=text, label=row.get("label") or ""))
    if not items:
        raise ReplayError(f"{path}: no rows with text")
    return items


def load_items(data_dir: Path, source: str, *, seed: int = 0) -> list[Item]:
    """The texts of one source, shuffled with ``seed``; ``mixed`` interleaves kinds round-robin."""
    if source not in SOURCE_CHOICES:
        raise ReplayError(f"--source {source!r}: choose one of {', '.join(SOURCE_CHOICES)}")
    rng = random.Random(seed)
    kinds = MIXED if source == "mixed" else (source,)
    per_kind: list[list[Item]] = []
    for kind in kinds:
        items = [it for rel in SOURCES[kind] for it in read_csv(data_dir / rel, kind)]
        rng.shuffle(items)
        per_kind.append(items)
    if len(per_kind) == 1:
        return per_kind[0]
    # Round-robin until the shortest kind runs out, so the mix stays even over the whole run.
    n = min(len(items) for items in per_kind)
    return [items[i] for i in range(n) for items in per_kind]


def burst_items(data_dir: Path, ticker: str, *, seed: int = 0) -> list[Item]:
    """Real negative finance tweets, rewritten to be about ``ticker`` (cashtags swapped)."""
    tag = "$" + ticker.lstrip("$").upper()
    out: list[Item] = []
    for it in (x for rel in SOURCES["tweets"] for x in read_csv(data_dir / rel, "burst")):
        if it.label != "negative":
            continue
        text = CASHTAG_RE.sub(tag, it.text) if CASHTAG_RE.search(it.text) else f"{tag} - {it.text}"
        out.append(Item(kind="burst", row=it.row, text=text, label=it.label))
    if not out:
        raise ReplayError(f"{data_dir}: no negative tweets for the burst")
    random.Random(seed).shuffle(out)
    return out


def make_message(item: Item, seq: int, ts_ms: int) -> dict[str, Any]:
    """The JSON value the daemon reads (text + passed-through id/ts/tickers/source)."""
    return {
        "id": f"{item.kind}-{item.row}-{seq}",
        "text": item.text,
        "ts": ts_ms,
        "tickers": extract_tickers(item.text),
        "source": item.kind,
    }


def message_key(msg: dict[str, Any], key_by: Literal["id", "ticker"]) -> bytes:
    """Key by id (spreads evenly) or by first ticker (per-ticker order), falling back to id."""
    if key_by == "ticker" and msg["tickers"]:
        return str(msg["tickers"][0]).encode()
    return str(msg["id"]).encode()


@dataclass(frozen=True)
class Burst:
    """From ``at_s`` to ``at_s + duration_s`` after start, ``share`` of messages are burst texts."""

    ticker: str
    at_s: float
    duration_s: float
    share: float = 0.6

    def active(self, elapsed_s: float) -> bool:
        return self.at_s <= elapsed_s < self.at_s + self.duration_s


@dataclass
class Stream:
    """Deterministic message sequence: normal items cycled, burst items mixed in while active."""

    items: Sequence[Item]
    loop: bool = True
    burst: Burst | None = None
    burst_pool: Sequence[Item] = ()
    seed: int = 0
    _rng: random.Random = field(init=False)
    _normal: Iterator[Item] = field(init=False)
    _burst: Iterator[Item] = field(init=False)

    def __post_init__(self) -> None:
        if not self.items:
            raise ReplayError("nothing to replay")
        if self.burst is not None and not self.burst_pool:
            raise ReplayError("a burst needs burst texts")
        self._rng = random.Random(self.seed)
        self._normal = itertools.cycle(self.items) if self.loop else iter(self.items)
        self._burst = itertools.cycle(self.burst_pool) if self.burst_pool else iter(())

    def next_item(self, elapsed_s: float) -> Item | None:
        """The next item, or None when the data is exhausted and ``loop`` is off."""
        if self.burst is not None and self.burst.active(elapsed_s) and self._rng.random() < self.burst.share:
            return next(self._burst)
        return next(self._normal, None)


@dataclass
class ReplayStats:
    sent: int = 0
    burst: int = 0
    elapsed_s: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def replay(
    *,
    bootstrap: str,
    topic: str,
    stream: Stream,
    rate: float,
    limit: int | None = None,
    duration_s: float | None = None,
    key_by: Literal["id", "ticker"] = "id",
    progress_every_s: float = 5.0,
    producer: Any | None = None,
    quiet: bool = False,
    stats: ReplayStats | None = None,
) -> ReplayStats:
    """Send until ``limit`` messages, ``duration_s`` seconds or the data end, at ``rate`` msg/s.

    The schedule is absolute (message i is due at start + i/rate), so a slow moment is caught
    up rather than lowering the average; ``rate <= 0`` sends as fast as the producer takes them.
    Every send is awaited for its broker acknowledgement before returning. Pass ``stats`` to
    watch the counts while it runs (e.g. when it is cancelled rather than left to finish).
    """
    from aiokafka import AIOKafkaProducer

    own = producer is None
    if producer is None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
        await producer.start()
    stats = stats if stats is not None else ReplayStats()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    last_progress = t0
    pending: list[asyncio.Future[Any]] = []
    try:
        while limit is None or stats.sent < limit:
            now = loop.time()
            elapsed = now - t0
            if duration_s is not None and elapsed >= duration_s:
                break
            if rate > 0:
                due = t0 + stats.sent / rate
                if due > now:
                    await asyncio.sleep(due - now)
                    elapsed = loop.time() - t0
            item = stream.next_item(elapsed)
            if item is None:
                break
            ts_ms = int(time.time() * 1000)
            msg = make_message(item, stats.sent, ts_ms)
            fut = await producer.send(
                topic, value=orjson.dumps(msg), key=message_key(msg, key_by), timestamp_ms=ts_ms
            )
            pending.append(fut)
            stats.sent += 1
            stats.burst += item.kind == "burst"
            stats.by_kind[item.kind] = stats.by_kind.get(item.kind, 0) + 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
            if not quiet and loop.time() - last_progress >= progress_every_s:
                last_progress = loop.time()
                print(
                    f"replay: {stats.sent} sent ({stats.burst} burst) in {last_progress - t0:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
        await asyncio.gather(*pending)
    finally:
        stats.elapsed_s = loop.time() - t0
        if own:
            await producer.stop()
    return stats
