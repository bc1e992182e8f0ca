"""Model hot reload: notice a new bundle at the served path, load and warm it beside the
old one, then swap. The pipeline reads :attr:`ModelHolder.current` once per batch, so a
swap lands between batches and a batch never mixes two models.

A new version is detected by re-reading ``bundle.json`` (resolved path + version), which
also sees promotion by an atomic symlink swap (``models/current -> versions/...``).
A bundle that fails to load, verify or warm up leaves the old model serving; the failure
is logged and counted (``sentiwire_model_reloads_total{result="failure"}``) and the same
bundle is not retried until it changes again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from streamer.config import ModelConfig
from streamer.metrics import Metrics
from streamer.model.classifier import Classifier
from streamer.model.loading import Fingerprint, fingerprint, load_classifier

log = structlog.get_logger("sentiwire.reload")


class ModelHolder:
    """The classifier being served and its fingerprint."""

    def __init__(self, clf: Classifier, fp: Fingerprint | None, metrics: Metrics) -> None:
        self._metrics = metrics
        self.current = clf
        self.fingerprint = fp
        self._export()

    def swap(self, clf: Classifier, fp: Fingerprint | None) -> None:
        self.current, self.fingerprint = clf, fp
        self._export()

    def _export(self) -> None:
        b = self.current.bundle
        self._metrics.set_model(b.name, b.version, self.current.provider, self.current.variant)


class Reloader:
    """Polls the bundle path every ``interval_s``; swaps in new versions that load cleanly."""

    def __init__(
        self,
        cfg: ModelConfig,
        holder: ModelHolder,
        metrics: Metrics,
        loader: Callable[[ModelConfig], Classifier] = load_classifier,
    ) -> None:
        self._cfg = cfg
        self._holder = holder
        self._metrics = metrics
        self._loader = loader
        self._failed: Fingerprint | None = None

    def changed(self, fp: Fingerprint | None) -> bool:
        """Pure decision: a readable bundle that is neither the served one nor a known failure."""
        if fp is None or fp == self._failed:
            return False
        cur = self._holder.fingerprint
        return cur is None or (fp.realpath, fp.version, fp.mtime_ns) != (
            cur.realpath,
            cur.version,
            cur.mtime_ns,
        )

    async def check_once(self) -> bool:
        """One poll; True if a new model was swapped in."""
        fp = await asyncio.to_thread(fingerprint, self._cfg.path)
        if not self.changed(fp):
            return False
        old = self._holder.current.bundle
        try:
            clf = await asyncio.to_thread(self._loader, self._cfg)
        except Exception as exc:
            self._failed = fp
            self._metrics.model_reloads.labels(result="failure").inc()
            log.error(
                "model reload failed; old model keeps serving",
                path=str(self._cfg.path),
                candidate=fp.realpath if fp else None,
                candidate_version=fp.version if fp else None,
                serving_version=old.version,
                error=str(exc),
                error_type=type(exc).__name__,
            )
            return False
        self._holder.swap(clf, fp)
        self._failed = None
        self._metrics.model_reloads.labels(result="success").inc()
        log.info(
            "model reloaded",
            old_version=old.version,
            new_version=clf.bundle.version,
            name=clf.bundle.name,
            provider=clf.provider,
            variant=clf.variant,
            path=fp.realpath if fp else None,
        )
        return True

    async def run(self) -> None:
        if self._cfg.reload_interval_s <= 0:
            return
        while True:
            await asyncio.sleep(self._cfg.reload_interval_s)
            try:
                await self.check_once()
            except Exception:  # never let the watcher die silently
                log.exception("model reload check crashed; will retry")
