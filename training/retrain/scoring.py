"""Every served head scored, candidate and current on the same holdout, through the serving
inference path: the new data's holdout where it labels the head, else the fixed holdout the
served bundle keeps (its dev rows, see ``training.holdout``). A head with neither is
unscorable, and an unscorable head blocks the promotion.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.enums import Precision, Runtime, Variant

if TYPE_CHECKING:
    from streamer.model.bundle import Bundle
    from training.data import LabeledSet, SourceSpec

NEW_DATA = "new data"
GIVEN = "--holdout"
SERVED_HOLDOUT = "served bundle holdout"


@dataclass(frozen=True)
class HoldoutPlan:
    """Where each served head is scored."""

    sources: dict[str, list[SourceSpec]]  # head -> holdout files
    scored_on: dict[str, str]  # head -> NEW_DATA | GIVEN | SERVED_HOLDOUT
    unscorable: list[str]  # served heads with no holdout at all

    def paths(self) -> dict[str, list[str]]:
        return {h: [s.path for s in specs] for h, specs in self.sources.items()}


def plan_holdout(
    bundle: Bundle, new: Mapping[str, Sequence[LabeledSet]], given: Collection[str] = ()
) -> HoldoutPlan:
    """Per served head: the new data's holdout (``given`` heads: from --holdout) if it has rows,
    else the bundle's own holdout."""
    from training.holdout import read_holdout

    kept = read_holdout(bundle)
    sources: dict[str, list[SourceSpec]] = {}
    scored_on: dict[str, str] = {}
    unscorable: list[str] = []
    for head in (h.name for h in bundle.heads):
        if new.get(head):
            sources[head] = [s.spec for s in new[head]]
            scored_on[head] = GIVEN if head in given else NEW_DATA
        elif kept.get(head):
            sources[head], scored_on[head] = kept[head], SERVED_HOLDOUT
        else:
            unscorable.append(head)
    return HoldoutPlan(sources, scored_on, unscorable)


def evaluate(
    bundle_path: Path,
    holdout: Mapping[str, Sequence[SourceSpec]],
    variant: Variant | None = Variant.FP32,
    *,
    heads: Collection[str] | None = None,
    precision: Precision | None = None,
    runtime: Runtime = Runtime.AUTO,
) -> dict[str, Any]:
    """Per head holdout score through ``training.evaluate.evaluate_bundle`` (the serving inference path).

    A head's score is its macro-F1 over all its labels when every holdout source has them all;
    when a source covers only some labels (e.g. binary review data for a 3-way sentiment head),
    ``evaluate_bundle`` scores that source on its own label subset, and the head's score is the
    row-weighted mean of its sources' macro-F1. Either way both models get the same rule.
    Only ``heads`` (default: all) are scored: a candidate lacking a head gets no score for it.
    ``variant``/``precision``/``runtime`` are the daemon's model settings (evaluate's options), so
    both models are scored as they would be served; None follows the other, as in a config file.
    """
    from training.evaluate import evaluate_bundle

    specs = [s for head, sets in holdout.items() if heads is None or head in heads for s in sets]
    if not specs:
        return {}
    result = evaluate_bundle(bundle_path, specs, variant=variant, precision=precision, runtime=runtime)
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
