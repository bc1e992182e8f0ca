"""The one inference path: tokenize, bucket by length, run, softmax, labels.

Shared by the daemon, ``sentiwire predict``, ``evaluate`` and ``retrain`` so offline metrics
measure what is served. Holds no mutable state after ``__init__``, so worker threads may call
it concurrently; ``run_batch`` is the daemon's CPU-bound step (run off the event loop).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

import numpy as np
import structlog

from streamer.enums import Device, Precision, Variant
from streamer.enums import Runtime as RuntimeName
from streamer.model.buckets import plan_buckets, take_rows
from streamer.model.bundle import Bundle
from streamer.model.cache import BYTES_PER_SCORE, ENTRY_OVERHEAD_BYTES, LabelCache, cache_key
from streamer.model.errors import InferenceError
from streamer.model.gate import run_gate
from streamer.model.runtime import Runtime, build_runtime
from streamer.model.selection import Choice, choose, probe
from streamer.model.tokenizer import Encoded, encode, load_tokenizer, unknown_token_id

log = structlog.get_logger("sentiwire.model")

_E = TypeVar("_E", bound=StrEnum)


@dataclass(frozen=True)
class HeadPrediction:
    label: str
    score: float
    scores: dict[str, float]


@dataclass(frozen=True, slots=True)
class Cached:
    """What the response cache keeps of a text: its labels, whether it was truncated, and its
    unknown and total token counts (what the drift monitor needs)."""

    predictions: dict[str, HeadPrediction]
    truncated: bool
    unknown: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class BatchResult:
    """Predictions of one batch with what it cost (for metrics and the bench)."""

    predictions: list[dict[str, HeadPrediction]]
    truncated: list[bool]
    tokenize_s: float
    infer_s: float
    real_tokens: int
    padded_tokens: int  # tokens fed to the model, padding included
    cache_hits: int = 0  # texts answered by the response cache (repeats within the batch included)
    cache_evictions: int = 0
    # Per text, unknown tokens and tokens (specials included; empty when the tokenizer has no
    # unknown token): the drift monitor's unknown-token share, without tokenizing again.
    unknown: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)

    @property
    def padding_waste(self) -> float:
        return 0.0 if self.padded_tokens == 0 else 1.0 - self.real_tokens / self.padded_tokens


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float32, copy=False)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def _choice(enum: type[_E], value: str, what: str) -> _E:
    """``value`` as a member of ``enum``; an InferenceError naming the choices otherwise."""
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(m.value for m in enum)
        raise InferenceError(f"unknown {what} {value!r} (expected one of {choices})") from None


class Classifier:
    """Multi-head text classifier over a verified bundle."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        variant: Variant | str = Variant.FP32,
        device: Device | str = Device.CPU,
        intra_op_threads: int = 0,
        allow_spinning: bool = False,
        cache_entries: int = 0,
        cache_max_bytes: int = 0,
        runtime: RuntimeName | str = RuntimeName.ONNXRUNTIME,
        precision: Precision | str | None = None,
        workers: int = 1,
        gate: bool = True,
        failed_int8_ok: bool = False,
    ) -> None:
        """``cache_entries`` > 0 turns on the response cache (cache.py) for :meth:`run_batch`.

        ``precision`` None follows ``variant``; int8 serves the int8 graph, the others the fp32 one.
        ``runtime`` defaults to ONNX Runtime (what export checks); the daemon passes ``model.runtime``.
        ``gate`` runs the agreement gate (gate.py) for a runtime/precision the bundle did not check.
        An int8 graph that failed the export's precision gate is refused (``Bundle.int8_refusal``)
        unless ``failed_int8_ok`` (benchmarks measure its speed; nothing labels with it).
        """
        self.bundle = bundle
        var = _choice(Variant, variant, "variant")
        prec = Precision(var.value) if precision is None else _choice(Precision, precision, "precision")
        if precision is not None and var == Variant.INT8 and prec != Precision.INT8:
            raise InferenceError(f"variant=int8 and precision={prec.value} disagree (int8 is the int8 graph)")
        self.choice: Choice = choose(
            _choice(RuntimeName, runtime, "runtime"), _choice(Device, device, "device"), prec, probe()
        )
        self.variant = self.choice.variant
        refusal = bundle.int8_refusal() if self.variant == Variant.INT8 and not failed_int8_ok else None
        if refusal:
            raise InferenceError(refusal)
        self.precision = self.choice.precision
        self.runtime_name = self.choice.runtime
        self._tokenizer = load_tokenizer(bundle)
        self.runtime: Runtime = build_runtime(
            bundle,
            self.choice,
            workers=workers,
            intra_op_threads=intra_op_threads,
            allow_spinning=allow_spinning,
        )
        self.provider: str = self.runtime.provider
        self.agreement: dict[str, float] | None = None  # per head, when the gate ran
        if gate and self.needs_gate:
            what = f"model.runtime={self.runtime_name.value} model.precision={self.precision.value}"
            self.agreement = run_gate(bundle, self.encode, self.runtime, what, threads=intra_op_threads)
            log.info("agreement gate passed", what=what, agreement=self.agreement)
        labels = sum(len(h.labels) for h in bundle.heads)
        self.cache: LabelCache[Cached] = LabelCache(
            cache_entries, cache_max_bytes, ENTRY_OVERHEAD_BYTES + BYTES_PER_SCORE * labels
        )
        self._normalizer = self._tokenizer.normalizer
        self.unknown_id = unknown_token_id(self._tokenizer)

    @property
    def needs_gate(self) -> bool:
        """What export did not check: the bundle's graphs on ONNX Runtime were (fp32 parity, int8)."""
        return not (
            self.runtime_name == RuntimeName.ONNXRUNTIME
            and self.precision in (Precision.FP32, Precision.INT8)
        )

    def cache_key(self, text: str) -> bytes:
        """The text as the tokenizer normalizes it, hashed, with the bundle version."""
        normalized = self._normalizer.normalize_str(text) if self._normalizer is not None else text
        return cache_key(self.bundle.version, normalized)

    def encode(self, texts: Sequence[str]) -> Encoded:
        return encode(self._tokenizer, texts)

    def infer(self, enc: Encoded) -> dict[str, np.ndarray]:
        """Class probabilities per head for an encoded batch."""
        if len(enc) == 0:
            return {h.name: np.zeros((0, len(h.labels)), dtype=np.float32) for h in self.bundle.heads}
        logits = self.runtime.run(enc)
        return {h.name: softmax(x) for h, x in zip(self.bundle.heads, logits, strict=True)}

    def to_predictions(self, probs: dict[str, np.ndarray]) -> list[dict[str, HeadPrediction]]:
        n = len(next(iter(probs.values()))) if probs else 0
        out: list[dict[str, HeadPrediction]] = [{} for _ in range(n)]
        for head in self.bundle.heads:
            p = probs[head.name]
            best = p.argmax(axis=1)
            for i in range(n):
                row = p[i]
                out[i][head.name] = HeadPrediction(
                    label=head.labels[int(best[i])],
                    score=float(row[best[i]]),
                    scores={lab: float(v) for lab, v in zip(head.labels, row, strict=True)},
                )
        return out

    def predict(self, texts: Sequence[str]) -> list[dict[str, HeadPrediction]]:
        return self.to_predictions(self.infer(self.encode(texts)))

    def run_batch(self, texts: Sequence[str], *, bucket: bool = True) -> BatchResult:
        """Predictions in the order of ``texts``, identical to ``predict(texts)``, run per length bucket;
        texts the response cache knows (or repeated in the batch) are not run again."""
        if not self.cache.enabled:
            return self._run(texts, bucket=bucket)
        keys = [self.cache_key(t) for t in texts]
        found: dict[bytes, Cached] = {}
        todo: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key in found or key in todo:
                continue
            hit = self.cache.get(key)
            if hit is not None:
                found[key] = hit
            else:
                todo[key] = text
        run = self._run(list(todo.values()), bucket=bucket)
        evicted = 0
        counted = bool(run.unknown)
        for i, (key, pred, trunc) in enumerate(zip(todo, run.predictions, run.truncated, strict=True)):
            found[key] = Cached(pred, trunc, *((run.unknown[i], run.tokens[i]) if counted else (0, 0)))
            evicted += self.cache.put(key, found[key])
        return BatchResult(
            predictions=[dict(found[k].predictions) for k in keys],
            truncated=[found[k].truncated for k in keys],
            tokenize_s=run.tokenize_s,
            infer_s=run.infer_s,
            real_tokens=run.real_tokens,
            padded_tokens=run.padded_tokens,
            cache_hits=len(keys) - len(todo),
            cache_evictions=evicted,
            unknown=[found[k].unknown for k in keys] if self.unknown_id is not None else [],
            tokens=[found[k].tokens for k in keys] if self.unknown_id is not None else [],
        )

    def _run(self, texts: Sequence[str], *, bucket: bool) -> BatchResult:
        t0 = time.perf_counter()
        enc = self.encode(texts)
        t1 = time.perf_counter()
        n = len(enc)
        lengths = [int(x) for x in enc.lengths]
        buckets = plan_buckets(lengths) if bucket and n else ([np.arange(n)] if n else [])
        probs: dict[str, np.ndarray] = {}
        for rows in buckets:
            part = self.infer(take_rows(enc, rows))
            for head, p in part.items():
                if head not in probs:
                    probs[head] = np.empty((n, p.shape[1]), dtype=p.dtype)
                probs[head][rows] = p
        t2 = time.perf_counter()
        padded = sum(len(rows) * max(int(enc.lengths[rows].max()), 1) for rows in buckets if len(rows))
        unk = self.unknown_id
        return BatchResult(
            predictions=self.to_predictions(probs) if n else [],
            truncated=[bool(x) for x in enc.truncated],
            tokenize_s=t1 - t0,
            infer_s=t2 - t1,
            real_tokens=int(sum(lengths)),
            padded_tokens=padded,
            unknown=[]
            if unk is None
            else [int(x) for x in ((enc.input_ids == unk) & (enc.attention_mask > 0)).sum(axis=1)],
            tokens=[] if unk is None else lengths,
        )
