"""``make bench``: sentiwire against the hardware limit and against two hand-written peers.

One run, same real texts (../shared/data), same MiniLM bundle, one real Kafka 4.x broker:

1. ONNX Runtime alone on pre-tokenized batches (batch-size sweep, fp32 + int8, per text kind,
   padding waste of the mixed stream before/after length bucketing)   -> bench/ort_limit.py
   and every runtime x precision the machine runs (ONNX Runtime, OpenVINO when installed; the
   agreement of each with fp32)                                         -> bench/runtimes.py
   The hardware limit is the fastest of all of them.
2. the naive peer: transformers ``pipeline`` once per message          -> bench/peers.py naive
3. the competent peer: batched PyTorch consumer                        -> bench/peers.py batched
4. sentiwire end to end (``sentiwire serve``), fp32 and int8, on the runtime ``model.runtime``
   picks (``--runtime``, default ``auto``)

Each consumer runs as its own process. Throughput: drain a pre-filled backlog, rate between
the label timestamps (first 5% dropped as warm-up). Latency: replay at ``--latency-frac`` of
that rate; latency = label record timestamp - input record timestamp. CPU (cores busy) and
RSS are sampled from /proc; peak RSS is VmHWM. Then a soak of sentiwire int8 at full rate.

    python -m bench.run                 # default run (short soak)
    python -m bench.run --soak-s 600    # with the 10-minute soak
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.measure import Bench, log
from bench.model import bench_bundle
from bench.report import summarize, write
from bench.systems import PY, System, peer_system, sentiwire_system
from bench.texts import short_items
from sentiwire.devbroker import start_broker
from sentiwire.paths import REPO_ROOT, default_data_dir
from sentiwire.replay import Item, load_items
from streamer.enums import Device, Precision, Runtime, Variant
from streamer.model.bundle import load_bundle
from streamer.model.errors import InferenceError
from streamer.model.loading import usable_cpus
from streamer.model.selection import choose, probe


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def machine() -> dict[str, Any]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in ln
        ),
        platform.processor(),
    )
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version()}


def run_ort(bundle: Path, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Stage 1 in its own process, so its RSS is ONNX Runtime's alone."""
    log("ONNX Runtime limit (own process)")
    cmd = [PY, "-m", "bench.ort_limit", "--bundle", str(bundle), "--data-dir", str(data_dir)]
    cmd += ["--min-seconds", str(args.ort_seconds), "--batch-sizes", args.batch_sizes]
    cmd += ["--workers", str(args.workers)]
    if args.allow_spinning:
        cmd.append("--allow-spinning")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True, cwd=REPO_ROOT)
    out: dict[str, Any] = orjson.loads(proc.stdout)
    return out


