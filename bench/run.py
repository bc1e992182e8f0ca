"""``make bench``: sentiwire against the hardware limit and against two hand-written peers.

One run, same real texts (../shared/data), same MiniLM bundle, one real Kafka 4.x broker:

1. ONNX Runtime alone on pre-tokenized batches (batch-size sweep, fp32 + int8, per text kind,
   padding waste of the mixed stream before/after length bucketing)   -> bench/ort_limit.py
2. the naive peer: transformers ``pipeline`` once per message          -> bench/peers.py naive
3. the competent peer: batched PyTorch consumer                        -> bench/peers.py batched
4. sentiwire end to end (``sentiwire serve``), fp32 and int8

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
import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench.model import bench_bundle
from bench.procstats import Sampler, percentiles, vm_hwm_mb
from bench.texts import short_items
from sentiwire.devbroker import REPO_ROOT, BrokerHandle, create_topics, start_broker
from sentiwire.replay import Item, Stream, load_items, replay

PY = sys.executable


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


# --------------------------------------------------------------------------- label collection
@dataclass
class Collector:
    """Reads the output topic from the beginning; keeps (label ts, input ts) per record."""

    bootstrap: str
    topic: str
    in_ts: Callable[[dict[str, Any]], int | None]
    labels: list[tuple[int, int | None]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            for recs in batch.values():
                for r in recs:
                    self.labels.append((r.timestamp, self.in_ts(orjson.loads(r.value))))

    async def wait_for(self, n: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.labels) < n:
            if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
                return False
            await asyncio.sleep(0.2)
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


def sentiwire_in_ts(value: dict[str, Any]) -> int | None:
    src = value.get("source")
    return int(src["timestamp"]) if isinstance(src, dict) and src.get("timestamp") is not None else None


def peer_in_ts(value: dict[str, Any]) -> int | None:
    ts = value.get("source_ts")
    return int(ts) if ts is not None else None


# --------------------------------------------------------------------------- systems under test
@dataclass
class System:
    key: str
    label: str
    variant: str | None
    argv: Callable[[str, str, str, str, Path], list[str]]  # bootstrap, in, out, group, workdir
    in_ts: Callable[[dict[str, Any]], int | None]
    startup_timeout_s: float = 180.0


def peer_system(kind: str, model_dir: Path, max_length: int, batch_size: int) -> System:
    def argv(bootstrap: str, src: str, dst: str, group: str, _wd: Path) -> list[str]:
        return [
            PY,
            "-m",
            "bench.peers",
            kind,
            "--bootstrap",
            bootstrap,
            "--input",
            src,
            "--output",
            dst,
            "--group",
            group,
            "--model-dir",
            str(model_dir),
            "--max-length",
            str(max_length),
            "--batch-size",
            str(batch_size),
        ]

    label = (
        "naive peer (pipeline per message)"
        if kind == "naive"
        else f"batched PyTorch peer (batch {batch_size})"
    )
    return System(kind, label, "fp32", argv, peer_in_ts)


def sentiwire_system(
    bundle: Path,
    variant: str,
    batch_size: int,
    max_wait_ms: float,
    *,
    bucket: bool = True,
    allow_spinning: bool = False,
    workers: int = 2,
    tag: str = "",
    key_suffix: str = "",
) -> System:
    def argv(bootstrap: str, src: str, dst: str, group: str, wd: Path) -> list[str]:
        config = {
            "kafka": {"bootstrap_servers": bootstrap},
            "input": {"topics": [src], "group_id": group, "auto_offset_reset": "earliest"},
            "output": {"labels_topic": dst, "dead_letter_topic": f"{dst}.dlq"},
            "model": {
                "path": str(bundle),
                "variant": variant,
                "reload_interval_s": 0,
                "allow_spinning": allow_spinning,
                "workers": workers,
            },
            "batching": {
                "max_batch_size": batch_size,
                "max_wait_ms": max_wait_ms,
                "bucket_by_length": bucket,
            },
            "http": {"host": "127.0.0.1", "port": 0},
            "logging": {"level": "WARNING", "format": "json"},
        }
        path = wd / f"sentiwire-{group}.yaml"
        path.write_text(yaml.safe_dump(config))
        return [PY, "-m", "sentiwire", "serve", "--config", str(path)]

    name = f"sentiwire {variant}{tag}"
    return System(f"sentiwire-{variant}{key_suffix}", name, variant, argv, sentiwire_in_ts)


# --------------------------------------------------------------------------- one measurement
@dataclass
class Bench:
    broker: BrokerHandle
    workdir: Path
    latency_s: float
    latency_frac: float

    async def topics(self, prefix: str) -> tuple[str, str]:
        tag = uuid.uuid4().hex[:8]
        src, dst = f"bench-{prefix}-in-{tag}", f"bench-{prefix}-out-{tag}"
        await create_topics(self.broker.bootstrap, {src: 3, dst: 3, f"{dst}.dlq": 1})
        return src, dst

    async def fill(self, topic: str, items: Sequence[Item], n: int, rate: float = 0.0) -> float:
        stats = await replay(
            bootstrap=self.broker.bootstrap, topic=topic, stream=Stream(items), rate=rate, limit=n, quiet=True
        )
        return stats.rate

    def spawn(self, system: System, src: str, dst: str, group: str) -> subprocess.Popen[bytes]:
        out = open(self.workdir / f"{system.key}-{group}.log", "wb")  # noqa: SIM115 - child owns it
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        proc = subprocess.Popen(
            system.argv(self.broker.bootstrap, src, dst, group, self.workdir),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
        )
        out.close()
        return proc

    @staticmethod
    def terminate(proc: subprocess.Popen[bytes]) -> int | None:
        """SIGTERM; the exit code is recorded (a daemon that ignores it is killed after 30 s)."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    async def measure(self, system: System, items: Sequence[Item], n: int) -> dict[str, Any]:
        """Throughput on a backlog of ``n``, then latency at ``latency_frac`` of that rate."""
        src, dst = await self.topics(system.key)
        group = f"g-{uuid.uuid4().hex[:8]}"
        await self.fill(src, items, n)
        collector = Collector(self.broker.bootstrap, dst, system.in_ts)
        await collector.start()
        proc = self.spawn(system, src, dst, group)
        sampler = Sampler(proc.pid).start()
        broker_sampler = Sampler(self.broker.pid).start()
        result: dict[str, Any] = {
            "system": system.label,
            "key": system.key,
            "variant": system.variant,
            "n": n,
        }
        try:
            log(f"{system.label}: draining a backlog of {n}")
            ok = await collector.wait_for(n, system.startup_timeout_s + n / 5.0, proc)
            if not ok:
                raise RuntimeError(
                    f"{system.label}: got {len(collector.labels)}/{n} labels (exit code {proc.poll()}); "
                    f"see {self.workdir}"
                )
            stamps = sorted(ts for ts, _ in collector.labels[:n])
            i0 = n // 20
            t0, t1 = stamps[i0] / 1000, stamps[-1] / 1000
            rate = (n - 1 - i0) / (t1 - t0) if t1 > t0 else float("nan")
            result.update(
                msgs_per_s=rate,
                drain_seconds=t1 - t0,
                cpu_cores=sampler.cores(t0, t1),
                broker_cpu_cores=broker_sampler.cores(t0, t1),
                rss_mb_drain=max(sampler.rss_between(t0, t1), default=None),
            )
            log(f"{system.label}: {rate:.0f} msg/s, {result['cpu_cores']:.2f} cores")

            lat_rate = max(1.0, self.latency_frac * rate)
            n_lat = max(20, int(lat_rate * self.latency_s))
            start_ms = int(time.time() * 1000)
            log(f"{system.label}: latency at {lat_rate:.0f} msg/s for {n_lat} messages")
            sent_rate = await self.fill(src, items, n_lat, rate=lat_rate)
            await collector.wait_for(n + n_lat, 120, proc)
            lat = [ts - its for ts, its in collector.labels[n:] if its is not None and its >= start_ms]
            result["latency"] = {"rate": lat_rate, "sent_rate": sent_rate, "n": len(lat), **percentiles(lat)}
            result["peak_rss_mb"] = vm_hwm_mb(proc.pid)
            p99 = result["latency"]["p99_ms"]
            log(f"{system.label}: p50 {result['latency']['p50_ms']:.0f} ms, p99 {p99:.0f} ms")
        finally:
            sampler.stop()
            broker_sampler.stop()
            await collector.stop()
            result["exit_code"] = self.terminate(proc)
        return result

    async def soak(
        self, system: System, items: Sequence[Item], seconds: float, rate: float
    ) -> dict[str, Any]:
        """Full rate for about ``seconds``: a backlog of seconds x rate, RSS over time, lag at the end."""
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        n = max(1000, int(seconds * rate))
        src, dst = await self.topics("soak")
        group = f"soak-{uuid.uuid4().hex[:8]}"
        log(f"soak: filling {n} messages")
        await self.fill(src, items, n)
        collector = Collector(self.broker.bootstrap, dst, system.in_ts)
        await collector.start()
        proc = self.spawn(system, src, dst, group)
        sampler = Sampler(proc.pid, interval_s=1.0).start()
        try:
            ok = await collector.wait_for(n, system.startup_timeout_s + seconds * 3, proc)
            if not ok:
                raise RuntimeError(f"soak: got {len(collector.labels)}/{n} labels (exit code {proc.poll()})")
            stamps = sorted(ts for ts, _ in collector.labels)
            t0, t1 = stamps[0] / 1000, stamps[-1] / 1000
            await asyncio.sleep(3.0)  # one commit interval and then some
            admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.bootstrap)
            await admin.start()
            try:
                committed = await admin.list_consumer_group_offsets(group)
            finally:
                await admin.close()
            probe = AIOKafkaConsumer(bootstrap_servers=self.broker.bootstrap)
            await probe.start()
            try:
                tps = [TopicPartition(src, p) for p in range(3)]
                ends = await probe.end_offsets(tps)
            finally:
                await probe.stop()
            lag = sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)
            run = t1 - t0
            rss = [(s.t, s.rss_mb) for s in sampler.samples if t0 <= s.t <= t1]
            early = [r for t, r in rss if t0 + 0.1 * run <= t <= t0 + 0.2 * run] or [rss[0][1]]
            late = [r for t, r in rss if t >= t0 + 0.9 * run] or [rss[-1][1]]
            rss_start, rss_end = sorted(early)[len(early) // 2], sorted(late)[len(late) // 2]
            half = [r for t, r in rss if t0 + 0.45 * run <= t <= t0 + 0.55 * run] or [rss_start]
            rss_half = sorted(half)[len(half) // 2]
            return {
                "system": system.label,
                "n": n,
                "seconds": run,
                "msgs_per_s": (n - 1) / run if run > 0 else float("nan"),
                "cpu_cores": sampler.cores(t0, t1),
                "rss_mb_at_10_20pct": rss_start,
                "rss_mb_at_end": rss_end,
                "rss_growth": rss_end / rss_start - 1,
                "rss_mb_at_half": rss_half,
                "rss_growth_second_half": rss_end / rss_half - 1,
                "peak_rss_mb": vm_hwm_mb(proc.pid),
                "lag_after": lag,
                "labels": len(collector.labels),
                "rss_series": [(round(t - t0, 1), round(r, 1)) for t, r in rss[:: max(1, len(rss) // 60)]],
            }
        finally:
            sampler.stop()
            await collector.stop()
            self.terminate(proc)


# --------------------------------------------------------------------------- report
def fmt(x: Any, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "–"
    return f"{x:,.{digits}f}" if isinstance(x, int | float) else str(x)


def per_cpu(rate: Any, cores: Any) -> float | None:
    """Messages per CPU-second: less sensitive than msg/s to how much CPU a shared machine gave."""
    if isinstance(rate, int | float) and isinstance(cores, int | float) and cores > 0:
        return float(rate) / float(cores)
    return None


def markdown(res: dict[str, Any]) -> str:
    ort = res.get("ort", {}).get("variants", {})
    rows = []
    for variant, v in ort.items():
        best = v["limit"]
        rows.append(
            [
                f"1. ONNX Runtime alone (batch {best['batch_size']}, {best['mode']})",
                variant,
                fmt(best["msgs_per_s"]),
                "–",
                "–",
                "–",
                fmt(best["cpu_cores"], 2),
                fmt(per_cpu(best["msgs_per_s"], best["cpu_cores"])),
                fmt(res["ort"].get("peak_rss_mb")),
            ]
        )
    for r in res.get("systems", []):
        lat = r.get("latency", {})
        rows.append(
            [
                r["system"],
                r.get("variant") or "",
                fmt(r.get("msgs_per_s")),
                fmt(lat.get("p50_ms")),
                fmt(lat.get("p95_ms")),
                fmt(lat.get("p99_ms")),
                fmt(r.get("cpu_cores"), 2),
                fmt(per_cpu(r.get("msgs_per_s"), r.get("cpu_cores"))),
                fmt(r.get("peak_rss_mb")),
            ]
        )
    head = (
        "| system | variant | msg/s | p50 ms | p95 ms | p99 ms | CPU cores | msg per CPU-s | peak RSS MiB |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if res.get("ratios"):
        lines += ["", "| ratio | value | target |", "|---|---:|---|"]
        lines += [f"| {k} | {fmt(v, 2)}x | {res['targets'].get(k, '')} |" for k, v in res["ratios"].items()]
    if res.get("latency_check"):
        c = res["latency_check"]
        lines += [
            "",
            f"Latency target at half rate: p99 {fmt(c['p99_ms'])} ms vs max_wait_ms {fmt(c['max_wait_ms'])} + "
            f"2 x batch inference {fmt(c['batch_ms'], 1)} ms = {fmt(c['bound_ms'])} ms -> "
            f"{'met' if c['met'] else 'NOT met'}",
        ]
    if "ort" in res:
        pw = res["ort"]["padding_waste_mixed"]
        lines += [
            "",
            f"Padding waste, mixed stream (batches of {pw['batch_size']} in arrival order, {pw['batches']} batches): "
            f"{100 * pw['before']:.0f}% before length bucketing, {100 * pw['after']:.0f}% after.",
        ]
        for variant, v in ort.items():
            k = v["kinds"]
            lines.append(
                f"ORT {variant} at batch {v['limit']['batch_size']}: phrasebank {fmt(k['phrasebank']['msgs_per_s'])}, "
                f"tweets {fmt(k['tweets']['msgs_per_s'])}, BBC articles {fmt(k['bbc']['msgs_per_s'])} msg/s; "
                f"mixed {fmt(k['mixed_unbucketed']['msgs_per_s'])} msg/s unbucketed -> "
                f"{fmt(k['mixed_bucketed']['msgs_per_s'])} bucketed."
            )
        lines.append("Batch-size sweeps (batch→msg/s):")
        for variant, v in ort.items():
            for mode, sweep in v["sweeps"].items():
                runs = ", ".join(f"{bs}→{fmt(m['msgs_per_s'])}" for bs, m in sweep.items())
                lines.append(f"- {variant}, {mode}: {runs}")
    if res.get("soak"):
        s = res["soak"]
        lines += [
            "",
            f"Soak ({s['system']}, {fmt(s['seconds'])} s at full rate, {s['n']:,} messages, "
            f"{fmt(s['msgs_per_s'])} msg/s): RSS {fmt(s['rss_mb_at_10_20pct'])} MiB -> {fmt(s['rss_mb_at_end'])} MiB "
            f"({100 * s['rss_growth']:+.1f}%; second half {100 * s.get('rss_growth_second_half', 0.0):+.1f}%), "
            f"peak {fmt(s['peak_rss_mb'])} MiB, lag after {s['lag_after']}.",
        ]
    lines += ["", f"Load: before `{res['uptime_before']}`; after `{res.get('uptime_after', '')}`"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
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


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Everything before the broker: machine, bundle, the ONNX Runtime limit."""
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
    from streamer.bundle import load_bundle

    res["max_length"] = load_bundle(bundle).max_length
    log(f"bundle {bundle} (max_length {res['max_length']}); load: {res['uptime_before']}")
    if "ort" in args.stages.split(","):
        res["ort"] = run_ort(bundle, data_dir, args)
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
        for variant in ("fp32", "int8"):
            if f"sentiwire-{variant}" in stages or "sentiwire" in stages:
                system = sentiwire_system(
                    bundle,
                    variant,
                    args.batch_size,
                    args.max_wait_ms,
                    allow_spinning=args.allow_spinning,
                    workers=args.workers,
                )
                plan.append((system, short, args.n_sentiwire))
        if "mixed" in stages:
            mixed = load_items(data_dir, "mixed")
            for bucket in (False, True):
                tag = " mixed texts, " + ("bucketed" if bucket else "no bucketing")
                suffix = "-mixed-bucketed" if bucket else "-mixed-unbucketed"
                system = sentiwire_system(
                    bundle,
                    "int8",
                    args.batch_size,
                    args.max_wait_ms,
                    bucket=bucket,
                    allow_spinning=args.allow_spinning,
                    workers=args.workers,
                    tag=tag,
                    key_suffix=suffix,
                )
                plan.append((system, mixed, args.n_mixed))
        for system, items, n in plan:
            try:
                res["systems"].append(await bench.measure(system, items, n))
            except Exception as exc:
                log(f"FAILED {system.label}: {exc}")
                res["systems"].append({"system": system.label, "variant": system.variant, "error": str(exc)})
        if args.soak_s > 0 and "soak" in stages:
            int8 = next(
                (r for r in res["systems"] if r.get("key") == "sentiwire-int8" and "msgs_per_s" in r), None
            )
            rate = args.soak_rate or (int8["msgs_per_s"] if int8 else 300.0)
            system = sentiwire_system(
                bundle,
                "int8",
                args.batch_size,
                args.max_wait_ms,
                allow_spinning=args.allow_spinning,
                workers=args.workers,
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


def summarize(res: dict[str, Any], args: argparse.Namespace) -> None:
    by_key = {r.get("key"): r for r in res["systems"] if "msgs_per_s" in r}
    ort = res.get("ort", {}).get("variants", {})
    ratios: dict[str, float] = {}
    targets: dict[str, str] = {}
    naive = by_key.get("naive", {}).get("msgs_per_s")
    for variant in ("fp32", "int8"):
        sw = by_key.get(f"sentiwire-{variant}", {}).get("msgs_per_s")
        if sw and variant in ort:
            best = ort[variant]["limit"]
            ratios[f"sentiwire {variant} / ORT {variant} limit"] = sw / best["msgs_per_s"]
            targets[f"sentiwire {variant} / ORT {variant} limit"] = ">= 0.85 (int8, short texts)"
            sw_eff = per_cpu(sw, by_key[f"sentiwire-{variant}"].get("cpu_cores"))
            ort_eff = per_cpu(best["msgs_per_s"], best.get("cpu_cores"))
            if sw_eff and ort_eff:
                key = f"sentiwire {variant} / ORT {variant} limit, per CPU-second"
                ratios[key] = sw_eff / ort_eff
                targets[key] = "(same, normalised for the CPU each got)"
        if sw and naive:
            ratios[f"sentiwire {variant} / naive peer"] = sw / naive
            targets[f"sentiwire {variant} / naive peer"] = ">= 6"
    batched = by_key.get("batched", {}).get("msgs_per_s")
    if batched and by_key.get("sentiwire-int8"):
        ratios["sentiwire int8 / batched PyTorch peer"] = by_key["sentiwire-int8"]["msgs_per_s"] / batched
    res["ratios"], res["targets"] = ratios, targets
    int8 = by_key.get("sentiwire-int8")
    daemon_sweep = ort["int8"]["sweeps"].get(ort["int8"]["daemon_mode"], {}) if "int8" in ort else {}
    if int8 and str(args.batch_size) in daemon_sweep:
        # One batch's inference time as the daemon runs it: its workers/threads, a full padded batch.
        batch_ms = daemon_sweep[str(args.batch_size)]["ms_per_batch"]
        bound = args.max_wait_ms + 2 * batch_ms
        p99 = int8["latency"]["p99_ms"]
        res["latency_check"] = {
            "p99_ms": p99,
            "max_wait_ms": args.max_wait_ms,
            "batch_ms": batch_ms,
            "bound_ms": bound,
            "met": p99 is not None and p99 <= bound,
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("SENTIWIRE_DATA_DIR", REPO_ROOT.parent / "shared" / "data")),
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
        default="ort,naive,batched,sentiwire,mixed,soak",
        help="comma list of ort,naive,batched,sentiwire (or sentiwire-fp32 / sentiwire-int8),mixed,soak",
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
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_json = args.out_dir / f"bench-{stamp}.json"
    out_json.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    md = markdown(res)
    (args.out_dir / f"bench-{stamp}.md").write_text(md + "\n")
    print(md)
    print(f"\nJSON: {out_json}")


if __name__ == "__main__":
    main()
