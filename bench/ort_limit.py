"""The hardware limit: ONNX Runtime alone on pre-tokenized batches (own process, clean RSS).

Uses sentiwire's own inference path (``streamer.inference.Classifier``) so the session
options are exactly what the daemon runs; tokenization happens before the clock starts.
Each batch size is timed twice: batches in arrival order (padded to their longest text) and
the same batches split by length the way the daemon splits them (``plan_buckets``). The
limit is the best of all of these, so the daemon cannot beat it by bucketing.
Prints one JSON object on stdout.

    python -m bench.ort_limit --bundle DIR --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.texts import load_texts
from streamer.batching import padding_waste, plan_buckets, take_rows
from streamer.bundle import load_bundle
from streamer.inference import Classifier, Encoded


def time_batches(clf: Classifier, batches: Sequence[Encoded], min_seconds: float) -> dict[str, float]:
    """Run the batches round-robin for at least ``min_seconds`` (and at least once each)."""
    for enc in batches[:2]:
        clf.infer(enc)  # warm-up: first runs allocate
    rows = 0
    calls = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    while True:
        for enc in batches:
            clf.infer(enc)
            rows += len(enc)
            calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            break
    cpu = time.process_time() - cpu0
    return {
        "msgs_per_s": rows / elapsed,
        "ms_per_batch": 1000 * elapsed / calls,
        "cpu_cores": cpu / elapsed,
        "rows": rows,
        "seconds": elapsed,
    }


def bucketed(clf: Classifier, texts: Sequence[str], batch_size: int) -> tuple[list[Encoded], list[Encoded]]:
    """Arrival-order batches padded to their longest row, and the same batches split by length."""
    plain: list[Encoded] = []
    split: list[Encoded] = []
    for i in range(0, len(texts), batch_size):
        enc = clf.encode(texts[i : i + batch_size])
        plain.append(enc)
        split.extend(take_rows(enc, rows) for rows in plan_buckets(enc.lengths.tolist()))
    return plain, split


def waste(batches: Sequence[Encoded]) -> float:
    real = sum(int(b.lengths.sum()) for b in batches)
    fed = sum(int(b.input_ids.size) for b in batches)
    return 1.0 - real / fed if fed else 0.0


def pick_limit(sweep: dict[str, Any], sweep_bucketed: dict[str, Any]) -> dict[str, Any]:
    """The fastest run of either sweep, with its batch size and whether it was bucketed."""
    runs = [(int(bs), False, r) for bs, r in sweep.items()]
    runs += [(int(bs), True, r) for bs, r in sweep_bucketed.items()]
    bs, was_bucketed, run = max(runs, key=lambda x: x[2]["msgs_per_s"])
    return {**run, "batch_size": bs, "bucketed": was_bucketed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--variants", default="fp32,int8")
    p.add_argument("--batch-sizes", default="1,8,16,32,64")
    p.add_argument("--n-texts", type=int, default=512, help="short texts per measurement")
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--mixed-batch", type=int, default=32)
    p.add_argument(
        "--allow-spinning", action="store_true", help="ORT threads busy-wait (daemon default: off)"
    )
    args = p.parse_args()

    bundle = load_bundle(args.bundle)
    texts = load_texts(args.data_dir)
    short = texts["short"][: args.n_texts]
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    out: dict[str, Any] = {"bundle": str(args.bundle), "max_length": bundle.max_length, "variants": {}}
    for variant in args.variants.split(","):
        clf = Classifier(bundle, variant=variant, allow_spinning=args.allow_spinning)
        sweep: dict[str, Any] = {}
        sweep_bucketed: dict[str, Any] = {}
        for bs in sizes:
            plain, split = bucketed(clf, short, bs)
            sweep[str(bs)] = time_batches(clf, plain, args.min_seconds)
            sweep_bucketed[str(bs)] = time_batches(clf, split, args.min_seconds)
            sweep[str(bs)]["padding_waste"] = waste(plain)
            sweep_bucketed[str(bs)]["padding_waste"] = waste(split)
            print(
                f"ort {variant} bs={bs}: {sweep[str(bs)]['msgs_per_s']:.0f} msg/s in arrival order, "
                f"{sweep_bucketed[str(bs)]['msgs_per_s']:.0f} bucketed",
                file=sys.stderr,
                flush=True,
            )
        limit = pick_limit(sweep, sweep_bucketed)
        kinds: dict[str, Any] = {}
        bs = limit["batch_size"]
        for kind in ("phrasebank", "tweets", "bbc"):
            sample = texts[kind][: max(bs * 4, 128 if kind != "bbc" else 64)]
            batches = [clf.encode(sample[i : i + bs]) for i in range(0, len(sample), bs)]
            kinds[kind] = time_batches(clf, batches, args.min_seconds)
        plain, split = bucketed(clf, texts["mixed"][: args.mixed_batch * 8], args.mixed_batch)
        kinds["mixed_unbucketed"] = time_batches(clf, plain, args.min_seconds)
        kinds["mixed_bucketed"] = time_batches(clf, split, args.min_seconds)
        kinds["mixed_unbucketed"]["padding_waste"] = waste(plain)
        kinds["mixed_bucketed"]["padding_waste"] = waste(split)
        out["variants"][variant] = {
            "sweep": sweep,
            "sweep_bucketed": sweep_bucketed,
            "best_batch_size": bs,
            "limit": limit,
            "kinds": kinds,
        }
    # Padding waste over a larger sample of the mixed stream (arrival order, batch 32).
    tok_clf = Classifier(bundle, variant="int8", allow_spinning=args.allow_spinning)
    mixed = texts["mixed"][:2048]
    lengths = [
        tok_clf.encode(mixed[i : i + args.mixed_batch]).lengths.tolist()
        for i in range(0, len(mixed), args.mixed_batch)
    ]
    before = [padding_waste(ls) for ls in lengths]
    after = [padding_waste(ls, plan_buckets(ls)) for ls in lengths]
    out["padding_waste_mixed"] = {
        "batches": len(lengths),
        "batch_size": args.mixed_batch,
        "before": float(np.mean(before)),
        "after": float(np.mean(after)),
    }
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sys.stdout.write(orjson.dumps(out).decode() + "\n")


if __name__ == "__main__":
    main()
