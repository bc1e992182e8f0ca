"""The CPU-bound step of a batch: tokenize, bucket by length, run ONNX Runtime.

Runs in the daemon's inference thread (never on the event loop), so fetching, publishing
and /healthz keep going while a batch is computed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamer.batching import plan_buckets, take_rows
from streamer.inference import Classifier, HeadPrediction


@dataclass(frozen=True)
class BatchResult:
    predictions: list[dict[str, HeadPrediction]]
    truncated: list[bool]
    tokenize_s: float
    infer_s: float
    real_tokens: int
    padded_tokens: int  # tokens fed to the model, padding included

    @property
    def padding_waste(self) -> float:
        return 0.0 if self.padded_tokens == 0 else 1.0 - self.real_tokens / self.padded_tokens


def run_batch(clf: Classifier, texts: Sequence[str], *, bucket: bool = True) -> BatchResult:
    """Predictions in the order of ``texts``; identical labels to ``clf.predict(texts)``."""
    t0 = time.perf_counter()
    enc = clf.encode(texts)
    t1 = time.perf_counter()
    n = len(enc)
    lengths = [int(x) for x in enc.lengths]
    buckets = plan_buckets(lengths) if bucket and n else ([np.arange(n)] if n else [])
    probs: dict[str, np.ndarray] = {}
    for rows in buckets:
        part = clf.infer(take_rows(enc, rows))
        for head, p in part.items():
            if head not in probs:
                probs[head] = np.empty((n, p.shape[1]), dtype=p.dtype)
            probs[head][rows] = p
    t2 = time.perf_counter()
    real = int(sum(lengths))
    padded = sum(len(rows) * max(int(enc.lengths[rows].max()), 1) for rows in buckets if len(rows))
    return BatchResult(
        predictions=clf.to_predictions(probs) if n else [],
        truncated=[bool(x) for x in enc.truncated],
        tokenize_s=t1 - t0,
        infer_s=t2 - t1,
        real_tokens=real,
        padded_tokens=padded,
    )
