"""Training examples: tokenised rows and each source's dev rows.

``prepare`` turns the recipe's sources into per-source training examples and one dev list
(dev rows are carved first, so dedupe drops their duplicates from train, never the reverse).
A source's dev rows are a stratified split of it, its fixed ``holdout=`` part, or its
``dev=`` file. Each example knows the labels its source has (``Example.allowed``), so a
negative/positive source trains and scores 2-way on a 3-label head. Batching lives in
:mod:`training.batches` (re-exported here).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.batches import Example as Example
from training.batches import SourceSampler as SourceSampler
from training.batches import collate as collate
from training.config import TrainConfig, TrainError
from training.data import (
    SENTIMENT_LABELS,
    DataError,
    LabeledSet,
    SourceSpec,
    fingerprint,
    head_labels,
    load_source,
)
from training.parts import holdout_rows, text_key
from training.reports import log


@dataclass
class Prepared:
    heads: list[tuple[str, tuple[str, ...]]]
    train: dict[str, list[Example]]  # by source name
    dev: list[Example]
    dev_texts: list[str]
    data_info: list[dict[str, Any]]
    load_reports: list[dict[str, Any]]
    train_texts: dict[str, list[str]] = field(default_factory=dict)  # by source, as in ``train``
    train_rows: dict[str, tuple[str, list[int]]] = field(default_factory=dict)  # (file, row numbers)
    left_out: set[str] = field(default_factory=set)  # dev sources of --leave-out: scored, not monitored

    def holdout(self) -> dict[str, dict[str, tuple[list[str], list[str]]]]:
        """The dev rows as head -> source -> (texts, labels): the holdout the bundle keeps."""
        out: dict[str, dict[str, tuple[list[str], list[str]]]] = {}
        for e, text in zip(self.dev, self.dev_texts, strict=True):
            head, labels = self.heads[e.head]
            texts, labs = out.setdefault(head, {}).setdefault(e.source, ([], []))
            texts.append(text)
            labs.append(labels[e.label])
        return out

    def holdout_scored(self) -> dict[str, dict[str, list[str]]]:
        """head -> source -> the labels its dev rows are scored on (as in ``holdout()``)."""
        out: dict[str, dict[str, list[str]]] = {}
        for e in self.dev:
            head, labels = self.heads[e.head]
            allowed = range(len(labels)) if e.allowed is None else e.allowed
            out.setdefault(head, {}).setdefault(e.source, [labels[i] for i in allowed])
        return out

    def holdout_slices(self) -> dict[str, dict[str, list[str | None]]]:
        """head -> source -> each dev row's slice value (as in ``holdout()``)."""
        out: dict[str, dict[str, list[str | None]]] = {}
        for e in self.dev:
            out.setdefault(self.heads[e.head][0], {}).setdefault(e.source, []).append(e.slice)
        return out


