"""Shadow model: a candidate bundle labels sampled messages beside the served one, unpublished.

Off the publishing path by construction: the scheduler offers each batch only after the sink
has its labels, :meth:`Shadow.offer` never awaits (it starts a task or drops the sample), and
the shadow runs on its own threads (``max_in_flight`` batches, one ONNX Runtime thread
each). When all are busy, or the bundle is not loaded, a sample is dropped and counted
(``sentiwire_shadow_dropped_total{reason}``): the live labels never wait for the shadow.

Per head it counts live label x shadow label (the confusion counts), the agreement rate since
the shadow version loaded, and both models' top-class probability. The shadow hot-reloads on
its own (``model.reload_interval_s``), independently of the served model.

With ``output.shadow_labels_topic`` each compared message also goes there (key: the input's
key) with its source, both models and both labels, for offline analysis: from the shadow's
own task with its own non-transactional producer, so neither its sends nor their failures
(counted, ``sentiwire_shadow_labels_published_total{result}``) touch the live path.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import orjson
import structlog

from streamer.config import ModelConfig, ShadowConfig
from streamer.metrics import Metrics
from streamer.model.classifier import BatchResult, Classifier, HeadPrediction
from streamer.model.loading import Fingerprint, fingerprint, load_classifier
from streamer.records import Source

log = structlog.get_logger("sentiwire.shadow")


def shadow_model_config(model: ModelConfig, shadow: ShadowConfig) -> ModelConfig:
    """The served model's settings for the shadow bundle: one thread per batch, no cache."""
    return model.model_copy(
        update={
            "path": shadow.path,
            "shadow": None,
            "workers": shadow.max_in_flight,
            "intra_op_threads": 1,
            "cache_entries": 0,
        }
    )


