"""OpenVINO gives ORT's labels on the tiny bundle; the load-time agreement gate refuses a runtime
that disagrees with fp32 ONNX Runtime and names the head."""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from streamer.enums import Device, Precision, Variant
from streamer.model import classifier as classifier_module
from streamer.model.bundle import load_bundle
from streamer.model.classifier import Classifier
from streamer.model.errors import InferenceError
from streamer.model.gate import FIXED_TEXTS, gate_texts, run_gate
from streamer.model.openvino_runtime import LENGTH_STEPS, OpenVinoRuntime, padded_length
from streamer.model.runtime import OrtRuntime, Runtime
from streamer.model.tokenizer import Encoded

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="openvino not installed (the [openvino] extra)"
)
TEXTS = [*FIXED_TEXTS, "A much longer text " * 40]


class FlipHead:
    """A runtime that swaps the two best labels of one head on every other row."""

    def __init__(self, inner: Runtime, head: int) -> None:
        self.inner, self.head = inner, head
        self.provider = "fake"

    def run(self, enc: Encoded) -> list[np.ndarray]:
        out = [x.copy() for x in self.inner.run(enc)]
        x = out[self.head]
        for i in range(0, len(x), 2):
            x[i] = -x[i]
        return out


def test_gate_texts_are_the_bundle_holdout(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    texts = gate_texts(bundle, limit=50)
    assert 0 < len(texts) <= 50
    assert len(set(texts)) == len(texts)
    no_holdout = load_bundle(tiny_bundle)
    object.__setattr__(no_holdout, "manifest", {**bundle.manifest, "holdout": {}})
    assert gate_texts(no_holdout) == list(FIXED_TEXTS)


def test_gate_refuses_a_runtime_that_flips_labels(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    clf = Classifier(bundle, runtime="onnxruntime")
    fp32 = OrtRuntime(bundle, bundle.onnx_path(Variant.FP32), device=Device.CPU)
    assert run_gate(bundle, clf.encode, fp32, "same", texts=TEXTS) == {"sentiment": 1.0, "topic": 1.0}
    with pytest.raises(
        InferenceError, match=r"flipped: head 'topic' agrees with the fp32 ONNX Runtime labels"
    ):
        run_gate(bundle, clf.encode, FlipHead(fp32, head=1), "flipped", texts=TEXTS)


def test_classifier_runs_the_gate_at_load(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A precision the bundle did not check (here bf16, faked) is refused by the Classifier itself,
    so serve, predict, evaluate and retrain all refuse it."""
    bundle = load_bundle(tiny_bundle)
    real = classifier_module.probe()
    monkeypatch.setattr(
        classifier_module, "probe", lambda: replace(real, openvino=True, cpu_flags=frozenset({"amx_bf16"}))
    )

    def flipping(b: object, choice: object, **kw: object) -> Runtime:
        return FlipHead(OrtRuntime(bundle, bundle.onnx_path(Variant.FP32), device=Device.CPU), head=0)

    monkeypatch.setattr(classifier_module, "build_runtime", flipping)
    with pytest.raises(InferenceError, match=r"model\.precision=bf16: head 'sentiment' agrees"):
        Classifier(bundle, runtime="auto", precision="bf16")
    clf = Classifier(
        bundle, runtime="auto", precision="bf16", gate=False
    )  # the bench measures without refusing
    assert clf.agreement is None


def test_padded_length_steps() -> None:
    assert padded_length(5, (16, 32, 64), 64) == 16
    assert padded_length(16, (16, 32, 64), 64) == 16
    assert padded_length(40, (16, 32, 64), 48) == 48  # capped at the bundle's max_length
    assert padded_length(70, (16, 32, 64), 512) == 70  # past the last step: as is


@needs_openvino
@pytest.mark.parametrize("precision", [Precision.FP32, Precision.INT8])
def test_openvino_labels_equal_onnxruntime(tiny_bundle: Path, precision: Precision) -> None:
    bundle = load_bundle(tiny_bundle)
    ort_clf = Classifier(bundle, runtime="onnxruntime", precision=precision)
    ov_clf = Classifier(bundle, runtime="openvino", precision=precision, workers=2, intra_op_threads=1)
    assert ov_clf.provider == "OpenVINO CPU"
    assert ov_clf.agreement == {"sentiment": 1.0, "topic": 1.0}  # the gate ran at load
    want, got = ort_clf.predict(TEXTS), ov_clf.predict(TEXTS)
    assert [{h: p.label for h, p in row.items()} for row in got] == [
        {h: p.label for h, p in row.items()} for row in want
    ]
    for a, b in zip(want, got, strict=True):
        for head in a:
            assert abs(a[head].score - b[head].score) < 1e-3
    assert [r["topic"].label for r in ov_clf.run_batch(TEXTS).predictions] == [r["topic"].label for r in want]
    # padding the sequence axis up to fixed lengths changes no logits (mean pooling over real tokens)
    stepped = OpenVinoRuntime(
        bundle, bundle.onnx_path(ov_clf.variant), precision=precision, length_steps=LENGTH_STEPS
    )
    enc = ov_clf.encode(TEXTS[:5])
    for a, b in zip(ov_clf.runtime.run(enc), stepped.run(enc), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


@needs_openvino
def test_openvino_run_is_thread_safe(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    clf = Classifier(bundle, runtime="openvino", workers=2, intra_op_threads=1)
    want = clf.infer(clf.encode(TEXTS))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                got = clf.infer(clf.encode(TEXTS))
                for head, p in want.items():
                    np.testing.assert_allclose(got[head], p, atol=1e-5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
