"""Compressed record batches in and out, with kcat (librdkafka) as the independent client.

Producers compress by default in many shops, and aiokafka decodes snappy, lz4 and zstd only
with ``cramjam`` installed (a serving dependency for that reason): without it the first such
batch stopped the daemon. Each test produces with ``kcat -z <codec>``, runs the daemon with
``output.compression`` set to a codec, and reads labels and dead letters back with kcat. The
batches' codec is read from the broker's log segments, so a test cannot pass on uncompressed
batches by accident (librdkafka sends a batch uncompressed when compressing does not pay).
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
from pathlib import Path

import orjson
import pytest
from aiokafka import codec as aiokafka_codec

from sentiwire.devbroker import BrokerHandle
from streamer.testing import daemon_config
from tests.fixtures.kafka import TopicFactory
from tests.streamer.helpers import running_daemon, settings_from

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (make system-deps)"),
]

CODECS = ("gzip", "snappy", "lz4", "zstd")
# Record batch attribute bits 0-2 (Kafka protocol, RecordBatch v2).
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
N_GOOD = 50
BAD = [b"not json at all", b'{"text": 42}']
LABEL_WAIT_S = 120.0


def test_aiokafka_has_every_codec() -> None:
    """cramjam is installed with the serving dependencies (aiokafka[lz4,snappy,zstd])."""
    assert aiokafka_codec.has_gzip()
    assert aiokafka_codec.has_snappy()
    assert aiokafka_codec.has_lz4()
    assert aiokafka_codec.has_zstd()


def _lines(prefix: str) -> list[str]:
    """kcat input lines ``key:value``: 50 JSON messages (compressible: repetitive text), then 2 bad ones."""
    good = [
        f"k{i % 5}:"
        + orjson.dumps(
            {
                "id": f"{prefix}-{i}",
                "text": f"Quarterly revenue of company {i} rose sharply, beating analyst estimates again.",
                "tickers": ["ACME"],
            }
        ).decode()
        for i in range(N_GOOD)
    ]
    bad = [f"bad{i}:{v.decode()}" for i, v in enumerate(BAD)]
    return good + bad


def _kcat_produce(bootstrap: str, topic: str, lines: list[str], codec: str) -> None:
    subprocess.run(
        ["kcat", "-b", bootstrap, "-P", "-t", topic, "-K", ":", "-z", codec, "-X", "linger.ms=50"],
        input="".join(line + "\n" for line in lines),
        text=True,
        check=True,
        timeout=60,
    )


async def _kcat_read(bootstrap: str, topic: str, fmt: str) -> list[str]:
    """Everything in the topic now (``-e``: stop at the end of every partition), one line per record."""
    proc = await asyncio.create_subprocess_exec(
        *("kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", fmt),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode(errors="replace")
    return out.decode().splitlines()


async def _kcat_read_until(bootstrap: str, topic: str, fmt: str, n: int, what: str) -> list[str]:
    """Read with kcat until ``n`` records are there; fails naming how many arrived."""
    deadline = asyncio.get_running_loop().time() + LABEL_WAIT_S
    lines: list[str] = []
    while asyncio.get_running_loop().time() < deadline:
        lines = await _kcat_read(bootstrap, topic, fmt)
        if len(lines) >= n:
            return lines
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what}: {len(lines)} of {n} records in {topic} after {LABEL_WAIT_S:.0f} s")


def _input_positions(bootstrap: str, topic: str) -> list[tuple[str, int, int]]:
    """(key, partition, offset) of every input record, as kcat sees them."""
    out = subprocess.run(
        ["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k %p %o\n"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [(k, int(p), int(o)) for k, p, o in (line.split() for line in out.splitlines())]


def batch_codecs(broker: BrokerHandle, topic: str) -> set[str]:
    """The codec of every record batch in the topic's log segments on the broker's disk."""
    names = {v: k for k, v in CODEC_IDS.items()}
    found: set[str] = set()
    for segment in sorted((broker.workdir / "data").glob(f"{topic}-*/*.log")):
        data = segment.read_bytes()
        pos = 0
        # baseOffset int64, batchLength int32, partitionLeaderEpoch int32, magic int8, crc int32,
        # attributes int16.
        while pos + 23 <= len(data):
            (length,) = struct.unpack_from(">i", data, pos + 8)
            if length <= 0:
                break
            (attributes,) = struct.unpack_from(">h", data, pos + 21)
            found.add(names.get(attributes & 0x07, f"unknown-{attributes & 0x07}"))
            pos += 12 + length
    return found


async def _serve_and_read(
    bootstrap: str,
    tiny_bundle: Path,
    tmp_path: Path,
    *,
    topic: str,
    labels: str,
    dlq: str,
    compression: str | None,
    n_good: int,
    n_bad: int,
) -> tuple[list[dict[str, object]], list[str]]:
    cfg = daemon_config(
        bootstrap=bootstrap,
        bundle=tiny_bundle,
        topics=topic,
        labels=labels,
        dlq=dlq,
        group=f"codecs-{topic}",
        output={"compression": compression, "linger_ms": 20},
    )
    async with running_daemon(settings_from(tmp_path, cfg), timeout_s=60) as daemon:
        label_lines = await _kcat_read_until(bootstrap, labels, "%s\n", n_good, "labels")
        dead_lines = await _kcat_read_until(bootstrap, dlq, "%k\n", n_bad, "dead letters")
    assert daemon.exit_code == 0
    return [orjson.loads(line) for line in label_lines], dead_lines


@pytest.mark.parametrize("codec", CODECS)
async def test_kcat_compressed_input_and_compressed_output(
    codec: str,
    kafka_broker: BrokerHandle,
    kafka_topic_factory: TopicFactory,
    tiny_bundle: Path,
    tmp_path: Path,
) -> None:
    """kcat -z CODEC in, output.compression CODEC out: every record labeled or dead-lettered
    once, and every batch on both sides really is in that codec."""
    bootstrap = kafka_broker.bootstrap
    topic, labels, dlq = kafka_topic_factory(3), kafka_topic_factory(3), kafka_topic_factory(1)
    _kcat_produce(bootstrap, topic, _lines(codec), codec)
    assert batch_codecs(kafka_broker, topic) == {codec}
    positions = _input_positions(bootstrap, topic)
    assert len(positions) == N_GOOD + len(BAD)

    records, dead = await _serve_and_read(
        bootstrap,
        tiny_bundle,
        tmp_path,
        topic=topic,
        labels=labels,
        dlq=dlq,
        compression=codec,
        n_good=N_GOOD,
        n_bad=len(BAD),
    )

    assert sorted(str(r["id"]) for r in records) == sorted(f"{codec}-{i}" for i in range(N_GOOD))
    good_positions = {(p, o) for key, p, o in positions if not key.startswith("bad")}
    assert {(r["source"]["partition"], r["source"]["offset"]) for r in records} == good_positions  # type: ignore[index]
    assert sorted(dead) == ["bad0", "bad1"]
    assert batch_codecs(kafka_broker, labels) == {codec}
    assert batch_codecs(kafka_broker, dlq) == {codec}


async def test_mixed_codecs_in_one_partition(
    kafka_broker: BrokerHandle, kafka_topic_factory: TopicFactory, tiny_bundle: Path, tmp_path: Path
) -> None:
    """Batches of every codec, and uncompressed ones, interleaved in one partition: one daemon
    (uncompressed output) labels them all, in order."""
    bootstrap = kafka_broker.bootstrap
    topic, labels, dlq = kafka_topic_factory(1), kafka_topic_factory(1), kafka_topic_factory(1)
    codecs = ("none", *CODECS, "gzip", "zstd")
    for round_no, codec in enumerate(codecs):
        good = [line for line in _lines(f"{codec}{round_no}") if not line.startswith("bad")][:10]
        _kcat_produce(bootstrap, topic, good, codec)
    assert batch_codecs(kafka_broker, topic) == {"none", *CODECS}
    n = 10 * len(codecs)

    records, _ = await _serve_and_read(
        bootstrap,
        tiny_bundle,
        tmp_path,
        topic=topic,
        labels=labels,
        dlq=dlq,
        compression=None,
        n_good=n,
        n_bad=0,
    )

    offsets = [r["source"]["offset"] for r in records]  # type: ignore[index]
    assert offsets == list(range(n))  # one partition in, one out: every offset once, in order
    assert batch_codecs(kafka_broker, labels) == {"none"}
