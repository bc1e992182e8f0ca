"""The new labeled rows of a retrain: checked against the served heads, copied beside the
versions, and split into training rows and a holdout no training row duplicates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from training.holdout import write_csv
from training.retrain.errors import RetrainError

if TYPE_CHECKING:
    from streamer.model.bundle import Bundle
    from training.data import LabeledSet, SourceSpec


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def split_holdout(
    texts: Sequence[str], labels: Sequence[str], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Stratified (train, holdout) indices; classes with one row stay in train."""
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise RetrainError(f"holdout fraction must be in (0, 1), got {fraction}")
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    pool = [i for i, lab in enumerate(labels) if counts[lab] >= 2]
    keep = [i for i, lab in enumerate(labels) if counts[lab] < 2]
    n_hold = round(len(pool) * fraction)
    if n_hold < len(set(labels[i] for i in pool)) or len(pool) - n_hold < 1:
        raise RetrainError(
            f"too few new rows ({len(texts)}) to carve a {fraction:.0%} holdout; pass --holdout"
        )
    tr, ho = train_test_split(pool, test_size=n_hold, random_state=seed, stratify=[labels[i] for i in pool])
    return sorted([*tr, *keep]), sorted(ho)


@dataclass
class PreparedData:
    train: list[SourceSpec]
    holdout: dict[str, list[LabeledSet]]
    notes: list[str] = field(default_factory=list)
    given: set[str] = field(default_factory=set)  # heads whose holdout came from --holdout


def prepare_data(
    bundle: Bundle,
    new: Sequence[SourceSpec],
    holdout: Sequence[SourceSpec],
    out: Path,
    *,
    fraction: float,
    seed: int,
) -> PreparedData:
    """Validate new rows against the bundle's labels, copy them under ``out``, carve a holdout if none given.

    Rows whose label the served heads do not know are skipped and reported (a retrain never
    grows a head's label set silently).
    """
    from training.data import SourceSpec, load_source

    labels = {h.name: list(h.labels) for h in bundle.heads}
    notes: list[str] = []

    def load(spec: SourceSpec, role: str) -> LabeledSet:
        if spec.head not in labels:
            raise RetrainError(
                f"{role} {spec.path}: head {spec.head!r} is not served (bundle has {sorted(labels)})"
            )
        s = load_source(spec, allowed_labels=labels[spec.head])
        if s.report.n_skipped:
            notes.append(f"{spec.path}: skipped {s.report.n_skipped} row(s): {dict(s.report.skipped)}")
        return s

    given: dict[str, list[LabeledSet]] = {}
    for spec in holdout:
        given.setdefault(spec.head, []).append(load(spec, "--holdout"))
    train: list[SourceSpec] = []
    held: dict[str, list[LabeledSet]] = {h: list(v) for h, v in given.items()}
    loaded = [load(spec, "--data") for spec in new]
    splits: list[tuple[list[int], list[int]]] = []
    for s in loaded:
        if s.spec.head in given:
            splits.append((list(range(len(s.texts))), []))
        else:
            splits.append(split_holdout(s.texts, s.labels, fraction, seed))
    # A text scored in the holdout never also trains the candidate (exact match after case/space folding).
    held_keys: dict[str, set[str]] = {}
    for s, (_, ho_idx) in zip(loaded, splits, strict=True):
        held_keys.setdefault(s.spec.head, set()).update(_key(s.texts[i]) for i in ho_idx)
    for h, sets in given.items():
        held_keys.setdefault(h, set()).update(_key(t) for ls in sets for t in ls.texts)
    for k, (spec, s, (tr_all, ho_idx)) in enumerate(zip(new, loaded, splits, strict=True)):
        name = spec.display_name
        tr_idx = [i for i in tr_all if _key(s.texts[i]) not in held_keys.get(spec.head, set())]
        if len(tr_idx) < len(tr_all):
            notes.append(
                f"{spec.path}: {len(tr_all) - len(tr_idx)} training row(s) dropped: same text is in the holdout"
            )
        path = out / f"{k:02d}-{spec.head}-{name}.train.csv"
        write_csv(path, [s.texts[i] for i in tr_idx], [s.labels[i] for i in tr_idx])
        train.append(SourceSpec(head=spec.head, path=str(path.resolve()), name=f"{name}@retrain"))
        if ho_idx:
            hpath = out / f"{k:02d}-{spec.head}-{name}.holdout.csv"
            write_csv(hpath, [s.texts[i] for i in ho_idx], [s.labels[i] for i in ho_idx])
            held.setdefault(spec.head, []).append(load_source(SourceSpec(head=spec.head, path=str(hpath))))
    for head, sets in held.items():
        for s in sets:
            notes.append(f"holdout {head}: {len(s.texts)} rows from {s.spec.path}")
    return PreparedData(train, held, notes, set(given))


def rebase_recipe_data(specs: Sequence[SourceSpec], data_root: Path | None) -> list[SourceSpec]:
    """Recipe paths as they resolve here (relative ones against ``data_root``); missing files are an error."""
    out = []
    missing = []
    for spec in specs:
        p = Path(spec.path)
        if not p.is_absolute() and data_root is not None:
            p = data_root / p
        if not p.is_file():
            missing.append(str(p))
        out.append(dataclasses.replace(spec, path=str(p)))
    if missing:
        raise RetrainError(
            f"recipe data not found: {missing}; pass --data-root to resolve relative recipe paths, "
            "or --no-recipe-data to train on the new data only"
        )
    return out
