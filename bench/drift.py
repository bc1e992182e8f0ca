"""What drift monitoring and a shadow model cost, against inference on the same batches.

``python -m bench.drift [--bundle DIR] [--data-dir ../shared/data] [--shadow-fraction 0.1]``:
runs Financial PhraseBank through the bench bundle in batches of 32, feeds the same results to
the daemon's drift monitor (``streamer.driftwatch``, unknown-token sampling included) and
prints ns/message of each; then the live throughput (one inference worker, as a batch loop
would run it) without and with the daemon's ``Shadow`` (the same bundle) on that fraction.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client import CollectorRegistry

from bench.model import bench_bundle
from sentiwire.paths import default_data_dir
from streamer.config import DriftConfig, ModelConfig, ShadowConfig
from streamer.drift import PROFILE_KEY
from streamer.driftwatch import DriftWatch
from streamer.metrics import Metrics
from streamer.model.bundle import load_bundle
from streamer.model.classifier import BatchResult, Classifier
from streamer.shadow import Shadow
from training.profile import build_profile

BATCH = 32


async def live_throughput(
    clf: Classifier, batches: list[list[str]], shadow_fraction: float
) -> tuple[float, str]:
    """Messages/s of the live loop, with the shadow sampling ``shadow_fraction`` beside it."""
    shadow = None
    if shadow_fraction > 0:
        cfg = ModelConfig(
            path=clf.bundle.path,
            reload_interval_s=0,
            shadow=ShadowConfig(path=clf.bundle.path, sample_fraction=shadow_fraction),
        )
        shadow = Shadow(cfg, Metrics(CollectorRegistry()))
        await shadow.check_once()
    loop = asyncio.get_running_loop()
    live = ThreadPoolExecutor(max_workers=1)
    n = sum(len(b) for b in batches)
    t0 = time.perf_counter()
    for batch in batches:
        result = await loop.run_in_executor(live, clf.run_batch, batch)
        if shadow is not None:
            shadow.offer(clf, batch, result)
    rate = n / (time.perf_counter() - t0)
    live.shutdown()
    if shadow is None:
        return rate, ""
    reg = shadow.metrics.registry
    dropped = sum(
        s.value
        for m in reg.collect()
        if m.name == "sentiwire_shadow_dropped"
        for s in m.samples
        if s.name.endswith("_total")
    )
    await shadow.close()
    return rate, f"shadow agreement {shadow.agreement()}, samples dropped (behind) {dropped:.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--data-dir", type=Path, default=default_data_dir())
    ap.add_argument("--messages", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=20, help="passes of the drift monitor over the results")
    ap.add_argument("--shadow-fraction", type=float, default=0.1)
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
        for result in results:
            watch.observe(clf, result)
    drift_ns = (time.perf_counter() - t0) * 1e9 / (len(texts) * args.repeats)
    print(f"bundle {bundle.name} {bundle.version}, {len(texts)} messages in batches of {BATCH}")
    print(f"inference (tokenize + run): {infer_ns:,.0f} ns/message")
    print(f"drift monitor:              {drift_ns:,.0f} ns/message ({drift_ns / infer_ns:.2%} of inference)")
    plain, _ = asyncio.run(live_throughput(clf, batches, 0.0))
    shadowed, note = asyncio.run(live_throughput(clf, batches, args.shadow_fraction))
    print(f"live throughput:            {plain:,.1f} messages/s")
    print(
        f"with a shadow at {args.shadow_fraction:.0%}:      {shadowed:,.1f} messages/s "
        f"({shadowed / plain - 1:+.1%}); {note}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