def run_runtimes(bundle: Path, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every runtime x precision on the same texts, in its own process (bench/runtimes.py)."""
    log("runtimes x precisions (own process)")
    cpus = usable_cpus()
    layouts = sorted({f"1x{cpus}", f"{args.workers}x{max(1, cpus // args.workers)}"})
    sizes = ",".join(x for x in args.batch_sizes.split(",") if int(x) > 1)  # batch 1 never wins
    cmd = [PY, "-m", "bench.runtimes", "--bundle", str(bundle), "--data-dir", str(data_dir), "--json"]
    cmd += ["--min-seconds", str(args.ort_seconds), "--batch-sizes", sizes, "--layouts", ",".join(layouts)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True, cwd=REPO_ROOT)
    out: dict[str, Any] = orjson.loads(proc.stdout)
    return out


def served(runtime: str) -> dict[str, dict[str, str]]:
    """What ``sentiwire serve`` runs per variant here with ``model.runtime: runtime``: the daemon's rule."""
    hw = probe()
    out: dict[str, dict[str, str]] = {}
    for variant in Variant:
        try:
            c = choose(Runtime(runtime), Device.CPU, Precision(str(variant)), hw)
        except InferenceError as exc:
            out[str(variant)] = {"error": str(exc)}
            continue
        out[str(variant)] = {"runtime": str(c.runtime), "precision": str(c.precision), "reason": c.reason}
    return out


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Everything before the broker: machine, bundle, the raw runtime limits."""
    data_dir = args.data_dir.resolve()
    res: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "uptime_before": uptime(),
        "machine": machine(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "systems": [],
        "gpu": "not measured: no GPU is lent to this task",
    }
    bundle = bench_bundle(data_dir, args.bundle)
    res["bundle"] = str(bundle)
    from streamer.model.bundle import load_bundle

    res["max_length"] = load_bundle(bundle).max_length
    log(f"bundle {bundle} (max_length {res['max_length']}); load: {res['uptime_before']}")
    res["served"] = served(args.runtime)
    if "ort" in args.stages.split(","):
        res["ort"] = run_ort(bundle, data_dir, args)
    if "runtimes" in args.stages.split(","):
        res["runtimes"] = run_runtimes(bundle, data_dir, args)
    return res


async def amain(args: argparse.Namespace, res: dict[str, Any]) -> dict[str, Any]:
    from training.base_models import minilm_dir

    data_dir = args.data_dir.resolve()
    stages = set(args.stages.split(","))
    bundle = Path(res["bundle"])
    max_length = int(res["max_length"])
    short = short_items(data_dir)
    workdir = args.out_dir / f"run-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    workdir.mkdir(parents=True, exist_ok=True)
    broker = start_broker(workdir=workdir / "kafka")
    log(f"Kafka {broker.version} at {broker.bootstrap} (started in {broker.started_in_s:.1f} s)")
    bench = Bench(broker, workdir, args.latency_s, args.latency_frac)
    # The daemon refuses an int8 graph that failed its export gate: its stages run what it serves.
    refusal = load_bundle(bundle, verify=False).int8_refusal()
    served = Variant.FP32 if refusal else Variant.INT8
    if refusal:
        res["int8_refused"] = refusal
        log(f"sentiwire int8 not run (the ORT limit still times it): {refusal}")
    try:
        plan: list[tuple[System, Sequence[Item], int]] = []
        if "naive" in stages:
            plan.append(
                (peer_system("naive", minilm_dir(), max_length, args.batch_size), short, args.n_naive)
            )
        if "batched" in stages:
            plan.append(
                (peer_system("batched", minilm_dir(), max_length, args.batch_size), short, args.n_batched)
            )
        for variant in Variant:
            if variant == Variant.INT8 and refusal:
                continue
            if f"sentiwire-{variant}" in stages or "sentiwire" in stages:
                system = sentiwire_system(
                    bundle,
                    variant,
                    args.batch_size,
                    args.max_wait_ms,
                    allow_spinning=args.allow_spinning,
                    workers=args.workers,
                    runtime=args.runtime,
                )
                plan.append((system, short, args.n_sentiwire))
        if "mixed" in stages:
            mixed = load_items(data_dir, "mixed")
            for bucket in (False, True):
                tag = " mixed texts, " + ("bucketed" if bucket else "no bucketing")
                suffix = "-mixed-bucketed" if bucket else "-mixed-unbucketed"
                system = sentiwire_system(
                    bundle,
                    served,
                    args.batch_size,
                    args.max_wait_ms,
                    bucket=bucket,
                    allow_spinning=args.allow_spinning,
                    workers=args.workers,
                    tag=tag,
                    key_suffix=suffix,
                    runtime=args.runtime,
                )
                plan.append((system, mixed, args.n_mixed))
        for system, items, n in plan:
            try:
                res["systems"].append(await bench.measure(system, items, n))
            except Exception as exc:
                log(f"FAILED {system.label}: {exc}")
                res["systems"].append({"system": system.label, "variant": system.variant, "error": str(exc)})
        if args.soak_s > 0 and "soak" in stages:
            measured = next(
                (r for r in res["systems"] if r.get("key") == f"sentiwire-{served}" and "msgs_per_s" in r),
                None,
            )
            rate = args.soak_rate or (measured["msgs_per_s"] if measured else 300.0)
            system = sentiwire_system(
                bundle,
                served,
                args.batch_size,
                args.max_wait_ms,
                allow_spinning=args.allow_spinning,
                workers=args.workers,
                runtime=args.runtime,
            )
            try:
                res["soak"] = await bench.soak(system, short, args.soak_s, rate)
            except Exception as exc:
                log(f"FAILED soak: {exc}")
                res["soak_error"] = str(exc)
    finally:
        broker.stop()
    res["uptime_after"] = uptime()
    summarize(res, args)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
    )
    p.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="default: models/sentiwire-minilm, else MiniLM + random heads",
    )
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    p.add_argument(
        "--stages",
        default="ort,runtimes,naive,batched,sentiwire,mixed,soak",
        help="comma list of ort,runtimes,naive,batched,sentiwire (or sentiwire-fp32 / sentiwire-int8),mixed,soak",
    )
    p.add_argument(
        "--runtime",
        choices=[str(r) for r in Runtime],
        default="auto",
        help="the daemon's model.runtime (auto: what serve picks on this machine)",
    )
    p.add_argument("--batch-sizes", default="1,8,16,32,64", help="ONNX Runtime sweep")
    p.add_argument("--ort-seconds", type=float, default=3.0, help="minimum seconds per ORT measurement")
    p.add_argument("--batch-size", type=int, default=32, help="sentiwire max_batch_size and the peer's batch")
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=2, help="sentiwire model.workers (concurrent batches)")
    p.add_argument(
        "--allow-spinning",
        action="store_true",
        help="ONNX Runtime threads busy-wait, in the limit stage and the daemon (daemon default: off)",
    )
    p.add_argument("--n-naive", type=int, default=400, help="backlog for the naive peer")
    p.add_argument("--n-batched", type=int, default=2000)
    p.add_argument("--n-sentiwire", type=int, default=5000)
    p.add_argument("--n-mixed", type=int, default=800, help="backlog for the mixed-length runs")
    p.add_argument("--latency-s", type=float, default=20.0, help="seconds of steady-rate traffic for latency")
    p.add_argument("--latency-frac", type=float, default=0.5, help="latency at this share of the max rate")
    p.add_argument(
        "--soak-s", type=float, default=60.0, help="soak length at full rate (600 = the 10-minute soak)"
    )
    p.add_argument(
        "--soak-rate",
        type=float,
        default=None,
        help="msg/s used to size the soak backlog (default: the sentiwire int8 rate measured in this run)",
    )
    args = p.parse_args()
    res = asyncio.run(amain(args, prepare(args)))
    out_json, md = write(res, args.out_dir)
    print(md)
    print(f"\nJSON: {out_json}")


if __name__ == "__main__":
    main()
