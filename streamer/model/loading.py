"""Loading a served model: verify the bundle, build the session, warm it up; its identity.

Blocking work (sha256 of every file, session creation): callers run it in a thread.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from streamer.config import ModelConfig
from streamer.model.bundle import load_bundle
from streamer.model.classifier import Classifier

WARMUP_TEXTS = ("warm-up", "A longer warm-up sentence so that the model sees more than one length.")


@dataclass(frozen=True)
class Fingerprint:
    realpath: str
    version: str | None
    mtime_ns: int


def fingerprint(path: Path) -> Fingerprint | None:
    """Identity of the bundle at ``path`` now, or None if it cannot be read (mid-swap, missing)."""
    try:
        real = os.path.realpath(path)
        manifest = Path(real) / "bundle.json"
        stat = manifest.stat()
        version = json.loads(manifest.read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        return None
    return Fingerprint(real, None if version is None else str(version), stat.st_mtime_ns)


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS has one (Linux)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """ONNX Runtime threads for each of ``workers`` concurrent batches (at least one)."""
    return max(1, usable_cpus() // workers)


def load_classifier(cfg: ModelConfig) -> Classifier:
    """Load + verify every file's sha256 + build the runtime (with its agreement gate) + warm up.
    Blocking: run in a thread."""
    bundle = load_bundle(cfg.path, verify=True)
    clf = Classifier(
        bundle,
        variant=cfg.variant,
        precision=cfg.precision,
        runtime=cfg.runtime,
        device=cfg.device,
        workers=cfg.workers,
        intra_op_threads=cfg.intra_op_threads or threads_per_worker(cfg.workers),
        allow_spinning=cfg.allow_spinning,
        cache_entries=cfg.cache_entries,
        cache_max_bytes=cfg.cache_max_bytes,
    )
    clf.predict(list(WARMUP_TEXTS))
    return clf
