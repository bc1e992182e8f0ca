"""The real texts every benchmark uses, from ../shared/data (same seed, same order every run)."""

from __future__ import annotations

from pathlib import Path

from sentiwire.replay import Item, load_items

SHORT_KINDS = ("phrasebank", "tweets", "topic")


def short_items(data_dir: Path, seed: int = 0) -> list[Item]:
    """Headlines and finance tweets (the issue's "short texts"), interleaved by kind."""
    per_kind = [load_items(data_dir, kind, seed=seed) for kind in SHORT_KINDS]
    n = min(len(items) for items in per_kind)
    return [items[i] for i in range(n) for items in per_kind]


def load_texts(data_dir: Path, seed: int = 0) -> dict[str, list[str]]:
    """``short``, ``mixed`` (with long BBC articles) and each kind on its own."""
    out = {
        kind: [it.text for it in load_items(data_dir, kind, seed=seed)]
        for kind in ("phrasebank", "tweets", "bbc")
    }
    out["short"] = [it.text for it in short_items(data_dir, seed)]
    out["mixed"] = [it.text for it in load_items(data_dir, "mixed", seed=seed)]
    return out
