"""The models directory: promoted versions, the served symlink and its atomic swap, the
decision history, the one-retrain-at-a-time lock, and adopting a plain bundle directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.retrain.errors import RetrainError

HISTORY_FILE = "history.jsonl"
VERSIONS_DIR = "versions"
DATA_DIR = "data"
CANDIDATES_DIR = "candidates"
LOCK_FILE = ".retrain.lock"


@dataclass(frozen=True)
class ModelsDir:
    """The served symlink and the directories beside it."""

    served: Path

    @property
    def root(self) -> Path:
        return self.served.parent

    @property
    def versions(self) -> Path:
        return self.root / VERSIONS_DIR

    @property
    def history(self) -> Path:
        return self.root / HISTORY_FILE

    def data(self, version: str) -> Path:
        return self.root / DATA_DIR / version

    def candidate(self, version: str) -> Path:
        return self.root / CANDIDATES_DIR / version

    def check(self) -> None:
        if not self.served.is_symlink():
            raise RetrainError(
                f"{self.served}: the served path must be a symlink to {VERSIONS_DIR}/<version> so promotion "
                f"can swap it atomically; move the bundle to {self.versions}/<version> and link it "
                f"(see `sentiwire retrain --adopt`)"
            )
        if not self.served.resolve().is_dir():
            raise RetrainError(f"{self.served}: symlink target {os.readlink(self.served)} does not exist")

    def new_version(self) -> str:
        """A sortable UTC timestamp not yet used by a version, candidate or data dir."""
        base = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        version, n = base, 1
        while any(p.exists() for p in (self.versions / version, self.candidate(version), self.data(version))):
            n += 1
            version = f"{base}-{n}"
        return version


def swap_symlink(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically: a new relative symlink renamed over the old one."""
    rel = os.path.relpath(target, link.parent)
    tmp = link.parent / f".{link.name}.swap-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(rel, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(link.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def adopt(served: Path) -> Path:
    """Turn a plain bundle directory at ``served`` into ``versions/<version>`` + symlink."""
    from streamer.model.bundle import load_bundle

    if served.is_symlink():
        return served.resolve()
    bundle = load_bundle(served, verify=True)
    md = ModelsDir(served)
    dest = md.versions / bundle.version
    if dest.exists():
        raise RetrainError(f"{dest}: already exists; cannot adopt {served} as version {bundle.version}")
    md.versions.mkdir(parents=True, exist_ok=True)
    os.replace(served, dest)
    swap_symlink(served, dest)
    return dest


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """One retrain per models directory at a time (the CronJob forbids overlap too)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK_FILE).open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetrainError(f"{root}: another retrain holds {LOCK_FILE}") from None
        yield


def append_history(path: Path, record: Mapping[str, Any]) -> None:
    """One JSON line per decision, flushed to disk before returning."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RetrainError(f"{path}: line {i} is not JSON ({exc.msg})") from exc
    return out
