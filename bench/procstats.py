"""CPU and memory of a process under test, sampled from outside (psutil), and latency stats."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a live process, in MiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Sample:
    t: float  # wall clock, seconds since the epoch (comparable with Kafka timestamps)
    cpu_s: float  # user + system CPU seconds so far
    rss_mb: float  # MiB, like VmHWM


@dataclass
class Sampler:
    """Polls one process every ``interval_s`` in a background thread until ``stop()``."""

    pid: int
    interval_s: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._proc = psutil.Process(self.pid)
        self._thread = threading.Thread(target=self._run, name=f"sampler-{self.pid}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        try:
            with self._proc.oneshot():
                cpu = self._proc.cpu_times()
                rss = self._proc.memory_info().rss
            self.samples.append(Sample(time.time(), cpu.user + cpu.system, rss / 2**20))
        except psutil.Error:
            self._stop.set()

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def cpu_at(self, t: float) -> float:
        """CPU seconds used up to wall time ``t`` (linear between samples)."""
        ts = [s.t for s in self.samples]
        i = bisect.bisect_left(ts, t)
        if i <= 0:
            return self.samples[0].cpu_s
        if i >= len(ts):
            return self.samples[-1].cpu_s
        a, b = self.samples[i - 1], self.samples[i]
        w = (t - a.t) / (b.t - a.t) if b.t > a.t else 0.0
        return a.cpu_s + w * (b.cpu_s - a.cpu_s)

    def cores(self, t0: float, t1: float) -> float:
        """Average cores busy in [t0, t1]."""
        return (self.cpu_at(t1) - self.cpu_at(t0)) / (t1 - t0) if t1 > t0 and self.samples else 0.0

    def rss_between(self, t0: float, t1: float) -> list[float]:
        return [s.rss_mb for s in self.samples if t0 <= s.t <= t1]


def percentiles(values_ms: Sequence[float]) -> dict[str, float | None]:
    if not values_ms:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    arr = np.asarray(values_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "max_ms": float(arr.max())}
