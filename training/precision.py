"""The served-precision gate: int8 must score every head and source within 0.5 point of fp32.

Label agreement (``training.export``'s 99.5% gate) bounds how many labels flip; this gate bounds
what the flips do to the numbers a desk reads: accuracy and macro-F1 of every head (its
full-label sources) and every dev source (scored on the labels it has, 2-way for reviews),
measured with the serving inference path on the dev rows. Slices (e.g. PhraseBank agreement
levels, UCI amazon/imdb/yelp) are recorded too but not gated: with ~100-300 rows one flip
moves them by 0.3-1 point, so a 0.5-point gate there would be noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamer.model.classifier import Classifier
from training.metrics import classification_metrics

MAX_METRIC_DELTA = 0.005  # 0.5 point
METRICS = ("accuracy", "macro_f1")
BINARY = {"negative", "positive"}

# head -> source -> (texts, labels)
DevRows = Mapping[str, Mapping[str, tuple[Sequence[str], Sequence[str]]]]


def scored_for(labels: Sequence[str], observed: set[str], explicit: Sequence[str] | None = None) -> list[str]:
    if explicit:
        return [lab for lab in labels if lab in explicit]
    if observed == BINARY and "neutral" in labels:
        return [lab for lab in labels if lab in BINARY]
    return list(labels)


def predict(
    clf: Classifier, head: str, texts: Sequence[str], scored: Sequence[str], batch: int = 64
) -> list[str]:
    """Labels by the argmax over ``scored`` (texts sorted by length: less padding)."""
    labels = list(clf.bundle.head(head).labels)
    cols = np.array([labels.index(lab) for lab in scored])
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = [""] * len(texts)
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        probs = clf.infer(clf.encode([texts[i] for i in rows]))[head]
        for i, j in zip(rows, probs[:, cols].argmax(axis=1), strict=True):
            out[i] = scored[int(j)]
    return out


class MetricDeltas:
    """fp32 predictions computed once; :meth:`measure` compares one int8 graph against them."""

    def __init__(
        self,
        fp32: Classifier,
        rows: DevRows,
        scored: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        slices: Mapping[str, Mapping[str, Sequence[str | None]]] | None = None,
    ) -> None:
        self.rows = rows
        self.scored: dict[str, dict[str, list[str]]] = {}
        self.fp32: dict[str, dict[str, list[str]]] = {}
        self.slices = slices or {}
        for head, sources in rows.items():
            labels = list(fp32.bundle.head(head).labels)
            for src, (texts, truth) in sources.items():
                explicit = (scored or {}).get(head, {}).get(src)
                sc = scored_for(labels, set(truth), explicit)
                self.scored.setdefault(head, {})[src] = sc
                self.fp32.setdefault(head, {})[src] = predict(fp32, head, texts, sc)

    def measure(self, int8: Classifier) -> dict[str, Any]:
        """{head: {"overall": entry, "by_source": {src: entry (+ "slices")}}}, entry = n + per metric
        {fp32, int8, delta}; plus "max_delta" over every gated number."""
        out: dict[str, Any] = {}
        worst, where = 0.0, ""
        for head, sources in self.rows.items():
            labels = list(int8.bundle.head(head).labels)
            full_t: list[str] = []
            full_a: list[str] = []
            full_b: list[str] = []
            by_source: dict[str, Any] = {}
            for src, (texts, truth) in sources.items():
                sc = self.scored[head][src]
                a, b = self.fp32[head][src], predict(int8, head, texts, sc)
                entry = _entry(list(truth), a, b, sc)
                worst, where = _worse(worst, where, entry, f"{head} {src}")
                sl = self.slices.get(head, {}).get(src)
                if sl is not None and any(v is not None for v in sl):
                    entry["slices"] = {
                        str(v): _entry(*_pick(sl, v, list(truth), a, b), sc)
                        for v in sorted({v for v in sl if v is not None})
                    }
                by_source[src] = entry
                if len(sc) == len(labels):
                    full_t, full_a, full_b = full_t + list(truth), full_a + a, full_b + b
            head_entry: dict[str, Any] = {"by_source": by_source}
            if full_t:
                head_entry["overall"] = _entry(full_t, full_a, full_b, labels)
                worst, where = _worse(worst, where, head_entry["overall"], f"{head} overall")
            out[head] = head_entry
        return {"heads": out, "max_delta": worst, "worst": where, "limit": MAX_METRIC_DELTA}


def _worse(worst: float, where: str, entry: Mapping[str, Any], what: str) -> tuple[float, str]:
    for m in METRICS:
        if entry[m]["delta"] > worst:
            worst, where = entry[m]["delta"], f"{what} {m}"
    return worst, where


def deltas_worst(deltas: Mapping[str, Any]) -> str:
    """The gated number that moved most, e.g. "topic overall macro_f1" (for messages)."""
    return str(deltas.get("worst") or "a dev accuracy/macro-F1")


def _pick(
    slices: Sequence[str | None], value: str, truth: list[str], a: list[str], b: list[str]
) -> tuple[list[str], list[str], list[str]]:
    idx = [i for i, v in enumerate(slices) if v == value]
    return [truth[i] for i in idx], [a[i] for i in idx], [b[i] for i in idx]


def _entry(truth: list[str], a: list[str], b: list[str], labels: Sequence[str]) -> dict[str, Any]:
    ma, mb = classification_metrics(truth, a, labels), classification_metrics(truth, b, labels)
    entry: dict[str, Any] = {"n": len(truth)}
    for m in METRICS:
        entry[m] = {"fp32": ma[m], "int8": mb[m], "delta": round(abs(ma[m] - mb[m]), 6)}
    return entry
