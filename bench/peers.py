"""The two hand-written consumers sentiwire is compared with, each run as its own process.

``naive``: the classic BERT-tutorial service — a Kafka consumer that calls a transformers
``pipeline`` once per message and produces the label. ``batched``: what a competent engineer
writes in an afternoon — fetch up to ``batch_size`` records, tokenize them together, one
PyTorch forward pass, produce the labels. Both use the same pretrained MiniLM encoder (with a
random 3-label head: speed does not depend on training) and the same max_length as the bundle.
They run until SIGTERM.

    python -m bench.peers naive --bootstrap 127.0.0.1:9092 --input news --output labels
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time
import warnings
from typing import Any

import orjson

LABELS = ("negative", "neutral", "positive")


def _load(model_dir: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # "Some weights were newly initialized" is intended here (a random head).
    logging.getLogger("transformers").setLevel(logging.ERROR)
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(LABELS), local_files_only=True
    ).eval()
    return tok, model


def _text(value: bytes | None) -> tuple[str, str]:
    msg = orjson.loads(value or b"{}")
    return str(msg.get("id", "")), str(msg.get("text", ""))


async def run(args: argparse.Namespace) -> None:
    import torch
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    torch.set_num_threads(args.threads)
    tok, model = _load(args.model_dir)
    pipe = None
    if args.kind == "naive":
        from transformers import pipeline

        pipe = pipeline("text-classification", model=model, tokenizer=tok, device=-1)
    consumer = AIOKafkaConsumer(
        args.input,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=5)
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(f"peer {args.kind} ready pid {os.getpid()}", flush=True)
    try:
        while not stop.is_set():
            batch = await consumer.getmany(
                timeout_ms=50, max_records=1 if pipe is not None else args.batch_size
            )
            records = [r for recs in batch.values() for r in recs]
            if not records:
                continue
            if pipe is not None:
                for r in records:
                    rid, text = _text(r.value)
                    out = pipe(text, truncation=True, max_length=args.max_length)[0]
                    value = {
                        "id": rid,
                        "label": out["label"],
                        "score": float(out["score"]),
                        "source_ts": r.timestamp,
                    }
                    await producer.send(args.output, key=r.key, value=orjson.dumps(value))
                continue
            pairs = [_text(r.value) for r in records]
            with torch.inference_mode():
                enc = tok(
                    [t for _, t in pairs],
                    padding=True,
                    truncation=True,
                    max_length=args.max_length,
                    return_tensors="pt",
                )
                probs = model(**enc).logits.softmax(-1)
            best = probs.argmax(-1).tolist()
            scores = probs.max(-1).values.tolist()
            for r, (rid, _), b, s in zip(records, pairs, best, scores, strict=True):
                value = {"id": rid, "label": LABELS[b], "score": s, "source_ts": r.timestamp}
                await producer.send(args.output, key=r.key, value=orjson.dumps(value))
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kind", choices=("naive", "batched"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", default=f"peer-{int(time.time())}")
    parser.add_argument("--model-dir", required=True, help="HF model folder (MiniLM)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
