"""Score a bundle on labeled files through the serving inference path (no torch).

A 2-label negative/positive test set (e.g. reviews) on a head that also has ``neutral`` is
scored by the argmax over just those two labels, i.e. P(positive) vs P(negative): the model
is not penalised for a class the data cannot contain. Any other restriction is explicit
(``?scored=a,b`` in the source spec), never guessed from which labels a small file happens to hold.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from streamer.config import ModelConfig
from streamer.enums import Device, Precision, Runtime, Variant
from streamer.errors import UsageError
from streamer.model.classifier import Classifier
from streamer.model.errors import InferenceError
from streamer.model.loading import load_classifier
from training.data import DataError, SourceSpec, load_source
from training.metrics import classification_metrics, majority_baseline

# model.<field> in the daemon's messages is --<field> on the offline commands
_OPTION_FIELDS = re.compile(r"\bmodel\.(variant|precision|runtime|device)\b")


def _as_options(msg: str) -> str:
    return _OPTION_FIELDS.sub(r"--\1", msg)


def load_offline_classifier(
    bundle_path: str | Path,
    *,
    variant: Variant | None = None,
    precision: Precision | None = None,
    runtime: Runtime = Runtime.AUTO,
    device: Device = Device.CPU,
) -> Classifier:
    """The classifier the daemon would serve with these settings, built by the daemon's own
    ModelConfig and loader, so the variant/precision/runtime rules (and the agreement gate) are
    its, not a copy; its errors name the options. None leaves variant/precision to follow the
    other, as in a config file. One worker holds every CPU: the offline commands run one batch
    at a time."""
    settings: dict[str, Any] = {"path": Path(bundle_path), "runtime": runtime, "device": device}
    settings |= {"workers": 1, "cache_entries": 0}
    settings |= {k: v for k, v in (("variant", variant), ("precision", precision)) if v is not None}
    try:
        cfg = ModelConfig.model_validate(settings)
    except ValidationError as exc:
        msgs = [str(e["msg"]).removeprefix("Value error, ") for e in exc.errors(include_url=False)]
        raise UsageError(_as_options("; ".join(msgs))) from None
    try:
        return load_classifier(cfg)
    except InferenceError as exc:
        raise InferenceError(_as_options(str(exc))) from None


def serving_report(clf: Classifier) -> dict[str, Any]:
    """What actually ran, in the words of the daemon's "model loaded" line."""
    return {
        "variant": clf.variant,
        "runtime": clf.runtime_name,
        "precision": clf.precision,
        "provider": clf.provider,
        "chosen": _as_options(clf.choice.reason),
        "agreement": clf.agreement,
    }


def describe_serving(info: dict[str, Any]) -> str:
    """One line for a command's output: runtime, precision, graph and why that runtime."""
    return (
        f"runtime {info['runtime']}, precision {info['precision']} ({info['variant']} graph, "
        f"{info['provider']}; {info['chosen']})"
    )


