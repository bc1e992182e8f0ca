"""One measurement of one system: drain a backlog, then latency at a steady rate; and the soak.

Throughput is the rate between the label timestamps of a pre-filled backlog (first 5%
dropped as warm-up); latency is label record timestamp - input record timestamp while
replaying at a share of that rate. The system under test and the broker are sampled from
outside (CPU, RSS); peak RSS is VmHWM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
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

from bench.procstats import Sampler, percentiles, vm_hwm_mb
from bench.systems import System, scrape_cache
from sentiwire.devbroker import BrokerHandle, create_topics
from sentiwire.paths import REPO_ROOT
from sentiwire.procs import terminate
from sentiwire.replay import Item, Stream, replay


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


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
            result["cache"] = scrape_cache(system)  # drain + latency phase together
            p99 = result["latency"]["p99_ms"]
            log(f"{system.label}: p50 {result['latency']['p50_ms']:.0f} ms, p99 {p99:.0f} ms")
        finally:
            sampler.stop()
            broker_sampler.stop()
            await collector.stop()
            result["exit_code"] = terminate(proc, 30.0)
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
            cache = scrape_cache(system)
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
                "cache": cache,
                "rss_series": [(round(t - t0, 1), round(r, 1)) for t, r in rss[:: max(1, len(rss) // 60)]],
            }
        finally:
            sampler.stop()
            await collector.stop()
            terminate(proc, 30.0)
