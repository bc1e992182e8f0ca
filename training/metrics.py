"""Classification metrics in one JSON-friendly shape (trainer, evaluate, reports)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 (over ``labels`` present in truth or predictions), per class P/R/F1, confusion."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(labels)
    n = len(y_true)
    if n == 0:
        return {"n": 0, "accuracy": None, "macro_f1": None, "labels": labels}
    truth, pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    present = [lab for lab in labels if (truth == lab).any() or (pred == lab).any()]
    p, r, f, s = precision_recall_fscore_support(truth, pred, labels=labels, zero_division=0)
    per_class = {
        lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, lab in enumerate(labels)
    }
    macro = float(np.mean([per_class[lab]["f1"] for lab in present])) if present else 0.0
    return {
        "n": n,
        "accuracy": float((truth == pred).mean()),
        "macro_f1": macro,
        "labels": labels,
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(truth, pred, labels=labels).tolist(),
    }


def majority_baseline(y_true: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Metrics of always predicting the most frequent true label (the bar a model must clear)."""
    if not y_true:
        return classification_metrics([], [], labels)
    values, counts = np.unique(np.asarray(y_true, dtype=object), return_counts=True)
    top = str(values[int(counts.argmax())])
    return classification_metrics(y_true, [top] * len(y_true), labels)
