"""The replay tool: real texts, correct message shape, ticker extraction, burst, steady pacing."""

from __future__ import annotations

import asyncio
import csv
import sys
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from sentiwire import replay as rp
from sentiwire.devbroker import BrokerHandle
from tests.fixtures.kafka import TopicFactory

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "tickers"),
    [
        ("$BYND - JPMorgan reels in expectations on Beyond Meat", ["BYND"]),
        ("$CCL $RCL - Nomura points to bookings weakness", ["CCL", "RCL"]),
        ("$ESS: BTIG Research cuts to Neutral, $ess again", ["ESS"]),
        ("Profit jumped 76% to $1.13bn (£600m) from $639m", []),
        ("Berkshire $BRK.B and $aapl", ["BRK.B", "AAPL"]),
        ("price$TSLA is not a cashtag, $$TSLA neither", []),
    ],
)
def test_extract_tickers(text: str, tickers: list[str]) -> None:
    assert rp.extract_tickers(text) == tickers


def test_loads_every_real_source(shared_data: Path) -> None:
    for source in rp.SOURCES:
        items = rp.load_items(shared_data, source)
        assert len(items) > 500, source
        assert all(it.text.strip() and it.kind == source for it in items)
    bbc = rp.load_items(shared_data, "bbc")
    assert sum(len(it.text) for it in bbc) / len(bbc) > 1000  # the long articles


def test_mixed_interleaves_kinds_evenly(shared_data: Path) -> None:
    items = rp.load_items(shared_data, "mixed")
    head = [it.kind for it in items[:8]]
    assert head == list(rp.MIXED) * 2
    counts = {k: sum(it.kind == k for it in items) for k in rp.MIXED}
    assert len(set(counts.values())) == 1


def test_same_seed_same_order_other_seed_other_order(shared_data: Path) -> None:
    a = rp.load_items(shared_data, "tweets", seed=1)
    b = rp.load_items(shared_data, "tweets", seed=1)
    c = rp.load_items(shared_data, "tweets", seed=2)
    assert [x.row for x in a[:50]] == [x.row for x in b[:50]]
    assert [x.row for x in a[:50]] != [x.row for x in c[:50]]


