"""The fixed holdout a bundle keeps: its dev rows, written at export, read back by retrain.

``sentiwire retrain`` must score every head before a promotion, also the heads the new data
has no labels for; those are scored on the served bundle's own dev rows, which the candidate
(trained from the same recipe and seed, so the same dev split) never trains on. Layout::

    holdout/<head>-<k>.csv     text,label: the dev rows of the head's k-th source
    bundle.json["holdout"]     {head: [{"source", "path", "rows", "sha256"}, ...]}

The files are ordinary bundle files (hashed in ``files`` and verified on load); the listing
repeats each sha256 so a copied or hand-edited listing cannot point at other rows.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.errors import UsageError
from streamer.model.bundle import sha256_file

if TYPE_CHECKING:
    from streamer.model.bundle import Bundle
    from training.data import SourceSpec

HOLDOUT_DIR = "holdout"
MANIFEST_KEY = "holdout"

# head -> source name -> (texts, labels)
HoldoutRows = Mapping[str, Mapping[str, tuple[Sequence[str], Sequence[str]]]]


class HoldoutError(UsageError):
    """A bundle's holdout listing does not match its verified files."""


def write_csv(path: Path, texts: Sequence[str], labels: Sequence[str]) -> None:
    """``text,label`` rows: the format every recipe source reads back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels, strict=True))


def write_holdout(bundle_dir: Path, rows: HoldoutRows) -> dict[str, list[dict[str, Any]]]:
    """Write the files under ``bundle_dir/holdout``; returns the ``bundle.json["holdout"]`` listing."""
    listing: dict[str, list[dict[str, Any]]] = {}
    for head, sources in rows.items():
        for k, (source, (texts, labels)) in enumerate(sources.items()):
            if not texts:
                continue
            rel = f"{HOLDOUT_DIR}/{head}-{k:02d}.csv"
            write_csv(bundle_dir / rel, texts, labels)
            listing.setdefault(head, []).append(
                {"source": source, "path": rel, "rows": len(texts), "sha256": sha256_file(bundle_dir / rel)}
            )
    return listing


def read_holdout(bundle: Bundle) -> dict[str, list[SourceSpec]]:
    """The served bundle's holdout per head as sources; ``{}`` for bundles exported without one.

    Each listed file must be a file of the (verified) bundle with the listed sha256.
    """
    from training.data import SourceSpec

    listing = bundle.manifest.get(MANIFEST_KEY) or {}
    files = bundle.manifest.get("files") or {}
    where = f"{bundle.path}/bundle.json {MANIFEST_KEY}"
    if not isinstance(listing, dict):
        raise HoldoutError(f"{where}: must be an object of head -> files")
    out: dict[str, list[SourceSpec]] = {}
    for head, entries in listing.items():
        for entry in entries if isinstance(entries, list) else [entries]:
            rel = entry.get("path") if isinstance(entry, dict) else None
            if not isinstance(rel, str) or files.get(rel) is None or files[rel] != entry.get("sha256"):
                raise HoldoutError(f"{where}: {head} entry {entry!r} is not a verified file of the bundle")
            out.setdefault(head, []).append(
                SourceSpec(head=head, path=str(bundle.path / rel), name=str(entry.get("source") or rel))
            )
    return out
