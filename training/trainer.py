"""Multi-head fine-tuning: one shared encoder, one linear head per head name.

``train(TrainConfig) -> Path`` is the whole pipeline (data -> fine-tune -> report -> export ->
bundle); the CLI and ``sentiwire retrain`` call it. ``TrainConfig`` round-trips through JSON
and is stored as ``bundle.json["recipe"]``, so any bundle can be re-trained from its recipe.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import signal
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.data import (
    DataError,
    LabeledSet,
    SourceSpec,
    fingerprint,
    head_labels,
    load_source,
)
from training.metrics import classification_metrics, majority_baseline

RANDOM_TINY = "random:tiny"  # tests: tiny random BERT + MiniLM tokenizer


class TrainError(Exception):
    """Training cannot proceed (bad config, data, or base model)."""


@dataclass
class TrainConfig:
    data: list[SourceSpec]
    dev: list[SourceSpec] = field(default_factory=list)
    labels: dict[str, list[str]] = field(default_factory=dict)
    base_model: str = "minilm"
    output: str = "models/sentiwire-minilm"
    name: str = "sentiwire"
    version: str | None = None
    max_length: int = 64
    epochs: int = 4
    batch_size: int = 32
    lr: float = 5e-5
    head_lr: float | None = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    grad_clip: float = 1.0
    patience: int = 2
    class_weights: bool = False
    label_smoothing: float = 0.0
    dropout: float = 0.1
    seed: int = 13
    dev_fraction: float = 0.15
    sampling_temperature: float = 0.5
    source_weights: dict[str, float] = field(default_factory=dict)
    steps_per_epoch: int | None = None
    eval_every: int | None = None
    max_rows_per_source: int | None = None
    max_dev_rows_per_source: int | None = None
    freeze_embeddings: bool = False
    freeze_layers: int = 0
    length_buckets: int = 8
    max_train_minutes: float | None = None
    dedupe: bool = True
    monitor: str = "mean"
    eval_batch_size: int = 128
    threads: int = 0
    force: bool = False
    strict: bool = False
    overwrite: bool = False
    progress: bool = True

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["data"] = [s.to_json() for s in self.data]
        d["dev"] = [s.to_json() for s in self.dev]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise TrainError(f"recipe has unknown keys {sorted(unknown)}")
        kw = dict(d)
        kw["data"] = [SourceSpec.from_json(s) for s in d["data"]]
        kw["dev"] = [SourceSpec.from_json(s) for s in d.get("dev", [])]
        return cls(**kw)

    def validate(self) -> None:
        if not self.data:
            raise TrainError("at least one --data HEAD=PATH is needed")
        checks = [
            (self.max_length >= 8, "max_length must be >= 8"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0.0 <= self.warmup_ratio < 1.0, "warmup_ratio must be in [0, 1)"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing must be in [0, 1)"),
            (0.0 < self.dev_fraction < 0.9, "dev_fraction must be in (0, 0.9)"),
            (self.patience >= 0, "patience must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise TrainError(msg)
        dev_heads = {s.head for s in self.dev}
        train_heads = {s.head for s in self.data}
        if dev_heads - train_heads:
            raise TrainError(f"--dev for head(s) {sorted(dev_heads - train_heads)} that have no --data")


# ---------------------------------------------------------------- data preparation


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


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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
            _log(f"note: {r['path']}: skipped {sum(r['skipped'].values())} row(s): {r['skipped']}")
            for line in r["skipped_examples"][:5]:
                _log(f"  {line}")
    empty = [name for name, ex in train.items() if not ex]
    if empty:
        raise TrainError(f"source(s) {empty} have no training rows left after the dev split")
    return Prepared(heads, train, dev, dev_texts, data_info, reports)


# ---------------------------------------------------------------- batching


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


# ---------------------------------------------------------------- evaluation


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
                preds[i] = stacked[names[dev[i].head]][j]
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
        truth = [labels[e.label] for e, _ in rows]
        pred = [labels[p] for _, p in rows]
        m = classification_metrics(truth, pred, labels)
        m["majority_baseline"] = {
            k: v for k, v in majority_baseline(truth, labels).items() if k in ("accuracy", "macro_f1")
        }
        by_source: dict[str, Any] = {}
        for src in sorted({e.source for e, _ in rows}):
            sub = [(labels[e.label], labels[p], e.slice) for e, p in rows if e.source == src]
            sm = classification_metrics([t for t, _, _ in sub], [q for _, q, _ in sub], labels)
            entry: dict[str, Any] = {k: sm[k] for k in ("n", "accuracy", "macro_f1")}
            slices = sorted({s for _, _, s in sub if s is not None})
            if slices:
                entry["slices"] = {}
                for sv in slices:
                    ss = [(t, q) for t, q, s in sub if s == sv]
                    slm = classification_metrics([t for t, _ in ss], [q for _, q in ss], labels)
                    entry["slices"][sv] = {k: slm[k] for k in ("n", "accuracy", "macro_f1")}
            by_source[src] = entry
        m["by_source"] = by_source
        out[name] = m
    return out


def monitor_value(metrics: dict[str, Any], monitor: str) -> float:
    if monitor == "mean":
        return float(np.mean([m["macro_f1"] for m in metrics.values()]))
    head, _, source = monitor.partition("/")
    if head not in metrics:
        raise TrainError(f"--monitor {monitor!r}: no head {head!r} in dev metrics")
    if not source:
        return float(metrics[head]["macro_f1"])
    if source not in metrics[head]["by_source"]:
        raise TrainError(f"--monitor {monitor!r}: head {head} has no dev source {source!r}")
    return float(metrics[head]["by_source"][source]["macro_f1"])


# ---------------------------------------------------------------- reports


def write_reports(report_dir: Path, metrics: dict[str, Any], curves: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for head, m in metrics.items():
        d = report_dir / head
        d.mkdir(parents=True, exist_ok=True)
        (d / "classification_report.json").write_text(json.dumps(m, indent=2) + "\n")
        labels, cm = m["labels"], np.asarray(m["confusion_matrix"])
        size = max(4.0, 0.45 * len(labels) + 2)
        fig, ax = plt.subplots(figsize=(size + 1, size))
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")  # fmt: skip
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{head}: dev acc {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}")
        fig.tight_layout()
        fig.savefig(d / "confusion_matrix.png", dpi=110)
        plt.close(fig)

        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        steps, losses = curves["loss_steps"], curves["head_loss"].get(head, [])
        if losses:
            a1.plot(steps[: len(losses)], losses, lw=0.8)
        a1.set_xlabel("step")
        a1.set_ylabel(f"{head} train loss (EMA)")
        ev = curves["evals"]
        a2.plot(
            [e["step"] for e in ev],
            [e["metrics"][head]["macro_f1"] for e in ev],
            marker="o",
            label="macro-F1",
        )
        a2.plot(
            [e["step"] for e in ev],
            [e["metrics"][head]["accuracy"] for e in ev],
            marker="s",
            label="accuracy",
        )
        a2.set_xlabel("step")
        a2.set_ylabel("dev")
        a2.legend()
        fig.suptitle(f"{head}: training curves")
        fig.tight_layout()
        fig.savefig(d / "training_curves.png", dpi=110)
        plt.close(fig)


# ---------------------------------------------------------------- main entry

PLAN_AT_STEP = 15
EVAL_COST_PER_ROW = 1 / 3  # forward-only on a dev row vs. forward+backward on a train row


def fit_time_budget(
    step: int,
    total: int,
    loop_seconds: float,
    elapsed: float,
    budget: float,
    dev_rows: int,
    batch_size: int,
    eval_every: int,
) -> int:
    """Largest total step count whose remaining steps and evaluations fit the time budget.

    The LR schedule is then re-planned to end there, so a slow (e.g. shared) machine gets a
    complete warm-up/decay cycle instead of being cut off at peak learning rate.
    """
    per_step = loop_seconds / max(1, step)
    per_eval = dev_rows / max(1, batch_size) * per_step * EVAL_COST_PER_ROW
    remaining = budget - elapsed
    every = max(1, eval_every)

    def fit_for(end: int) -> int:
        # Evaluations a schedule ending at `end` still runs: periodic ones before it + the final one.
        evals_left = 1 + max(0, (end - 1) // every - step // every)
        return max(step + 1, min(total, step + int((remaining - evals_left * per_eval) / per_step)))

    # Fewer steps mean fewer evaluations, which frees time for steps: settle the two.
    fit, previous = fit_for(total), total
    for _ in range(10):
        if fit == previous:
            break
        fit, previous = fit_for(fit), fit
    return min(fit, previous)


def _summary_line(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{h}: acc {m['accuracy']:.3f} F1 {m['macro_f1']:.3f}" for h, m in metrics.items())


def train(config: TrainConfig) -> Path:
    """Fine-tune and write a bundle at ``config.output``; returns its path.

    SIGTERM is treated like Ctrl-C (no partial bundle is left), also when started in the
    background where SIGINT is ignored.
    """
    previous: Any = None
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread: leave signal handling to the caller
        previous = None
    try:
        return _train(config)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _encoder_layers(encoder: Any) -> list[Any]:
    inner = getattr(encoder, "encoder", None)
    layers = getattr(inner, "layer", None)
    if layers is None:
        raise TrainError(f"cannot find transformer layers in {type(encoder).__name__} to freeze")
    return list(layers)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _train(config: TrainConfig) -> Path:
    import torch
    from tokenizers import Tokenizer
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    from streamer.bundle import HeadSpec
    from streamer.inference import pad_token_of
    from training.base_models import minilm_dir, resolve_base_model
    from training.export import ExportError, build_bundle, new_version
    from training.model import TINY_BERT, MultiHeadClassifier, load_encoder, random_encoder

    config.validate()
    out = Path(config.output)
    if out.exists() and not config.overwrite:
        raise TrainError(f"{out}: already exists (choose another --output or pass --overwrite)")
    started = time.monotonic()
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.threads > 0:
        torch.set_num_threads(config.threads)

    if config.base_model == RANDOM_TINY:
        model_dir, base_info = minilm_dir(), {"name": RANDOM_TINY, "sha256": None, "config": TINY_BERT}
    else:
        base = resolve_base_model(config.base_model)
        model_dir, base_info = base.path, {"name": base.name, "path": str(base.path), "sha256": base.sha256}
    tok_file = model_dir / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tok_file))
    tokenizer.enable_truncation(max_length=config.max_length)
    pad_id, _ = pad_token_of(tokenizer)
    if pad_id is None:
        raise TrainError(f"{tok_file}: no padding token ([PAD] or <pad>)")
    tokenizer.no_padding()

    def tokenize(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in tokenizer.encode_batch(texts)] if texts else []

    try:
        prep = prepare(config, tokenize)
    except DataError as exc:
        raise TrainError(str(exc)) from exc
    heads = [HeadSpec(h, labs) for h, labs in prep.heads]
    n_heads = len(heads)
    n_train = sum(len(v) for v in prep.train.values())
    _log(
        f"data: {n_train} train / {len(prep.dev)} dev rows; heads "
        + ", ".join(f"{h.name}({len(h.labels)})" for h in heads)
        + "; sources "
        + ", ".join(f"{k}={len(v)}" for k, v in sorted(prep.train.items()))
    )

    torch.manual_seed(config.seed)
    if config.base_model == RANDOM_TINY:
        encoder, hidden = random_encoder(TINY_BERT)
    else:
        encoder, hidden = load_encoder(model_dir)
    model = MultiHeadClassifier(encoder, hidden, heads, dropout=config.dropout)
    if config.freeze_embeddings:
        # the 30k x hidden word-embedding matrix dominates AdamW's per-step cost on CPU
        embeddings: Any = model.encoder
        for p in embeddings.get_input_embeddings().parameters():
            p.requires_grad_(False)
    if config.freeze_layers > 0:
        # lower layers change least in fine-tuning; freezing them shortens backward on CPU
        layers = _encoder_layers(model.encoder)
        if config.freeze_layers >= len(layers):
            raise TrainError(f"freeze_layers={config.freeze_layers} but the encoder has {len(layers)} layers")
        for layer in layers[: config.freeze_layers]:
            for p in layer.parameters():
                p.requires_grad_(False)

    head_params = [p for n, p in model.named_parameters() if n.startswith("heads.")]
    decay: list[Any] = []
    no_decay: list[Any] = []
    for n, p in model.named_parameters():
        if n.startswith("heads.") or not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay, "lr": config.lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": config.lr},
        {"params": head_params, "weight_decay": config.weight_decay, "lr": config.head_lr or config.lr},
    ]
    optimizer = torch.optim.AdamW(groups)
    steps_per_epoch = config.steps_per_epoch or max(1, math.ceil(n_train / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    warmup = int(total_steps * config.warmup_ratio)

    configured_total = total_steps
    plan = {"total": total_steps, "warmup": warmup}  # shrunk by fit_time_budget() on a slow machine

    def schedule(step: int) -> float:
        if step < plan["warmup"]:
            return (step + 1) / max(1, plan["warmup"])
        return max(0.0, (plan["total"] - step) / max(1, plan["total"] - plan["warmup"]))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    losses = []
    for h, spec in enumerate(heads):
        weight = None
        if config.class_weights:
            counts = np.bincount(
                [e.label for ex in prep.train.values() for e in ex if e.head == h], minlength=len(spec.labels)
            ).astype(float)
            w = counts.sum() / (len(counts) * np.maximum(counts, 1.0))
            weight = torch.tensor(w / w.mean(), dtype=torch.float32)
        losses.append(torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing))

    sampler = SourceSampler(prep.train, config.sampling_temperature, config.source_weights, config.seed)
    eval_every = config.eval_every or steps_per_epoch
    curves: dict[str, Any] = {"loss_steps": [], "head_loss": defaultdict(list), "evals": []}
    ema: dict[str, float] = {}
    best: tuple[float, int, dict[str, Any], dict[str, Any]] | None = None
    bad_evals = 0
    step = 0
    _log(
        f"training {total_steps} steps ({config.epochs} epochs x {steps_per_epoch}), batch {config.batch_size}, "
        f"eval every {eval_every} steps, {torch.get_num_threads()} threads"
    )
    bar = tqdm(total=total_steps, desc="train", unit="step", disable=not config.progress, dynamic_ncols=True)
    queue: list[list[Example]] = []
    loop_started = time.monotonic()
    last_plan = (0, loop_started)
    try:
        while step < total_steps:
            model.train()
            if not queue:
                queue = sampler.batches(config.batch_size, max(1, config.length_buckets))
            batch = queue.pop()
            ids, mask, labels = collate(batch, pad_id, n_heads)
            logits = model(ids, mask)
            total = torch.zeros(())
            for h, spec in enumerate(heads):
                sel = labels[h] >= 0
                if bool(sel.any()):
                    loss_h = losses[h](logits[spec.name][sel], labels[h][sel])
                    total = total + loss_h
                    lv = float(loss_h.detach())
                    ema[spec.name] = 0.98 * ema.get(spec.name, lv) + 0.02 * lv
            optimizer.zero_grad(set_to_none=True)
            total.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            curves["loss_steps"].append(step)
            for spec in heads:
                curves["head_loss"][spec.name].append(ema.get(spec.name, float("nan")))
            bar.update(1)
            bar.set_postfix({f"loss_{k}": f"{v:.3f}" for k, v in ema.items()}, refresh=False)
            if config.max_train_minutes is not None and (
                step == PLAN_AT_STEP or (step > PLAN_AT_STEP and step % max(10, configured_total // 20) == 0)
            ):
                now = time.monotonic()
                # speed since the last re-plan: the machine may be shared and its load changes
                recent = (now - last_plan[1]) / max(1, step - last_plan[0]) * step
                last_plan = (step, now)
                fitted = fit_time_budget(
                    step, configured_total, recent, now - started,
                    config.max_train_minutes * 60, len(prep.dev), config.batch_size, eval_every,
                )  # fmt: skip
                if fitted != plan["total"]:
                    bar.write(
                        f"time budget {config.max_train_minutes} min at "
                        f"{recent / step:.2f} s/step: schedule now ends at step {fitted}"
                    )
                    plan["total"] = total_steps = fitted
                    plan["warmup"] = min(
                        warmup, max(min(step, plan["warmup"]), int(fitted * config.warmup_ratio))
                    )
                    eval_every = min(config.eval_every or steps_per_epoch, fitted)
                    bar.total = fitted
            out_of_time = (
                config.max_train_minutes is not None
                and time.monotonic() - started > config.max_train_minutes * 60
            )
            if out_of_time:
                bar.write(
                    f"time budget of {config.max_train_minutes} min reached at step {step}: final evaluation"
                )
            if step % eval_every == 0 or step == total_steps or out_of_time:
                preds = predict_dev(model, prep.dev, pad_id, n_heads, config.eval_batch_size)
                metrics = dev_metrics(prep.heads, prep.dev, preds)
                value = monitor_value(metrics, config.monitor)
                curves["evals"].append({"step": step, "metrics": metrics, "monitor": value})
                improved = best is None or value > best[0] + 1e-6
                bar.write(
                    f"step {step}/{total_steps} dev {_summary_line(metrics)}  "
                    f"monitor({config.monitor}) {value:.4f}{' *' if improved else ''}"
                )
                if improved:
                    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    best = (value, step, metrics, state)
                    bad_evals = 0
                else:
                    bad_evals += 1
                    if bad_evals > config.patience:
                        bar.write(f"early stop: no dev improvement in {bad_evals} evaluations")
                        break
                if out_of_time:
                    break
    except KeyboardInterrupt:
        bar.close()
        _log("interrupted: no bundle written")
        raise
    bar.close()
    assert best is not None
    best_value, best_step, best_metrics, best_state = best
    model.load_state_dict(best_state)
    model.eval()
    train_seconds = time.monotonic() - started
    _log(f"best dev at step {best_step}: {_summary_line(best_metrics)} ({train_seconds / 60:.1f} min)")

    version = config.version or new_version()
    recipe = config.to_json()
    recipe["version"] = None  # a re-run gets its own version
    with tempfile.TemporaryDirectory(prefix="sentiwire-report-") as tmp:
        report_dir = Path(tmp) / "report"
        write_reports(report_dir, best_metrics, curves)
        (report_dir / "data.json").write_text(json.dumps(prep.load_reports, indent=2) + "\n")
        parity = copy.copy(prep.dev_texts)
        random.Random(config.seed).shuffle(parity)
        metrics_out = {
            h: {k: m[k] for k in ("n", "accuracy", "macro_f1", "majority_baseline", "by_source", "per_class")}
            for h, m in best_metrics.items()
        }
        try:
            path = build_bundle(
                model,
                tokenizer_file=tok_file,
                out_dir=out,
                name=config.name,
                version=version,
                max_length=config.max_length,
                base_model=base_info,
                parity_texts=parity[:128],
                agreement_texts=parity[128:2000],
                metrics=metrics_out,
                data=prep.data_info,
                recipe=recipe,
                history=[
                    {
                        "event": "train",
                        "version": version,
                        "best_step": best_step,
                        "steps": step,
                        "monitor": config.monitor,
                        "monitor_value": best_value,
                        "train_seconds": round(train_seconds, 1),
                        "evals": [{"step": e["step"], "monitor": e["monitor"]} for e in curves["evals"]],
                    }
                ],
                report_dir=report_dir,
                force=config.force,
                overwrite=config.overwrite,
            )
        except ExportError as exc:
            # keep the trained weights: re-exporting (e.g. with --force) must not need a re-train
            saved = out.with_name(f".{out.name}.failed-export-{version}.pt")
            torch.save({"state_dict": model.state_dict(), "recipe": recipe, "base_model": base_info}, saved)
            raise ExportError(f"{exc}\n(trained weights kept in {saved})") from exc
    _log(f"bundle written: {path} (version {version}, {(time.monotonic() - started) / 60:.1f} min total)")
    return path
