"""Scoring the dev set during training: each row's own head, metrics by source and slice.

A row whose source has only some of the head's labels (``Example.allowed``) is predicted by
the argmax over those labels and its source is scored on them (SST-2: 2-way), as
``sentiwire evaluate`` does; a head's overall metrics cover its full-label sources (all of them
when it has none). ``monitor_value`` reduces the metrics to the one number early stopping and
best-checkpoint selection compare (``mean`` of the heads' macro-F1, ``sources``: mean over heads
of the mean over each head's sources, or one head, or one head's source).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from training.config import TrainError
from training.dataset import Example, collate
from training.metrics import classification_metrics, majority_baseline


def predict_dev(model: Any, dev: Sequence[Example], pad_id: int, n_heads: int, batch_size: int) -> list[int]:
    """Argmax of each dev example's own head (sorted by length for speed, returned in order)."""
    import torch

    order = sorted(range(len(dev)), key=lambda i: len(dev[i].ids))
    preds = [0] * len(dev)
    names = [h.name for h in model.head_specs]
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask, _ = collate([dev[i] for i in chunk], pad_id, n_heads)
            logits = model(ids, mask)
            stacked = {n: logits[n].argmax(dim=1).tolist() for n in names}
            for j, i in enumerate(chunk):
                e = dev[i]
                if e.allowed is None:
                    preds[i] = stacked[names[e.head]][j]
                else:
                    row = logits[names[e.head]][j]
                    preds[i] = e.allowed[int(row[list(e.allowed)].argmax())]
    return preds


def dev_metrics(
    heads: Sequence[tuple[str, tuple[str, ...]]], dev: Sequence[Example], preds: Sequence[int]
) -> dict[str, Any]:
    """Per head: overall, per source, per slice value (e.g. PhraseBank agreement=100)."""
    out: dict[str, Any] = {}
    for h, (name, labels) in enumerate(heads):
        rows = [(e, p) for e, p in zip(dev, preds, strict=True) if e.head == h]
        if not rows:
            continue
        full = [(e, p) for e, p in rows if e.allowed is None] or rows
        truth = [labels[e.label] for e, _ in full]
        pred = [labels[p] for _, p in full]
        m = classification_metrics(truth, pred, labels)
        m["majority_baseline"] = {
            k: v for k, v in majority_baseline(truth, labels).items() if k in ("accuracy", "macro_f1")
        }
        by_source: dict[str, Any] = {}
        for src in sorted({e.source for e, _ in rows}):
            sub = [(labels[e.label], labels[p], e.slice) for e, p in rows if e.source == src]
            allowed = next(e.allowed for e, _ in rows if e.source == src)
            scored = list(labels) if allowed is None else [labels[i] for i in allowed]
            sm = classification_metrics([t for t, _, _ in sub], [q for _, q, _ in sub], scored)
            entry: dict[str, Any] = {k: sm[k] for k in ("n", "accuracy", "macro_f1")}
            if allowed is not None:
                entry["scored_labels"] = scored
            slices = sorted({s for _, _, s in sub if s is not None})
            if slices:
                entry["slices"] = {}
                for sv in slices:
                    ss = [(t, q) for t, q, s in sub if s == sv]
                    slm = classification_metrics([t for t, _ in ss], [q for _, q in ss], scored)
                    entry["slices"][sv] = {k: slm[k] for k in ("n", "accuracy", "macro_f1")}
            by_source[src] = entry
        m["by_source"] = by_source
        out[name] = m
    return out


def monitor_value(metrics: dict[str, Any], monitor: str) -> float:
    if monitor == "mean":
        return float(np.mean([m["macro_f1"] for m in metrics.values()]))
    if monitor == "sources":
        return float(
            np.mean([np.mean([s["macro_f1"] for s in m["by_source"].values()]) for m in metrics.values()])
        )
    head, _, source = monitor.partition("/")
    if head not in metrics:
        raise TrainError(f"--monitor {monitor!r}: no head {head!r} in dev metrics")
    if not source:
        return float(metrics[head]["macro_f1"])
    if source not in metrics[head]["by_source"]:
        raise TrainError(f"--monitor {monitor!r}: head {head} has no dev source {source!r}")
    return float(metrics[head]["by_source"][source]["macro_f1"])
