"""How often texts repeat as the response cache sees them (tokenizer-normalized), per replay source.

``python -m bench.repeats --data-dir ../shared/data``: prints one line per source.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tokenizers import Tokenizer

from sentiwire.paths import default_data_dir
from sentiwire.replay import SOURCE_CHOICES, load_items
from training.base_models import minilm_dir


def repeat_share(texts: list[str], tok: Tokenizer) -> tuple[int, int]:
    """(texts, distinct texts after the tokenizer's normalizer)."""
    norm = tok.normalizer
    seen = {norm.normalize_str(t) if norm is not None else t for t in texts}
    return len(texts), len(seen)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=default_data_dir())
    args = ap.parse_args(argv)
    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    print("| source | texts | distinct | repeats |\n|---|---:|---:|---:|")
    for source in SOURCE_CHOICES:
        n, distinct = repeat_share([it.text for it in load_items(args.data_dir, source)], tok)
        print(f"| {source} | {n} | {distinct} | {(n - distinct) / n:.2%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
