"""A source's fixed held-out part (``?holdout=0.3``): the same rows in every run and command.

Training keeps the part out and scores it as the source's dev set; ``sentiwire evaluate``
reads just that part with ``?holdout=0.3&part=holdout`` (or the rest with ``part=train``).
The choice depends only on the rows' content, never on a seed or the row order: within each
stratum (label, plus the slice column's value when one is given) rows are ranked by a hash of
their normalised text and the first ``round(fraction * n)`` are held out. So a ``where``
filter on the stratifying column selects exactly the held-out rows of that stratum, e.g.
``?where=source:amazon&holdout=0.3&part=holdout`` is the amazon share of the UCI held-out part.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

PARTS = ("train", "holdout")


def text_key(text: str) -> str:
    """Case- and whitespace-insensitive identity of a text (the dedupe rule)."""
    return " ".join(text.lower().split())


def holdout_rows(
    texts: Sequence[str], labels: Sequence[str], strata: Sequence[str] | None, fraction: float
) -> set[int]:
    """Indices of the held-out rows: ``round(fraction * n)`` of every (label, stratum) group."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        groups[(lab, strata[i] if strata is not None else "")].append(i)
    out: set[int] = set()
    for rows in groups.values():
        ranked = sorted(rows, key=lambda i: (hashlib.sha256(text_key(texts[i]).encode()).digest(), i))
        out.update(ranked[: round(fraction * len(rows))])
    return out