class LabelsProducer(Protocol):
    """What the shadow needs of a Kafka producer (aiokafka's, or ``testing.FakeProducer``)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> Awaitable[Any]: ...


def shadow_record(
    source: Source,
    live: Classifier,
    shadow: Classifier,
    lp: dict[str, HeadPrediction],
    sp: dict[str, HeadPrediction],
) -> bytes:
    """One compared message for the shadow labels topic."""
    return orjson.dumps(
        {
            "source": {
                "topic": source.topic,
                "partition": source.partition,
                "offset": source.offset,
                "timestamp": source.timestamp,
            },
            "live": {"model": {"name": live.bundle.name, "version": live.bundle.version}, **_labels(lp)},
            "shadow": {
                "model": {"name": shadow.bundle.name, "version": shadow.bundle.version},
                **_labels(sp),
            },
            "agree": {head: p.label == sp[head].label for head, p in lp.items()},
        }
    )


def _labels(preds: dict[str, HeadPrediction]) -> dict[str, Any]:
    return {"labels": {head: {"label": p.label, "score": round(p.score, 6)} for head, p in preds.items()}}


class Shadow:
    def __init__(
        self,
        model: ModelConfig,
        metrics: Metrics,
        *,
        loader: Callable[[ModelConfig], Classifier] = load_classifier,
        rng: random.Random | None = None,
        labels_topic: str | None = None,
        producer: LabelsProducer | None = None,
    ) -> None:
        """``labels_topic`` and ``producer`` (started and stopped here) publish the comparisons."""
        if (labels_topic is None) != (producer is None):
            raise ValueError("Shadow: labels_topic and producer go together")
        if model.shadow is None:
            raise ValueError("Shadow needs model.shadow")
        self.cfg = model.shadow
        self.reload_interval_s = model.reload_interval_s
        self._model_cfg = shadow_model_config(model, model.shadow)
        self.metrics = metrics
        self._loader = loader
        self._rng = rng or random.Random()
        self.current: Classifier | None = None
        self._fp: Fingerprint | None = None
        self._failed: Fingerprint | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(
            max_workers=self.cfg.max_in_flight, thread_name_prefix="sentiwire-shadow"
        )
        self._agree: dict[str, list[int]] = {}  # head -> [agreed, compared] since the version loaded
        self._watch: asyncio.Task[None] | None = None
        self.labels_topic = labels_topic
        self._producer = producer
        self._producer_up: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Load the shadow bundle (in a thread), then watch it for new versions."""
        self._watch = asyncio.create_task(self._watch_loop(), name="shadow")
        if self._producer is not None:
            self._producer_up = asyncio.create_task(self._producer.start(), name="shadow-producer")

    async def close(self) -> None:
        tasks = [t for t in (self._watch, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                if self._producer_up is not None:
                    self._producer_up.cancel()
                await self._producer.stop()

    async def _watch_loop(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # never let the watcher die silently
                log.exception("shadow reload check crashed; will retry")
            if self.reload_interval_s <= 0:
                if self.current is not None:
                    return
                await asyncio.sleep(1.0)  # not loaded yet: keep trying (a bundle being copied)
            else:
                await asyncio.sleep(self.reload_interval_s)

    async def check_once(self) -> bool:
        """Load the shadow bundle if it is new; True if a new version was swapped in."""
        fp = await asyncio.to_thread(fingerprint, self.cfg.path)
        if fp is None or fp == self._failed or (self._fp is not None and fp == self._fp):
            return False
        try:
            clf = await asyncio.to_thread(self._loader, self._model_cfg)
        except Exception as exc:
            self._failed = fp
            self.metrics.shadow_reloads.labels(result="failure").inc()
            log.error(
                "shadow bundle not loaded; the previous shadow (if any) keeps running",
                path=str(self.cfg.path),
                error=str(exc),
            )
            return False
        self.current, self._fp, self._failed = clf, fp, None
        self._agree = {}  # every per-version series starts again: promote reads them as this version's
        self.metrics.shadow_agreement.clear()
        self.metrics.shadow_compared.clear()
        self.metrics.shadow_confidence.clear()
        self.metrics.shadow_info.clear()
        self.metrics.shadow_info.labels(name=clf.bundle.name, version=clf.bundle.version).set(1)
        self.metrics.shadow_reloads.labels(result="success").inc()
        log.info(
            "shadow model loaded", name=clf.bundle.name, version=clf.bundle.version, path=str(self.cfg.path)
        )
        return True

    # ---------------------------------------------------------------- fed by the scheduler

    def offer(
        self,
        live: Classifier,
        texts: Sequence[str],
        result: BatchResult,
        sources: Sequence[Source] | None = None,
    ) -> None:
        """A published batch: sample it and start the shadow on the sample, or drop it. Never waits.

        ``sources`` (one per text) are what the shadow labels topic names each message by."""
        if not texts or self.cfg.sample_fraction <= 0:
            return
        rng, frac = self._rng, self.cfg.sample_fraction
        picked = [i for i in range(len(texts)) if frac >= 1.0 or rng.random() < frac]
        if not picked:
            return
        shadow = self.current
        reason = None
        if shadow is None:
            reason = "not_loaded"
        elif len(self._running) >= self.cfg.max_in_flight:
            reason = "behind"
        elif shadow.bundle.heads != live.bundle.heads:  # a reload of either side changed them
            reason = "heads_differ"
        if reason is not None or shadow is None:
            self.metrics.shadow_dropped.labels(reason=reason or "not_loaded").inc(len(picked))
            return
        sample = [texts[i] for i in picked]
        live_preds = [result.predictions[i] for i in picked]
        picked_sources = None if sources is None else [sources[i] for i in picked]
        task = asyncio.create_task(
            self._run(live, shadow, sample, live_preds, picked_sources), name="shadow-batch"
        )
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(
        self,
        live_clf: Classifier,
        shadow: Classifier,
        texts: list[str],
        live: list[dict[str, HeadPrediction]],
        sources: list[Source] | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor, shadow.run_batch, texts)
        except Exception:
            log.exception("shadow model failed on a sample; dropped")
            self.metrics.shadow_dropped.labels(reason="failed").inc(len(texts))
            return
        if shadow is not self.current:  # a sample of a version since replaced
            return
        self.compare(live, result.predictions)
        if sources is not None:
            await self._publish(live_clf, shadow, sources, live, result.predictions)

    async def _publish(
        self,
        live_clf: Classifier,
        shadow: Classifier,
        sources: list[Source],
        live: list[dict[str, HeadPrediction]],
        preds: list[dict[str, HeadPrediction]],
    ) -> None:
        producer, topic = self._producer, self.labels_topic
        if producer is None or topic is None:
            return
        counter = self.metrics.shadow_published
        try:
            if self._producer_up is not None:
                await self._producer_up  # started once; a failed start fails every send, counted
            acks = [
                await producer.send(topic, shadow_record(src, live_clf, shadow, lp, sp), key=src.key)
                for src, lp, sp in zip(sources, live, preds, strict=True)
            ]
            await asyncio.gather(*acks)
        except Exception as exc:
            counter.labels(result="failed").inc(len(sources))
            log.warning("shadow labels not published", topic=topic, count=len(sources), error=repr(exc))
            return
        counter.labels(result="ok").inc(len(sources))

    def compare(self, live: list[dict[str, HeadPrediction]], shadow: list[dict[str, HeadPrediction]]) -> None:
        m = self.metrics
        for lp, sp in zip(live, shadow, strict=True):
            for head, l_pred in lp.items():
                s_pred = sp[head]
                m.shadow_compared.labels(head=head, live=l_pred.label, shadow=s_pred.label).inc()
                m.shadow_confidence.labels(head=head, model="live").observe(l_pred.score)
                m.shadow_confidence.labels(head=head, model="shadow").observe(s_pred.score)
                tally = self._agree.setdefault(head, [0, 0])
                tally[0] += l_pred.label == s_pred.label
                tally[1] += 1
        for head, (agreed, n) in self._agree.items():
            m.shadow_agreement.labels(head=head).set(agreed / n)

    def agreement(self) -> dict[str, float]:
        return {head: agreed / n for head, (agreed, n) in self._agree.items() if n}
