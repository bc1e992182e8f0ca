"""The reference profile a bundle keeps for drift monitoring (``drift_profile`` in bundle.json).

Built at export on the dev texts, through the served inference path (fp32 ``Classifier``) and
the same counting code as the daemon's window (``streamer.drift.Counts``), so the daemon
compares like with like. ``store_profile`` adds one to an existing bundle (older bundles, or
a reference on other texts) through the real manifest writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from streamer.drift import PROFILE_KEY, Counts, Profile
from streamer.enums import Variant
from streamer.model.bundle import load_bundle, read_manifest, write_manifest
from streamer.model.classifier import Classifier

BATCH = 64


def build_profile(clf: Classifier, texts: Sequence[str]) -> Profile:
    """The profile of ``texts`` as ``clf`` labels them (every text counted for unknown tokens)."""
    counts = Counts({h.name: h.labels for h in clf.bundle.heads})
    pool = [t for t in texts if t.strip()]
    for start in range(0, len(pool), BATCH):
        batch = pool[start : start + BATCH]
        result = clf.run_batch(batch)
        unknown = result.unknown or [0] * len(batch)  # empty: the tokenizer has no unknown token
        tokens = result.tokens or [0] * len(batch)
        for pred, trunc, unk, n in zip(result.predictions, result.truncated, unknown, tokens, strict=True):
            counts.add(counts.features(pred), trunc, unk, n)
    return counts.profile()


def profile_json(bundle_dir: Path, texts: Sequence[str]) -> dict[str, object]:
    """The ``drift_profile`` entry for the (possibly staged, unverified) bundle at ``bundle_dir``."""
    clf = Classifier(load_bundle(bundle_dir, verify=False), variant=Variant.FP32)
    return build_profile(clf, texts).to_json()


def store_profile(bundle_dir: Path, texts: Sequence[str]) -> Path:
    """Rewrite ``bundle_dir``'s manifest with a profile of ``texts`` (same version, re-hashed)."""
    manifest = read_manifest(bundle_dir)
    manifest[PROFILE_KEY] = profile_json(bundle_dir, texts)
    write_manifest(Path(bundle_dir), manifest)
    return Path(bundle_dir)
