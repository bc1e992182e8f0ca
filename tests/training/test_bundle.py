"""Bundle verification and the shared inference path, on a real (tiny) exported bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from streamer.model.bundle import BundleError, load_bundle, read_manifest, write_manifest
from streamer.model.classifier import Classifier
from streamer.model.errors import InferenceError

pytestmark = pytest.mark.train


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_tiny_bundle_loads_and_lists_every_file(tiny_bundle: Path) -> None:
    b = load_bundle(tiny_bundle)
    assert b.version == "tiny-1"
    assert [h.name for h in b.heads] == ["sentiment", "topic"]
    assert b.heads[0].labels == ("negative", "neutral", "positive")
    assert set(b.manifest["files"]) >= {"model.onnx", "model.int8.onnx", "tokenizer.json"}
    assert "bundle.json" not in b.manifest["files"]
    assert b.manifest["export"]["parity_max_abs_diff"] < 1e-4
    assert b.onnx_path("int8").name == "model.int8.onnx"


@pytest.mark.parametrize("victim", ["model.onnx", "model.int8.onnx", "tokenizer.json"])
def test_missing_file_is_refused(bundle_copy: Path, victim: str) -> None:
    (bundle_copy / victim).unlink()
    with pytest.raises(BundleError, match=f"{victim}.*missing"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("victim", ["model.onnx", "tokenizer.json"])
def test_altered_file_is_refused(bundle_copy: Path, victim: str) -> None:
    with (bundle_copy / victim).open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=f"{victim}.*sha256 mismatch"):
        load_bundle(bundle_copy)
    load_bundle(bundle_copy, verify=False)  # existence-only check still passes


def test_manifest_problems_are_named(bundle_copy: Path) -> None:
    m = read_manifest(bundle_copy)
    bad = dict(m, format_version=2)
    (bundle_copy / "bundle.json").write_text(json.dumps(bad))
    with pytest.raises(BundleError, match="format_version"):
        load_bundle(bundle_copy)
    bad = dict(m, files={**m["files"], "../etc/passwd": "0" * 64})
    (bundle_copy / "bundle.json").write_text(json.dumps(bad))
    with pytest.raises(BundleError, match="not a path inside"):
        load_bundle(bundle_copy)
    (bundle_copy / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        load_bundle(bundle_copy)
    (bundle_copy / "bundle.json").unlink()
    with pytest.raises(BundleError, match="missing bundle manifest"):
        load_bundle(bundle_copy)


def test_duplicate_labels_refused(bundle_copy: Path) -> None:
    m = read_manifest(bundle_copy)
    m["heads"][0]["labels"] = ["negative", "negative", "positive"]
    with pytest.raises(BundleError, match="duplicate labels"):
        write_manifest(bundle_copy, m)


def test_symlinked_bundle_resolves_to_real_dir(tiny_bundle: Path, tmp_path: Path) -> None:
    link = tmp_path / "current"
    link.symlink_to(tiny_bundle)
    assert load_bundle(link).path == tiny_bundle.resolve()


def test_factory_makes_verified_versions(tiny_bundle_factory) -> None:  # type: ignore[no-untyped-def]
    a, b = tiny_bundle_factory("v2"), tiny_bundle_factory("v3")
    assert load_bundle(a).version == "v2"
    assert load_bundle(b).version == "v3"


def test_encode_pads_to_batch_longest_and_flags_truncation(tiny_bundle: Path) -> None:
    clf = Classifier(load_bundle(tiny_bundle))
    enc = clf.encode(["short", "a somewhat longer sentence here"])
    assert enc.input_ids.dtype == np.int64
    assert enc.attention_mask.dtype == np.int64
    assert enc.input_ids.shape[1] == int(enc.lengths.max()) < 64
    assert enc.lengths.tolist() == enc.attention_mask.sum(1).tolist()
    assert not enc.truncated.any()
    long = clf.encode(["word " * 500, "x"])
    assert long.input_ids.shape[1] == 64
    assert long.truncated.tolist() == [True, False]


def test_predictions_are_probabilities_per_head(tiny_bundle: Path) -> None:
    b = load_bundle(tiny_bundle)
    for variant in ("fp32", "int8"):
        clf = Classifier(b, variant=variant)  # type: ignore[arg-type]
        assert clf.provider == "CPUExecutionProvider"
        preds = clf.predict(["Profit warning hits shares", "Record revenue", "ok"])
        assert len(preds) == 3
        for p in preds:
            for head in b.heads:
                hp = p[head.name]
                assert set(hp.scores) == set(head.labels)
                assert abs(sum(hp.scores.values()) - 1.0) < 1e-5
                assert hp.label == max(hp.scores, key=hp.scores.__getitem__)
                assert hp.score == hp.scores[hp.label]
    assert Classifier(b).predict([]) == []


def test_batch_composition_does_not_change_scores(tiny_bundle: Path) -> None:
    clf = Classifier(load_bundle(tiny_bundle))
    alone = clf.infer(clf.encode(["Shares fell"]))["sentiment"][0]
    padded = clf.infer(clf.encode(["Shares fell", "word " * 60]))["sentiment"][0]
    np.testing.assert_allclose(alone, padded, atol=1e-5)


def test_gpu_device_without_provider_raises(tiny_bundle: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider present on this machine")
    with pytest.raises(InferenceError, match="CUDAExecutionProvider"):
        Classifier(load_bundle(tiny_bundle), device="cuda")
    assert Classifier(load_bundle(tiny_bundle), device="auto").provider == "CPUExecutionProvider"
