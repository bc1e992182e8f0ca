"""The reference profile for drift: written by the real export path, the daemon's counting code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from streamer.drift import BINS, PROFILE_KEY, Profile, profile_of
from streamer.enums import Variant
from streamer.model.bundle import load_bundle, read_manifest
from streamer.model.classifier import Classifier
from training.profile import build_profile, store_profile
from training.testing import TINY_HEADS


def test_export_writes_a_profile_that_fits_the_heads(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)  # verified: the profile is part of the hashed manifest
    prof = profile_of(bundle.manifest, {h.name: h.labels for h in bundle.heads})
    assert prof is not None
    assert prof.messages >= 3  # the export's dev (parity) texts
    assert set(prof.heads) == set(TINY_HEADS)
    for name, head in prof.heads.items():
        assert head.labels == TINY_HEADS[name]
        for shares in (head.label_mix, head.confidence, head.entropy):
            assert sum(shares) == pytest.approx(1.0)
        assert len(head.confidence) == len(head.entropy) == BINS
    assert 0.0 <= prof.truncation_rate <= 1.0
    assert prof.unknown_share is not None  # the MiniLM tokenizer has [UNK]


def test_profile_counts_truncation_and_unknown_tokens(tiny_bundle: Path) -> None:
    clf = Classifier(load_bundle(tiny_bundle), variant=Variant.FP32)
    short = ["Shares fell.", "Profit rose."]
    long = [" ".join(["Revenue rose sharply while margins narrowed."] * 30)] * 2
    prof = build_profile(clf, short + long)
    assert prof.messages == 4
    assert prof.truncation_rate == pytest.approx(0.5)
    assert prof.unknown_share == 0.0
    odd = build_profile(clf, ["\u2603\u2603 \U0001f680 rally"])  # characters MiniLM's vocabulary lacks
    assert odd.unknown_share is not None
    assert odd.unknown_share > 0.0


def test_store_profile_rewrites_a_verified_manifest(
    tiny_bundle_factory: Callable[..., Path], tmp_path: Path
) -> None:
    bundle = tiny_bundle_factory("prof-1", tmp_path / "b")
    store_profile(bundle, ["Fed holds rates.", "Oil jumps after OPEC cut."] * 5)
    loaded = load_bundle(bundle, verify=True)
    prof = Profile.from_json(read_manifest(bundle)[PROFILE_KEY])
    assert prof.messages == 10
    assert loaded.version == "prof-1"
