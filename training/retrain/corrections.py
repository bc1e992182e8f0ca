"""Human-corrected labels from a Kafka topic, snapshotted (beginning to current end) into CSVs.

A record is JSON ``{"text": ..., "head": ..., "label": ...}`` or ``{"text": ..., "labels": {head: label}}``.
Records that are not such objects are counted and reported, never dropped silently.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.holdout import write_csv
from training.retrain.errors import RetrainError

if TYPE_CHECKING:
    from training.data import SourceSpec

MAX_BAD_EXAMPLES = 10


def parse_correction(value: bytes | None) -> tuple[str, dict[str, str]] | str:
    """``(text, {head: label})`` of one record, or the problem that makes it unusable."""
    try:
        obj = json.loads(value or b"")
    except ValueError:
        obj = None
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"].strip():
        return "not a JSON object with a non-empty text"
    raw = obj.get("labels")
    pairs: dict[Any, Any] = raw if isinstance(raw, dict) else {obj.get("head"): obj.get("label")}
    good = {h: lab for h, lab in pairs.items() if isinstance(h, str) and isinstance(lab, str) and lab}
    return (obj["text"], good) if good else "no head/label pair"


class Corrections:
    """Rows per head, and the unusable records counted by problem (a few kept as examples)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.rows: dict[str, tuple[list[str], list[str]]] = {}
        self.bad: dict[str, int] = {}
        self.bad_examples: list[str] = []

    def add(self, record: Any) -> None:
        parsed = parse_correction(record.value)
        if isinstance(parsed, tuple):
            text, labels = parsed
            for h, lab in labels.items():
                self.rows.setdefault(h, ([], []))[0].append(text)
                self.rows[h][1].append(lab)
            return
        self.bad[parsed] = self.bad.get(parsed, 0) + 1
        if len(self.bad_examples) < MAX_BAD_EXAMPLES:
            self.bad_examples.append(f"{self.topic}@{record.partition}:{record.offset}: {parsed}")


def read_corrections(
    settings_path: Path, topic: str, out: Path, *, timeout_s: float = 60.0
) -> list[SourceSpec]:
    """Read ``topic`` to its end with the daemon config's Kafka settings; one CSV per head under ``out``."""
    import asyncio

    from training.data import SourceSpec

    found = Corrections(topic)
    asyncio.run(_consume(settings_path, topic, found.add, timeout_s))
    if found.bad:
        print(f"note: {topic}: skipped {sum(found.bad.values())} record(s): {found.bad}", file=sys.stderr)
        for line in found.bad_examples:
            print(f"  {line}", file=sys.stderr)
    specs = []
    for head, (texts, labels) in sorted(found.rows.items()):
        path = out / f"corrections-{head}.csv"
        write_csv(path, texts, labels)
        specs.append(SourceSpec(head=head, path=str(path), name=f"{topic}"))
    if not specs:
        print(f"note: {topic}: no usable corrections", file=sys.stderr)
    return specs


async def _consume(settings_path: Path, topic: str, handle: Any, timeout_s: float) -> None:
    from aiokafka.errors import KafkaError

    from streamer.config import load_settings
    from streamer.errors import UnavailableError
    from streamer.kafka.admin import TopicError, topic_partitions
    from streamer.kafka.clients import client_kwargs, make_reader
    from streamer.kafka.reader import ReadTimeout, read_to_end

    settings = load_settings(settings_path)

    def unreachable(exc: Exception) -> UnavailableError:
        where = settings.kafka.bootstrap_servers
        return UnavailableError(f"--corrections-topic {topic}: Kafka at {where} not reachable: {exc}")

    try:
        tps = await topic_partitions(client_kwargs(settings.kafka), topic)
    except TopicError as exc:
        raise RetrainError(f"--corrections-topic {topic}: {exc}") from None
    except KafkaError as exc:
        raise unreachable(exc) from exc
    consumer = make_reader(settings.kafka)
    try:
        await consumer.start()
        await read_to_end(consumer, tps, handle, timeout_s=timeout_s)
    except ReadTimeout:
        raise ReadTimeout(f"--corrections-topic {topic}: not read to its end within {timeout_s}s") from None
    except KafkaError as exc:
        raise unreachable(exc) from exc
    finally:
        await consumer.stop()
