"""The daemon's drift monitor: each published batch into streamer/drift.py, its verdict into metrics.

Bound to the classifier that ran the batch: when a reload swaps the model, the first batch of
the new one starts a fresh window against the new bundle's reference profile (batches are
published in start order, so no older batch follows). A bundle without a profile turns drift
off with one warning, never a crash.

Every input comes from the batch's result (labels, truncation, unknown and total tokens per
text, which the classifier counts as it tokenizes): nothing is tokenized again, and a message
costs a few microseconds (``python -m bench.drift``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from streamer.config import DriftConfig
from streamer.drift import Monitor, Observation, ProfileError, State, Statistics, Thresholds, profile_of
from streamer.metrics import Metrics
from streamer.model.classifier import BatchResult, Classifier

log = structlog.get_logger("sentiwire.drift")


class DriftWatch:
    def __init__(
        self, cfg: DriftConfig, metrics: Metrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.clock = clock
        self.monitor: Monitor | None = None
        self._clf: Classifier | None = None
        self._count_unknown = False  # the reference has an unknown-token share to compare with

    @property
    def state(self) -> State | None:
        return None if self.monitor is None else self.monitor.state

    def reset(self, clf: Classifier) -> None:
        """A fresh window against ``clf``'s reference profile (or drift off if it has none)."""
        self._clf, self.monitor, self._count_unknown = clf, None, False
        b, m, cfg = clf.bundle, self.metrics, self.cfg
        for gauge in (m.drift_label_js, m.drift_confidence_psi, m.drift_entropy_psi, m.drift_breach):
            gauge.clear()
        m.drift_drifting.set(0)
        m.drift_window.set(0)
        m.drift_enabled.set(0)
        if not cfg.enabled:
            return
        try:
            ref = profile_of(b.manifest, {h.name: h.labels for h in b.heads})
        except ProfileError as exc:
            log.warning(
                "drift monitoring off: unreadable reference profile", version=b.version, error=str(exc)
            )
            return
        if ref is None:
            log.warning(
                "drift monitoring off: the bundle has no reference profile (re-export it)",
                name=b.name,
                version=b.version,
            )
            return
        t = Thresholds(cfg.js_threshold, cfg.psi_threshold, cfg.rate_threshold, cfg.resolve_ratio)
        self.monitor = Monitor(
            ref,
            window_messages=cfg.window_messages,
            window_s=cfg.window_s,
            min_messages=cfg.min_messages,
            segments=cfg.segments,
            thresholds=t,
        )
        self._count_unknown = ref.unknown_share is not None
        m.drift_enabled.set(1)
        m.drift_reference.set(ref.messages)
        m.drift_truncation.labels(source="reference").set(ref.truncation_rate)
        if ref.unknown_share is not None:
            m.drift_unknown.labels(source="reference").set(ref.unknown_share)
        log.info("drift reference loaded", version=b.version, reference_messages=ref.messages)

    def observe(self, clf: Classifier, result: BatchResult) -> None:
        """One published batch."""
        if clf is not self._clf:
            self.reset(clf)
        mon = self.monitor
        if mon is None or not result.predictions:
            return
        n = len(result.predictions)
        counted = self._count_unknown and len(result.unknown) == n
        unknown = result.unknown if counted else [0] * n
        tokens = result.tokens if counted else [0] * n
        obs = [
            Observation(mon.features(pred), trunc, unk, toks)
            for pred, trunc, unk, toks in zip(
                result.predictions, result.truncated, unknown, tokens, strict=True
            )
        ]
        before = mon.state
        stats = mon.observe(obs, self.clock())
        self.metrics.drift_window.set(len(mon.window))
        if stats is not None:
            self._export(stats, mon.state)
        if mon.state != before:
            self.metrics.drift_transitions.labels(state=mon.state).inc()
            log.warning(
                "model drift" if mon.state == State.DRIFTING else "model drift resolved",
                state=str(mon.state),
                breaches=list(stats.breaches) if stats else [],
                window=len(mon.window),
                version=clf.bundle.version,
            )

    def _export(self, s: Statistics, state: State) -> None:
        m = self.metrics
        for head, v in s.label_js.items():
            m.drift_label_js.labels(head=head).set(v)
        for head, v in s.confidence_psi.items():
            m.drift_confidence_psi.labels(head=head).set(v)
        for head, v in s.entropy_psi.items():
            m.drift_entropy_psi.labels(head=head).set(v)
        m.drift_truncation.labels(source="window").set(s.truncation_rate)
        if s.unknown_share is not None:
            m.drift_unknown.labels(source="window").set(s.unknown_share)
        m.drift_breach.clear()
        for name in s.breaches:
            stat, _, head = name.partition(":")
            m.drift_breach.labels(statistic=stat, head=head).set(1)
        m.drift_drifting.set(1 if state == State.DRIFTING else 0)
