"""Training examples: tokenised rows, the stratified dev split, source-mixing batches.

``prepare`` turns the recipe's sources into per-source training examples and one dev list
(dev rows are carved first, so dedupe drops their duplicates from train, never the reverse);
``SourceSampler`` draws batches across sources; ``collate`` pads them for torch.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.config import TrainConfig, TrainError
from training.data import LabeledSet, fingerprint, head_labels, load_source
from training.reports import log


@dataclass
class Example:
    ids: list[int]
    head: int
    label: int
    source: str
    slice: str | None


@dataclass
class Prepared:
    heads: list[tuple[str, tuple[str, ...]]]
    train: dict[str, list[Example]]  # by source name
    dev: list[Example]
    dev_texts: list[str]
    data_info: list[dict[str, Any]]
    load_reports: list[dict[str, Any]]

    def holdout(self) -> dict[str, dict[str, tuple[list[str], list[str]]]]:
        """The dev rows as head -> source -> (texts, labels): the holdout the bundle keeps."""
        out: dict[str, dict[str, tuple[list[str], list[str]]]] = {}
        for e, text in zip(self.dev, self.dev_texts, strict=True):
            head, labels = self.heads[e.head]
            texts, labs = out.setdefault(head, {}).setdefault(e.source, ([], []))
            texts.append(text)
            labs.append(labels[e.label])
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


def prepare(config: TrainConfig, tokenize: Callable[[list[str]], list[list[int]]]) -> Prepared:
    loaded: dict[str, list[LabeledSet]] = defaultdict(list)
    for spec in config.data:
        allowed = config.labels.get(spec.head)
        loaded[spec.head].append(load_source(spec, allowed_labels=allowed, strict=config.strict))
    heads: list[tuple[str, tuple[str, ...]]] = []
    for head, sets in loaded.items():
        observed = [lab for s in sets for lab in s.labels]
        heads.append((head, head_labels(head, observed, config.labels.get(head))))
    label_index = {h: {lab: i for i, lab in enumerate(labs)} for h, labs in heads}
    head_index = {h: i for i, (h, _) in enumerate(heads)}
    dev_sets: dict[str, list[LabeledSet]] = defaultdict(list)
    for spec in config.dev:
        dev_sets[spec.head].append(
            load_source(spec, allowed_labels=[*label_index[spec.head]], strict=config.strict)
        )

    rng = random.Random(config.seed)
    train: dict[str, list[Example]] = {}
    dev: list[Example] = []
    dev_texts: list[str] = []
    data_info: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []

    def examples(
        s: LabeledSet, rows: Sequence[int], source: str, seen: set[str] | None, dup: dict[str, int]
    ) -> tuple[list[Example], list[str]]:
        h = s.spec.head
        keep = []
        for i in rows:
            if seen is not None:
                key = " ".join(s.texts[i].lower().split())
                if key in seen:
                    dup["duplicates_dropped"] += 1
                    continue
                seen.add(key)
            keep.append(i)
        texts = [s.texts[i] for i in keep]
        ids = tokenize(texts)
        out = [
            Example(
                ids[j], head_index[h], label_index[h][s.labels[i]], source, s.slices[i] if s.slices else None
            )
            for j, i in enumerate(keep)
        ]
        return out, texts

    for head, sets in loaded.items():
        seen: set[str] | None = set() if config.dedupe else None
        dev_pairs = []
        # dev rows first so dedupe removes their duplicates from train, not the reverse
        split_rows: dict[int, tuple[list[int], list[int]]] = {}
        for k, s in enumerate(sets):
            n = len(s.texts)
            order = list(range(n))
            if config.max_rows_per_source and n > config.max_rows_per_source:
                rng.shuffle(order)
                order = sorted(order[: config.max_rows_per_source])
            if head in dev_sets:
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
            ex, texts = examples(s, split_rows[k][1], s.spec.display_name, seen, dup)
            dev += ex
            dev_texts += texts
            dev_pairs.append((s, len(ex)))
        for ds in dev_sets.get(head, []):
            dup = defaultdict(int)
            ex, texts = examples(ds, range(len(ds.texts)), ds.spec.display_name, seen, dup)
            dev += ex
            dev_texts += texts
            reports.append({**ds.report.to_json(), "role": "dev", **dup})
            data_info.append(
                {
                    "head": head,
                    "path": ds.spec.path,
                    "sha256": ds.sha256,
                    "rows": ds.report.rows,
                    "role": "dev",
                    "used": len(ex),
                    "fingerprint": fingerprint(ds.texts, ds.labels),
                }
            )
        for k, s in enumerate(sets):
            dup = defaultdict(int)
            ex, _ = examples(s, split_rows[k][0], s.spec.display_name, seen, dup)
            name = s.spec.display_name
            if name in train:
                name = f"{name}#{k}"
                for e in ex:
                    e.source = name
            train[name] = ex
            n_dev = next(n for ss, n in dev_pairs if ss is s)
            reports.append({**s.report.to_json(), "role": "train", "train": len(ex), "dev": n_dev, **dup})
            data_info.append(
                {
                    "head": head,
                    "path": s.spec.path,
                    "sha256": s.sha256,
                    "rows": s.report.rows,
                    "role": "train",
                    "used": s.report.used,
                    "train": len(ex),
                    "dev": n_dev,
                    "skipped": s.report.n_skipped,
                    "fingerprint": fingerprint(s.texts, s.labels),
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
    return Prepared(heads, train, dev, dev_texts, data_info, reports)


class SourceSampler:
    """Batches mixing sources with probability ~ size**T, each source cycled without replacement.

    T=1 is proportional to size, T=0 uniform over sources; 0.5 keeps small sets
    (PhraseBank) from being drowned by large ones without overfitting them.
    """

    def __init__(
        self, train: dict[str, list[Example]], temperature: float, weights: dict[str, float], seed: int
    ):
        self.names = sorted(train)
        self.data = train
        sizes = np.array([len(train[n]) for n in self.names], dtype=float)
        w = sizes**temperature * np.array([weights.get(n, 1.0) for n in self.names])
        self.probs = w / w.sum()
        self.rng = np.random.default_rng(seed)
        self.orders = {n: self.rng.permutation(len(train[n])) for n in self.names}
        self.pos = dict.fromkeys(self.names, 0)

    def _take(self, name: str) -> Example:
        if self.pos[name] >= len(self.orders[name]):
            self.orders[name] = self.rng.permutation(len(self.data[name]))
            self.pos[name] = 0
        ex = self.data[name][int(self.orders[name][self.pos[name]])]
        self.pos[name] += 1
        return ex

    def batch(self, size: int) -> list[Example]:
        picks = self.rng.choice(len(self.names), size=size, p=self.probs)
        return [self._take(self.names[int(i)]) for i in picks]

    def batches(self, size: int, buckets: int) -> list[list[Example]]:
        """``buckets`` batches drawn together and grouped by length: far less padding per step."""
        pool = sorted(self.batch(size * buckets), key=lambda e: len(e.ids))
        out = [pool[i * size : (i + 1) * size] for i in range(buckets)]
        order = self.rng.permutation(buckets)
        return [out[int(i)] for i in order]


def collate(batch: Sequence[Example], pad_id: int, n_heads: int) -> tuple[Any, Any, Any]:
    """Pad to the longest in the batch; labels[h] = -100 where the example has no label for h."""
    import torch

    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((n_heads, len(batch)), -100, dtype=torch.long)
    for i, e in enumerate(batch):
        ids[i, : len(e.ids)] = torch.tensor(e.ids, dtype=torch.long)
        mask[i, : len(e.ids)] = 1
        labels[e.head, i] = e.label
    return ids, mask, labels