def _split(texts: list[str], labels: list[str], frac: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified split indices; classes too small to split stay in train."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(texts))
    counts: dict[str, int] = defaultdict(int)
    for lab in labels:
        counts[lab] += 1
    splittable = np.array([counts[lab] >= 2 for lab in labels])
    pool, keep = idx[splittable], idx[~splittable]
    if len(pool) < 4:
        raise TrainError(f"too few rows to carve a dev split ({len(texts)})")
    strat = [labels[i] for i in pool]
    tr, dv = train_test_split(pool, test_size=frac, random_state=seed, stratify=strat)
    return sorted([*tr.tolist(), *keep.tolist()]), sorted(dv.tolist())


def _source_labels(s: LabeledSet, labels: tuple[str, ...]) -> tuple[int, ...] | None:
    """Label indices the source has (a negative/positive file on a head with neutral, or
    ``scored=``; the rule ``sentiwire evaluate`` scores by); None when it has every label."""
    from training.evaluate import scored_labels

    if s.spec.scored:
        for lab, row in zip(s.labels, s.rows or range(1, len(s.labels) + 1), strict=True):
            if lab not in s.spec.scored:
                raise DataError(
                    f"{s.spec.path}: row {row}: label {lab!r} is not in scored={list(s.spec.scored)}"
                )
    scored = scored_labels(s.spec, labels, set(s.labels))
    return None if len(scored) == len(labels) else tuple(labels.index(lab) for lab in scored)


def _check_canonical(head: str, sets: Sequence[LabeledSet]) -> None:
    """A sentiment label outside negative/neutral/positive is a typo or an unmapped scheme, not a class."""
    if head != "sentiment" or {lab for s in sets for lab in s.labels} <= set(SENTIMENT_LABELS):
        return
    for s in sets:
        for lab, row in zip(s.labels, s.rows or range(1, len(s.labels) + 1), strict=True):
            if lab not in SENTIMENT_LABELS:
                raise DataError(
                    f"{s.spec.path}: row {row}: label {lab!r} is not a sentiment label {list(SENTIMENT_LABELS)}; "
                    "map it (?map=FROM:TO or --label-map sentiment:FROM=TO) or give --labels sentiment=..."
                )


def _left_out(spec: SourceSpec, names: Sequence[str]) -> bool:
    return spec.display_name in names or Path(spec.path).parent.name in names


def _dev_info(head: str, ds: LabeledSet, used: int) -> dict[str, Any]:
    return {
        "head": head,
        "path": ds.spec.path,
        "sha256": ds.sha256,
        "rows": ds.report.rows,
        "role": "dev",
        "used": used,
        "fingerprint": fingerprint(ds.texts, ds.labels),
    }


def prepare(config: TrainConfig, tokenize: Callable[[list[str]], list[list[int]]]) -> Prepared:
    loaded: dict[str, list[LabeledSet]] = defaultdict(list)
    for spec in config.data:
        allowed = config.labels.get(spec.head)
        loaded[spec.head].append(load_source(spec, allowed_labels=allowed, strict=config.strict))
    heads: list[tuple[str, tuple[str, ...]]] = []
    for head, sets in loaded.items():
        if head not in config.labels:
            _check_canonical(head, sets)
        observed = [lab for s in sets for lab in s.labels]
        heads.append((head, head_labels(head, observed, config.labels.get(head))))
    label_index = {h: {lab: i for i, lab in enumerate(labs)} for h, labs in heads}
    head_index = {h: i for i, (h, _) in enumerate(heads)}
    head_set = dict(heads)
    dev_sets: dict[str, list[LabeledSet]] = defaultdict(list)
    for spec in config.dev:
        dev_sets[spec.head].append(
            load_source(spec, allowed_labels=[*label_index[spec.head]], strict=config.strict)
        )
    names = [s.spec.display_name for sets in loaded.values() for s in sets]
    dirs = [Path(s.spec.path).parent.name for sets in loaded.values() for s in sets]
    unknown = [n for n in config.leave_out if n not in names and n not in dirs]
    if unknown:
        raise TrainError(f"--leave-out {unknown}: no such training source (sources: {sorted(set(names))})")

    rng = random.Random(config.seed)
    train: dict[str, list[Example]] = {}
    train_texts: dict[str, list[str]] = {}
    train_rows: dict[str, tuple[str, list[int]]] = {}
    left_out_names: set[str] = set()
    dev: list[Example] = []
    dev_texts: list[str] = []
    data_info: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []

    def examples(
        s: LabeledSet,
        rows: Sequence[int],
        source: str,
        seen: set[str] | None,
        dup: dict[str, int],
        allowed: tuple[int, ...] | None,
    ) -> tuple[list[Example], list[str], list[int]]:
        h = s.spec.head
        keep = []
        for i in rows:
            if seen is not None:
                key = text_key(s.texts[i])
                if key in seen:
                    dup["duplicates_dropped"] += 1
                    continue
                seen.add(key)
            keep.append(i)
        texts = [s.texts[i] for i in keep]
        ids = tokenize(texts)
        out = [
            Example(
                ids[j],
                head_index[h],
                label_index[h][s.labels[i]],
                source,
                s.slices[i] if s.slices else None,
                allowed,
            )
            for j, i in enumerate(keep)
        ]
        return out, texts, [s.rows[i] if s.rows else i + 1 for i in keep]

    for head, sets in loaded.items():
        seen: set[str] | None = set() if config.dedupe else None
        dev_counts: list[int] = []
        # dev rows first so dedupe removes their duplicates from train, not the reverse
        split_rows: dict[int, tuple[list[int], list[int]]] = {}
        own_dev: dict[int, LabeledSet] = {}
        has = [_source_labels(s, head_set[head]) for s in sets]
        for k, s in enumerate(sets):
            n = len(s.texts)
            order = list(range(n))
            if config.max_rows_per_source and n > config.max_rows_per_source:
                rng.shuffle(order)
                order = sorted(order[: config.max_rows_per_source])
            if s.spec.holdout is not None:
                # a fixed held-out part, scored whole (the --max-dev-rows cap is for split dev sets)
                held = holdout_rows(s.texts, s.labels, s.slices, s.spec.holdout)
                split_rows[k] = ([i for i in order if i not in held], sorted(held))
            elif s.spec.dev:
                own_dev[k] = load_source(
                    s.spec.dev_spec(), allowed_labels=[*label_index[head]], strict=config.strict
                )
                split_rows[k] = (order, [])
            elif head in dev_sets:
                split_rows[k] = (order, [])
            else:
                sub_t = [s.texts[i] for i in order]
                sub_l = [s.labels[i] for i in order]
                tr, dv = _split(sub_t, sub_l, config.dev_fraction, config.seed)
                dev_rows = [order[i] for i in dv]
                cap = config.max_dev_rows_per_source
                if cap and len(dev_rows) > cap:
                    # dev rows beyond the cap are neither trained on nor scored: they stay unseen
                    dev_rows = sorted(random.Random(config.seed + k).sample(dev_rows, cap))
                split_rows[k] = ([order[i] for i in tr], dev_rows)
        for k, s in enumerate(sets):
            dup: dict[str, int] = defaultdict(int)
            if k in own_dev:
                ds = own_dev[k]
                ex, texts, _ = examples(ds, range(len(ds.texts)), s.spec.display_name, seen, dup, has[k])
                reports.append({**ds.report.to_json(), "role": "dev", **dup})
                data_info.append(_dev_info(head, ds, len(ex)))
            else:
                ex, texts, _ = examples(s, split_rows[k][1], s.spec.display_name, seen, dup, has[k])
            dev += ex
            dev_texts += texts
            dev_counts.append(len(ex))
        for ds in dev_sets.get(head, []):
            dup = defaultdict(int)
            ds_allowed = _source_labels(ds, head_set[head])
            ex, texts, _ = examples(ds, range(len(ds.texts)), ds.spec.display_name, seen, dup, ds_allowed)
            dev += ex
            dev_texts += texts
            reports.append({**ds.report.to_json(), "role": "dev", **dup})
            data_info.append(_dev_info(head, ds, len(ex)))
        for k, s in enumerate(sets):
            dup = defaultdict(int)
            left_out = _left_out(s.spec, config.leave_out)
            name = s.spec.display_name
            if name in train:
                name = f"{name}#{k}"
            if left_out:
                left_out_names.add(s.spec.display_name)
                ex, texts, rows = [], [], list[int]()
            else:
                ex, texts, rows = examples(s, split_rows[k][0], name, seen, dup, has[k])
                train[name], train_texts[name], train_rows[name] = ex, texts, (s.spec.path, rows)
            extra: dict[str, Any] = {"left_out": True} if left_out else {}
            if has[k] is not None:
                extra["labels"] = [head_set[head][i] for i in has[k] or ()]
            reports.append(
                {
                    **s.report.to_json(),
                    "role": "train",
                    "train": len(ex),
                    "dev": dev_counts[k],
                    **dup,
                    **extra,
                }
            )
            data_info.append(
                {
                    "head": head,
                    "path": s.spec.path,
                    "sha256": s.sha256,
                    "rows": s.report.rows,
                    "role": "train",
                    "used": s.report.used,
                    "train": len(ex),
                    "dev": dev_counts[k],
                    "skipped": s.report.n_skipped,
                    "fingerprint": fingerprint(s.texts, s.labels),
                    **extra,
                }
            )
    for r in reports:
        if r["skipped"]:
            log(f"note: {r['path']}: skipped {sum(r['skipped'].values())} row(s): {r['skipped']}")
            for line in r["skipped_examples"][:5]:
                log(f"  {line}")
    empty = [name for name, ex in train.items() if not ex]
    if empty:
        raise TrainError(f"source(s) {empty} have no training rows left after the dev split")
    if not train:
        raise TrainError(f"--leave-out {list(config.leave_out)} leaves no training source")
    return Prepared(heads, train, dev, dev_texts, data_info, reports, train_texts, train_rows, left_out_names)
