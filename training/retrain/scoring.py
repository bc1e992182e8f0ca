"""Both bundles scored on the same holdout, through the serving inference path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.enums import Variant

if TYPE_CHECKING:
    from training.data import LabeledSet


def evaluate(
    bundle_path: Path, holdout: Mapping[str, Sequence[LabeledSet]], variant: Variant = Variant.FP32
) -> dict[str, Any]:
    """Per head holdout score through ``training.evaluate.evaluate_bundle`` (the serving inference path).

    A head's score is its macro-F1 over all its labels when every holdout source has them all;
    when a source covers only some labels (e.g. binary review data for a 3-way sentiment head),
    ``evaluate_bundle`` scores that source on its own label subset, and the head's score is the
    row-weighted mean of its sources' macro-F1. Either way both models get the same rule.
    """
    from training.evaluate import evaluate_bundle

    specs = [s.spec for sets in holdout.values() for s in sets]
    result = evaluate_bundle(bundle_path, specs, variant=variant)
    out: dict[str, Any] = {}
    for head, hm in result["heads"].items():
        sources = hm["by_source"]
        n = sum(int(m["n"]) for m in sources.values())
        labels = hm.get("labels") or next(iter(sources.values()))["labels"]
        full = all(len(m["scored_labels"]) == len(labels) for m in sources.values())
        if full and hm.get("macro_f1") is not None:
            score, basis = float(hm["macro_f1"]), "macro-F1 over all labels"
        else:
            score = sum(float(m["macro_f1"]) * int(m["n"]) for m in sources.values()) / max(n, 1)
            basis = "row-weighted mean of per-source macro-F1 (sources scored on their own label subsets)"
        out[head] = {
            "macro_f1": score,
            "n": n,
            "basis": basis,
            "by_source": {
                name: {k: m[k] for k in ("n", "accuracy", "macro_f1", "scored_labels")}
                for name, m in sources.items()
            },
        }
    return out
