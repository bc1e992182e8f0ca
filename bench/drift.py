"""What drift monitoring costs per message, against inference on the same batches.

``python -m bench.drift [--bundle DIR] [--data-dir ../shared/data]``: runs Financial
PhraseBank through the bench bundle in batches of 32, then feeds the same results to the
daemon's drift monitor (``streamer.driftwatch``, unknown-token sampling included) and prints
ns/message of each.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from bench.model import bench_bundle
from sentiwire.paths import default_data_dir
from streamer.config import DriftConfig
from streamer.drift import PROFILE_KEY
from streamer.driftwatch import DriftWatch
from streamer.metrics import Metrics
from streamer.model.bundle import load_bundle
from streamer.model.classifier import BatchResult, Classifier
from training.profile import build_profile

BATCH = 32


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--data-dir", type=Path, default=default_data_dir())
    ap.add_argument("--messages", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=20, help="passes of the drift monitor over the results")
    args = ap.parse_args(argv)
    with (args.data_dir / "financial-phrasebank" / "train.csv").open(encoding="utf-8") as fh:
        texts = [row["text"] for row in csv.DictReader(fh)][: args.messages]
    bundle = load_bundle(bench_bundle(args.data_dir, args.bundle))
    clf = Classifier(bundle)
    if PROFILE_KEY not in bundle.manifest:  # an older bundle: profile it here, in memory
        profile = build_profile(clf, texts[:500]).to_json()
        clf.bundle = dataclasses.replace(bundle, manifest={**bundle.manifest, PROFILE_KEY: profile})
    batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
    results: list[BatchResult] = []
    t0 = time.perf_counter()
    for batch in batches:
        results.append(clf.run_batch(batch))
    infer_ns = (time.perf_counter() - t0) * 1e9 / len(texts)
    watch = DriftWatch(DriftConfig(window_messages=1000, min_messages=100), Metrics(CollectorRegistry()))
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        for batch, result in zip(batches, results, strict=True):
            watch.observe(clf, batch, result)
    drift_ns = (time.perf_counter() - t0) * 1e9 / (len(texts) * args.repeats)
    print(f"bundle {bundle.name} {bundle.version}, {len(texts)} messages in batches of {BATCH}")
    print(f"inference (tokenize + run): {infer_ns:,.0f} ns/message")
    print(f"drift monitor:              {drift_ns:,.0f} ns/message ({drift_ns / infer_ns:.2%} of inference)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