def test_bad_data_dir_and_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(rp.ReplayError, match="data file not found"):
        rp.load_items(tmp_path, "bbc")
    bad = tmp_path / "bbc-news"
    bad.mkdir()
    with (bad / "all.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["body", "label"], ["x", "tech"]])
    with pytest.raises(rp.ReplayError, match=r"all.csv: missing column\(s\) \['text'\]"):
        rp.load_items(tmp_path, "bbc")
    with pytest.raises(rp.ReplayError, match="--source 'nope'"):
        rp.load_items(tmp_path, "nope")


def test_burst_texts_are_real_negative_tweets_about_the_ticker(shared_data: Path) -> None:
    pool = rp.burst_items(shared_data, "tsla")
    negative_rows = [
        it
        for rel in rp.SOURCES["tweets"]
        for it in rp.read_csv(shared_data / rel, "x")
        if it.label == "negative"
    ]
    assert len(pool) == len(negative_rows) > 1000
    for it in pool[:200]:
        assert rp.extract_tickers(it.text) == ["TSLA"]
        assert it.label == "negative"


def test_stream_mixes_burst_only_inside_its_window(shared_data: Path) -> None:
    items = rp.load_items(shared_data, "phrasebank")
    burst = rp.Burst("TSLA", at_s=10, duration_s=5, share=0.5)
    stream = rp.Stream(items, burst=burst, burst_pool=rp.burst_items(shared_data, "TSLA"), seed=3)
    before = [stream.next_item(9.99) for _ in range(200)]
    during = [stream.next_item(12.0) for _ in range(2000)]
    after = [stream.next_item(15.0) for _ in range(200)]
    assert all(it is not None and it.kind == "phrasebank" for it in before + after)
    share = sum(it is not None and it.kind == "burst" for it in during) / len(during)
    assert 0.45 < share < 0.55


def test_stream_without_loop_ends_and_with_loop_cycles() -> None:
    items = [rp.Item("tweets", i, f"t{i}", "neutral") for i in range(3)]
    once = rp.Stream(items, loop=False)
    assert [once.next_item(0) for _ in range(4)] == [*items, None]
    cyc = rp.Stream(items, loop=True)
    assert [cyc.next_item(0) for _ in range(6)] == items * 2


def test_message_shape_and_keys() -> None:
    item = rp.Item("tweets", 7, "$AAPL and $MSFT slide", "negative")
    msg = rp.make_message(item, 42, 1_700_000_000_000)
    assert msg == {
        "id": "tweets-7-42",
        "text": "$AAPL and $MSFT slide",
        "ts": 1_700_000_000_000,
        "tickers": ["AAPL", "MSFT"],
        "source": "tweets",
    }
    assert rp.message_key(msg, "ticker") == b"AAPL"
    assert rp.message_key(msg, "id") == b"tweets-7-42"
    assert rp.message_key({**msg, "tickers": []}, "ticker") == b"tweets-7-42"


async def _read(bootstrap: str, topic: str, n: int) -> list[tuple[bytes | None, dict[str, object], int]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: list[tuple[bytes | None, dict[str, object], int]] = []
    try:
        for _ in range(60):
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                out.extend((r.key, orjson.loads(r.value), r.timestamp) for r in recs)
            if len(out) >= n:
                break
    finally:
        await consumer.stop()
    return out


async def test_replay_cli_streams_real_messages_at_a_steady_rate(
    kafka_broker: BrokerHandle, kafka_topic_factory: TopicFactory, shared_data: Path
) -> None:
    topic = kafka_topic_factory(3)
    cmd = [
        sys.executable,
        "-m",
        "sentiwire",
        "dev",
        "replay",
        "--bootstrap",
        kafka_broker.bootstrap,
        "--topic",
        topic,
        "--rate",
        "40",
        "--limit",
        "60",
        "--source",
        "tweets",
        "--key",
        "ticker",
        "--data-dir",
        str(shared_data),
    ]
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=REPO, stderr=asyncio.subprocess.PIPE)
    _, err_b = await asyncio.wait_for(proc.communicate(), 120)
    err = err_b.decode()
    assert proc.returncode == 0, err
    assert "sent 60 messages" in err
    got = await _read(kafka_broker.bootstrap, topic, 60)
    assert len(got) == 60
    texts = {it.text for it in rp.load_items(shared_data, "tweets")}
    for key, msg, ts in got:
        assert set(msg) == {"id", "text", "ts", "tickers", "source"}
        assert msg["text"] in texts
        assert msg["ts"] == ts  # record timestamp = event time in the value
        assert msg["tickers"] == rp.extract_tickers(str(msg["text"]))
        tickers = msg["tickers"]
        assert isinstance(tickers, list)
        assert key == (tickers[0] if tickers else msg["id"]).encode()
    stamps = sorted(ts for _, _, ts in got)
    # Paced, not dumped: 60 messages at 40/s span about 1.5 s (lower bound only; no speed assert).
    assert stamps[-1] - stamps[0] >= 0.8 * 59 / 40 * 1000


async def test_replay_burst_reaches_the_topic(
    kafka_broker: BrokerHandle, kafka_topic_factory: TopicFactory, shared_data: Path
) -> None:
    topic = kafka_topic_factory(1)
    stream = rp.Stream(
        rp.load_items(shared_data, "phrasebank"),
        burst=rp.Burst("NVDA", at_s=0, duration_s=3600, share=1.0),
        burst_pool=rp.burst_items(shared_data, "NVDA"),
    )
    stats = await rp.replay(
        bootstrap=kafka_broker.bootstrap, topic=topic, stream=stream, rate=0, limit=30, quiet=True
    )
    assert stats.sent == stats.burst == 30
    got = await _read(kafka_broker.bootstrap, topic, 30)
    assert len(got) == 30
    assert all(msg["tickers"] == ["NVDA"] and msg["source"] == "burst" for _, msg, _ in got)
