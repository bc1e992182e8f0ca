"""ONNX Runtime's limit: ONNX Runtime alone on pre-tokenized batches (own process, clean RSS).

The other runtimes (OpenVINO f32/bf16/int8) are measured on the same texts by bench/runtimes.py;
the hardware limit is the best of both.

Uses sentiwire's own inference path (``streamer.inference.Classifier``) so the session
options are exactly what the daemon runs; tokenization happens before the clock starts.
Each batch size is timed in arrival order (padded to their longest text) and split by length
the way the daemon splits them (``plan_buckets``), each with one worker over all CPUs and
with the daemon's ``--workers`` threads of one ONNX Runtime session each. The limit is the
best of all of these, so the daemon cannot beat it by bucketing or by running batches at once.
Prints one JSON object on stdout.

    python -m bench.ort_limit --bundle DIR --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.texts import load_texts
from streamer.enums import Runtime, Variant
from streamer.model.buckets import padding_waste, plan_buckets, take_rows
from streamer.model.bundle import load_bundle
from streamer.model.classifier import Classifier
from streamer.model.loading import usable_cpus
from streamer.model.tokenizer import Encoded


def time_batches(
    clf: Classifier, batches: Sequence[Encoded], min_seconds: float, workers: int = 1
) -> dict[str, float]:
    """Run the batches round-robin from ``workers`` threads for at least ``min_seconds``.

    ``ms_per_batch`` is one call's latency (what a message waits for its batch), not
    wall time divided by calls.
    """
    for enc in batches[:2]:
        clf.infer(enc)  # warm-up: first runs allocate
    rows = [0] * workers
    calls = [0] * workers
    busy = [0.0] * workers
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    stop_at = t0 + min_seconds

    def work(k: int) -> None:
        i = k
        while True:
            enc = batches[i % len(batches)]
            c0 = time.perf_counter()
            clf.infer(enc)
            busy[k] += time.perf_counter() - c0
            rows[k] += len(enc)
            calls[k] += 1
            i += workers
            if i >= len(batches) and time.perf_counter() >= stop_at:
                return

    threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    return {
        "msgs_per_s": sum(rows) / elapsed,
        "ms_per_batch": 1000 * sum(busy) / sum(calls),
        "cpu_cores": cpu / elapsed,
        "rows": sum(rows),
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


def pick_limit(sweeps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The fastest run of every sweep (mode -> batch size -> run), with its batch size and mode."""
    runs = [(mode, int(bs), r) for mode, sweep in sweeps.items() for bs, r in sweep.items()]
    mode, bs, run = max(runs, key=lambda x: x[2]["msgs_per_s"])
    return {**run, "batch_size": bs, "mode": mode}


def mode_name(workers: int, threads: int, bucketed: bool) -> str:
    return (
        f"{workers} worker{'s' if workers > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}, "
        + ("length-bucketed" if bucketed else "arrival order")
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--variants", default="fp32,int8")
    p.add_argument("--batch-sizes", default="1,8,16,32,64")
    p.add_argument("--n-texts", type=int, default=512, help="short texts per measurement")
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--mixed-batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="the daemon's model.workers (also timed: 1 worker)")
    p.add_argument(
        "--allow-spinning", action="store_true", help="ORT threads busy-wait (daemon default: off)"
    )
    args = p.parse_args()

    bundle = load_bundle(args.bundle)
    texts = load_texts(args.data_dir)
    short = texts["short"][: args.n_texts]
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    out: dict[str, Any] = {"bundle": str(args.bundle), "max_length": bundle.max_length, "variants": {}}
    cpus = usable_cpus()
    configs = sorted({(1, cpus), (args.workers, max(1, cpus // args.workers))})
    for variant in (Variant(v) for v in args.variants.split(",")):
        clfs = {
            w: Classifier(
                bundle,
                variant=variant,
                runtime=Runtime.ONNXRUNTIME,
                intra_op_threads=t,
                allow_spinning=args.allow_spinning,
                failed_int8_ok=True,  # speed is measured either way; bundle.json says if it may serve
            )
            for w, t in configs
        }
        sweeps: dict[str, dict[str, Any]] = {}
        for bs in sizes:
            plain, split = bucketed(clfs[1], short, bs)
            for w, t in configs:
                for was_bucketed, batches in ((False, plain), (True, split)):
                    run = time_batches(clfs[w], batches, args.min_seconds, workers=w)
                    run["padding_waste"] = waste(batches)
                    sweeps.setdefault(mode_name(w, t, was_bucketed), {})[str(bs)] = run
                    print(
                        f"ort {variant} bs={bs} {mode_name(w, t, was_bucketed)}: {run['msgs_per_s']:.0f} msg/s",
                        file=sys.stderr,
                        flush=True,
                    )
        limit = pick_limit(sweeps)
        daemon_mode = mode_name(args.workers, max(1, cpus // args.workers), False)
        kinds: dict[str, Any] = {}
        bs = limit["batch_size"]
        clf = clfs[1]
        for kind in ("phrasebank", "tweets", "bbc"):
            sample = texts[kind][: max(bs * 4, 128 if kind != "bbc" else 64)]
            batches = [clf.encode(sample[i : i + bs]) for i in range(0, len(sample), bs)]
            kinds[kind] = time_batches(clf, batches, args.min_seconds)
        plain, split = bucketed(clf, texts["mixed"][: args.mixed_batch * 8], args.mixed_batch)
        kinds["mixed_unbucketed"] = time_batches(clf, plain, args.min_seconds)
        kinds["mixed_bucketed"] = time_batches(clf, split, args.min_seconds)
        kinds["mixed_unbucketed"]["padding_waste"] = waste(plain)
        kinds["mixed_bucketed"]["padding_waste"] = waste(split)
        out["variants"][str(variant)] = {  # orjson takes only plain str keys
            "sweeps": sweeps,
            "daemon_mode": daemon_mode,
            "limit": limit,
            "kinds": kinds,
        }
    # Padding waste over a larger sample of the mixed stream (arrival order, batch 32).
    tok_clf = Classifier(
        bundle, variant=Variant.INT8, allow_spinning=args.allow_spinning, failed_int8_ok=True
    )
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
