from __future__ import annotations

import numpy as np
import pytest

from streamer.batching import BatchAccumulator
from streamer.model.buckets import padding_waste, plan_buckets, take_rows
from streamer.model.tokenizer import Encoded


def test_batch_closes_at_max_size() -> None:
    acc: BatchAccumulator[int] = BatchAccumulator(max_size=3, max_wait_s=10)
    assert acc.add(1, now=0.0) is None
    assert acc.add(2, now=0.1) is None
    assert acc.add(3, now=0.2) == [1, 2, 3]
    assert len(acc) == 0
    assert acc.deadline() is None


def test_batch_closes_at_max_wait_from_first_item() -> None:
    acc: BatchAccumulator[str] = BatchAccumulator(max_size=100, max_wait_s=0.05)
    acc.add("a", now=1.0)
    acc.add("b", now=1.04)
    assert acc.deadline() == pytest.approx(1.05)
    assert not acc.due(1.049)
    assert acc.due(1.05)
    assert acc.take() == ["a", "b"]
    acc.add("c", now=2.0)
    assert acc.deadline() == pytest.approx(2.05)  # the clock restarts with the next batch


def test_buckets_cover_every_row_once_and_cut_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(8, 20, 56), rng.integers(200, 256, 8)]).tolist()
    rng.shuffle(lengths)
    buckets = plan_buckets(lengths)
    flat = np.sort(np.concatenate(buckets))
    assert flat.tolist() == list(range(len(lengths)))
    assert len(buckets) >= 2
    for b in buckets:
        assert len(b) >= 1
    before, after = padding_waste(lengths), padding_waste(lengths, buckets)
    assert before > 0.7  # one 250-token text makes 56 short ones pad to 250
    assert after < 0.25


def test_uniform_lengths_stay_one_bucket() -> None:
    assert len(plan_buckets([30] * 32)) == 1
    assert plan_buckets([]) == []


def test_take_rows_trims_to_longest_of_the_rows() -> None:
    ids = np.array([[1, 2, 3, 4, 0, 0], [5, 6, 0, 0, 0, 0], [7, 8, 9, 0, 0, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    enc = Encoded(ids, mask, np.array([False, False, True]), mask.sum(axis=1))
    sub = take_rows(enc, np.array([1, 2]))
    assert sub.input_ids.tolist() == [[5, 6, 0], [7, 8, 9]]
    assert sub.attention_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert sub.truncated.tolist() == [False, True]


def test_take_rows_never_cuts_left_padded_tokens() -> None:
    ids = np.array([[0, 0, 1, 2], [3, 4, 5, 6]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    enc = Encoded(ids, mask, np.zeros(2, dtype=bool), mask.sum(axis=1))
    sub = take_rows(enc, np.array([0]))
    assert sub.input_ids.tolist() == [[0, 0, 1, 2]]


def _cost(lengths: list[int], buckets: list[np.ndarray], overhead: int) -> int:
    lens = np.asarray(lengths)
    return sum(len(b) * int(lens[b].max()) + overhead for b in buckets)


def test_buckets_are_optimal_against_brute_force() -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(1, 9))
        lengths = rng.integers(1, 300, n).tolist()
        srt = sorted(lengths)
        best = None
        for mask in range(1 << (n - 1)):  # every split of the sorted rows into contiguous runs
            cost, start = 0, 0
            for k in range(1, n + 1):
                if k == n or mask >> (k - 1) & 1:
                    cost += (k - start) * srt[k - 1] + 64
                    start = k
            best = cost if best is None else min(best, cost)
        assert _cost(lengths, plan_buckets(lengths, call_overhead_tokens=64), 64) == best