def evaluate_bundle(
    bundle_path: str | Path,
    sources: Sequence[SourceSpec],
    *,
    variant: Variant | None = None,
    precision: Precision | None = None,
    runtime: Runtime = Runtime.AUTO,
    device: Device = Device.CPU,
    strict: bool = False,
    batch_size: int = 64,
    progress: bool = False,
    classifier: Classifier | None = None,
) -> dict[str, Any]:
    """{"model", "variant", "runtime", "precision", ..., "heads": {head: metrics + by_source},
    "sources": [load reports]}; the classifier as :func:`load_offline_classifier` builds it."""
    clf = classifier or load_offline_classifier(
        bundle_path, variant=variant, precision=precision, runtime=runtime, device=device
    )
    bundle = clf.bundle
    head_names = {h.name for h in bundle.heads}
    per_head: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"truth": [], "pred": []})
    by_source: dict[str, dict[str, Any]] = defaultdict(dict)
    reports = []
    for spec in sources:
        if spec.head not in head_names:
            raise DataError(
                f"--data {spec.head}={spec.path}: bundle has no head {spec.head!r} ({sorted(head_names)})"
            )
        head = bundle.head(spec.head)
        data = load_source(spec, allowed_labels=head.labels, strict=strict)
        scored = scored_labels(spec, head.labels, set(data.labels))
        cols = np.array([head.labels.index(lab) for lab in scored])
        preds: list[str] = []
        for start in _progress(range(0, len(data.texts), batch_size), progress, spec.display_name):
            probs = clf.infer(clf.encode(data.texts[start : start + batch_size]))[spec.head]
            preds += [scored[int(i)] for i in probs[:, cols].argmax(axis=1)]
        m = classification_metrics(data.labels, preds, scored)
        m["scored_labels"] = scored
        m["majority_baseline"] = {
            k: v for k, v in majority_baseline(data.labels, scored).items() if k in ("accuracy", "macro_f1")
        }
        by_source[spec.head][spec.display_name] = m
        if scored == list(head.labels):
            per_head[spec.head]["truth"] += data.labels
            per_head[spec.head]["pred"] += preds
        reports.append({"head": spec.head, **data.report.to_json()})
    heads: dict[str, Any] = {}
    for name in by_source:
        agg = per_head.get(name)
        overall: dict[str, Any] = (
            classification_metrics(agg["truth"], agg["pred"], bundle.head(name).labels) if agg else {}
        )
        overall["labels"] = list(bundle.head(name).labels)
        overall["by_source"] = by_source[name]
        heads[name] = overall
    return {
        "model": {"name": bundle.name, "version": bundle.version, "path": str(bundle.path)},
        **serving_report(clf),
        "heads": heads,
        "sources": reports,
    }


BINARY = {"negative", "positive"}


def scored_labels(spec: SourceSpec, head_labels: Sequence[str], observed: set[str]) -> list[str]:
    if spec.scored:
        unknown = [lab for lab in spec.scored if lab not in head_labels]
        if unknown or len(spec.scored) < 2:
            raise DataError(
                f"--data {spec.head}={spec.path}: scored={list(spec.scored)} must name >= 2 of {list(head_labels)}"
            )
        if observed - set(spec.scored):
            raise DataError(
                f"{spec.path}: labels {sorted(observed - set(spec.scored))} are not in scored={list(spec.scored)}"
            )
        return [lab for lab in head_labels if lab in spec.scored]
    if observed == BINARY and "neutral" in head_labels:
        return [lab for lab in head_labels if lab in BINARY]
    return list(head_labels)


def _progress(it: range, enabled: bool, desc: str) -> Any:
    if not enabled:
        return it
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    return tqdm(it, desc=desc, unit="batch", file=sys.stderr)


def format_table(result: dict[str, Any]) -> str:
    """Plain-text summary: one line per head/source, then per-class rows."""
    lines = [f"model {result['model']['name']} {result['model']['version']}: {describe_serving(result)}"]
    lines.append(f"{'head':<10} {'source':<34} {'n':>6} {'acc':>7} {'macro-F1':>9} {'majority-F1':>12}")
    for head, hm in result["heads"].items():
        for src, m in hm["by_source"].items():
            full = len(hm["labels"])
            tag = f" ({len(m['scored_labels'])}-way)" if len(m["scored_labels"]) < full else ""
            lines.append(
                f"{head:<10} {(src + tag)[:34]:<34} {m['n']:>6} {m['accuracy']:>7.3f} {m['macro_f1']:>9.3f} "
                f"{m['majority_baseline']['macro_f1']:>12.3f}"
            )
            for lab, pc in m["per_class"].items():
                lines.append(
                    f"{'':<10}   {lab[:31]:<31} P {pc['precision']:.3f} R {pc['recall']:.3f} "
                    f"F1 {pc['f1']:.3f} n {pc['support']}"
                )
        for rep in result["sources"]:
            if rep["head"] == head and rep["skipped"]:
                lines.append(f"{'':<10} skipped in {rep['path']}: {rep['skipped']}")
    return "\n".join(lines)
