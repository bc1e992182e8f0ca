"""Raw runtime throughput per runtime x precision x threading layout x batch size, same texts.

ONNX Runtime fp32/int8 and OpenVINO f32/bf16/int8 over the bundle's graphs, each through
sentiwire's own Classifier (so the session options are the daemon's), batches cut the way the
daemon cuts them (length buckets, ``plan_buckets``) and tokenized before the clock starts.
Layouts are ``WxT``: W batches at once (worker threads; OpenVINO streams) of T threads each.
Every row says how often its labels agree with ONNX Runtime fp32 per head (the load gate's
measure) and its messages per CPU-second. OpenVINO also runs once with the sequence axis padded
to fixed lengths (``steps``: 16/32/64/..., a handful of shapes instead of one per batch) to show
what shape changes cost. Prints a markdown
table on stdout (``--json`` for the raw numbers).

    python -m bench.runtimes --bundle models/current --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

import orjson

from bench.ort_limit import bucketed, time_batches, waste
from bench.report import runtimes_table
from bench.texts import load_texts
from streamer.model.bundle import load_bundle
from streamer.model.classifier import Classifier
from streamer.model.errors import InferenceError
from streamer.model.gate import agreement, labels
from streamer.model.openvino_runtime import LENGTH_STEPS, OpenVinoRuntime
from streamer.model.selection import probe

CONFIGS = "onnxruntime:fp32,onnxruntime:int8,openvino:fp32,openvino:bf16,openvino:int8,openvino:fp32:steps"


def build(bundle: Any, config: str, workers: int, threads: int) -> Classifier:
    """A classifier for ``runtime:precision[:steps]``, the gate off (the bench reports agreement)."""
    runtime, precision, *flags = config.split(":")
    clf = Classifier(
        bundle,
        runtime=runtime,
        precision=precision,
        workers=workers,
        intra_op_threads=threads,
        gate=False,
        failed_int8_ok=True,  # speed and agreement are measured either way
    )
    if "steps" in flags:
        clf.runtime = OpenVinoRuntime(
            bundle,
            bundle.onnx_path(clf.variant),
            precision=clf.precision,
            streams=workers,
            threads=workers * threads,
            length_steps=LENGTH_STEPS,
        )
    return clf


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--configs", default=CONFIGS, help="runtime:precision[:steps], comma-separated")
    p.add_argument("--layouts", default="1x2,2x1", help="WxT: W concurrent batches of T threads")
    p.add_argument("--batch-sizes", default="8,32,64")
    p.add_argument("--n-texts", type=int, default=512, help="short texts per measurement")
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--json", action="store_true", help="raw numbers as JSON instead of the table")
    args = p.parse_args()

    bundle = load_bundle(args.bundle)
    heads = [h.name for h in bundle.heads]
    texts = load_texts(args.data_dir)["short"][: args.n_texts]
    configs = [c for c in args.configs.split(",") if c]
    if importlib.util.find_spec("openvino") is None:
        print("openvino not installed: OpenVINO rows skipped", file=sys.stderr)
        configs = [c for c in configs if not c.startswith("openvino")]
    layouts = [tuple(int(x) for x in lay.split("x")) for lay in args.layouts.split(",")]
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    reference = build(bundle, "onnxruntime:fp32", 1, 1)
    ref_labels = labels(reference.runtime.run, reference.encode, texts)
    rows: list[dict[str, Any]] = []
    refused: dict[str, str] = {}
    for config in configs:
        agree: dict[str, float] | None = None
        for workers, threads in layouts:
            try:
                clf = build(bundle, config, workers, threads)
            except InferenceError as exc:  # e.g. bf16 on a CPU that would only emulate it
                refused[config] = str(exc)
                print(f"{config}: refused: {exc}", file=sys.stderr)
                break
            if agree is None:
                agree = agreement(ref_labels, labels(clf.runtime.run, clf.encode, texts), heads)
            for bs in sizes:
                _, split = bucketed(clf, texts, bs)
                run = time_batches(clf, split, args.min_seconds, workers=workers)
                runtime, precision, *flags = config.split(":")
                row = {
                    "runtime": runtime + (" (length steps)" if flags else ""),
                    "precision": precision,
                    "layout": f"{workers}x{threads}",
                    "batch_size": bs,
                    **run,
                    "msgs_per_cpu_s": run["msgs_per_s"] / max(run["cpu_cores"], 1e-9),
                    "padding_waste": waste(split),
                    "agreement": agree,
                }
                rows.append(row)
                print(
                    f"{config} {workers}x{threads} bs={bs}: {run['msgs_per_s']:.0f} msg/s",
                    file=sys.stderr,
                    flush=True,
                )
    hw = probe()
    if args.json:
        info = {
            "cpu": hw.cpu_vendor,
            "native_bf16": hw.native_bf16,
            "texts": len(texts),
            "rows": rows,
            "refused": refused,
        }
        sys.stdout.write(orjson.dumps(info).decode() + "\n")
        return
    best = max(rows, key=lambda r: r["msgs_per_s"])
    print(runtimes_table(rows, heads))
    print(
        f"\n{len(texts)} short texts, bundle {bundle.name} {bundle.version}; CPU {hw.cpu_vendor} "
        f"native bf16: {hw.native_bf16}. Best: {best['runtime']} {best['precision']} {best['layout']} "
        f"batch {best['batch_size']}: {best['msgs_per_s']:.0f} msg/s"
    )
    for config, why in refused.items():
        print(f"\n{config}: not run: {why}")


if __name__ == "__main__":
    main()
