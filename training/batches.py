"""Training examples and batches: source-mixing draws and padding for torch.

``SourceSampler`` draws batches across sources with fixed shares (``shares()``);
``collate`` pads them; ``label_masks`` and ``teacher_targets`` give the loss each row's
allowed labels and its teacher logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Example:
    ids: list[int]
    head: int
    label: int
    source: str
    slice: str | None
    allowed: tuple[int, ...] | None = None  # label indices this row's source has (None: all)
    soft: Any = None  # the teacher's logits for this row's head (np.ndarray), when distilling


class SourceSampler:
    """Batches mixing sources with probability ~ size**T * weight, each source cycled without replacement.

    T=1 is proportional to size, T=0 uniform over sources (then the weights are the shares);
    0.5 keeps small sets (PhraseBank) from being drowned by large ones without overfitting them.
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

    def shares(self) -> dict[str, float]:
        """Each source's expected share of the training rows drawn."""
        return {n: float(p) for n, p in zip(self.names, self.probs, strict=True)}

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

    def state(self) -> dict[str, Any]:
        """Where every source's cycle stands and the generator's state (checkpoints)."""
        return {
            "rng": self.rng.bit_generator.state,
            "orders": {n: o.tolist() for n, o in self.orders.items()},
            "pos": dict(self.pos),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.orders = {n: np.asarray(o, dtype=np.int64) for n, o in state["orders"].items()}
        self.pos = {n: int(p) for n, p in state["pos"].items()}


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


def label_masks(batch: Sequence[Example], sizes: Sequence[int]) -> list[Any]:
    """Per head, a bool ``[batch, labels]`` mask of the labels each row's source has."""
    import torch

    masks = [torch.ones((len(batch), n), dtype=torch.bool) for n in sizes]
    for i, e in enumerate(batch):
        if e.allowed is not None:
            masks[e.head][i] = False
            masks[e.head][i, list(e.allowed)] = True
    return masks


def teacher_targets(batch: Sequence[Example], sizes: Sequence[int]) -> list[tuple[Any, Any]]:
    """Per head, the teacher logits ``[batch, labels]`` and which rows have them."""
    import torch

    out = []
    for h, n in enumerate(sizes):
        logits = torch.zeros((len(batch), n), dtype=torch.float32)
        has = torch.zeros(len(batch), dtype=torch.bool)
        for i, e in enumerate(batch):
            if e.head == h and e.soft is not None:
                logits[i] = torch.from_numpy(np.asarray(e.soft, dtype=np.float32))
                has[i] = True
        out.append((logits, has))
    return out
