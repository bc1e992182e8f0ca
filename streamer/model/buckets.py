"""Length bucketing inside a batch. Pure: index arithmetic on token lengths, no model.

Texts are grouped by token length so a few long texts do not make every short one pay for
their padding (the bench reports the padding waste).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamer.model.tokenizer import Encoded

# Fixed cost of one runtime call, in padded-token equivalents. Splitting a batch pays it
# once more per extra call; 64 keeps tiny buckets from costing more than the padding they save.
CALL_OVERHEAD_TOKENS = 64


def plan_buckets(
    lengths: Sequence[int], *, call_overhead_tokens: int = CALL_OVERHEAD_TOKENS
) -> list[np.ndarray]:
    """Split row indices into length-sorted buckets minimising total model work.

    Cost of a bucket = rows x its longest length (the padded tokens fed to the model)
    + ``call_overhead_tokens``. After sorting by length the best split into contiguous runs
    is an exact O(n^2) dynamic programme (vectorised per row; n is a batch, <= a few hundred).
    Every index appears exactly once; uniform lengths stay one bucket.
    """
    n = len(lengths)
    if n == 0:
        return []
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lens, kind="stable")
    srt = np.maximum(lens[order], 1).astype(np.float64)
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    starts = np.arange(n)
    for j in range(1, n + 1):
        # bucket = sorted rows i..j-1, padded to srt[j-1]
        costs = best[:j] + (j - starts[:j]) * srt[j - 1] + call_overhead_tokens
        i = int(np.argmin(costs))
        best[j], cut[j] = costs[i], i
    bounds = []
    j = n
    while j > 0:
        bounds.append((int(cut[j]), j))
        j = int(cut[j])
    return [order[a:b] for a, b in reversed(bounds)]


def padding_waste(lengths: Sequence[int], buckets: Sequence[np.ndarray] | None = None) -> float:
    """Share of fed tokens that are padding (one bucket = the whole batch when None)."""
    lens = np.asarray(lengths, dtype=np.int64)
    if lens.size == 0:
        return 0.0
    groups = [np.arange(lens.size)] if buckets is None else list(buckets)
    padded = sum(int(len(g) * lens[g].max()) for g in groups if len(g))
    return 0.0 if padded == 0 else 1.0 - float(lens.sum()) / padded


def take_rows(enc: Encoded, rows: np.ndarray) -> Encoded:
    """Rows of a right-padded batch, trimmed to the longest of them."""
    width = max(int(enc.lengths[rows].max()), 1) if len(rows) else 0
    mask = enc.attention_mask[rows]
    if mask[:, width:].any():  # not right-padded: keep the full width rather than cut tokens
        width = mask.shape[1]
    return Encoded(
        input_ids=np.ascontiguousarray(enc.input_ids[rows, :width]),
        attention_mask=np.ascontiguousarray(mask[:, :width]),
        truncated=enc.truncated[rows],
        lengths=enc.lengths[rows],
    )
