"""bench/int8_static.py: the static QDQ graph it measures is int8 where it should be, and runs."""

from __future__ import annotations

from pathlib import Path

import onnx

from bench.int8_static import calibration_feeds, quantize, rate_and_labels
from streamer.model.bundle import load_bundle
from streamer.model.gate import agreement

TEXTS = [
    f"Shares of company {i} {'rose' if i % 2 else 'fell'} after results {'beat' * (i % 5)}" for i in range(64)
]


def test_calibration_batches_are_padded_to_max_length(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    feeds = list(calibration_feeds(bundle, TEXTS[:40], 16))
    assert len(feeds) == 2  # the ragged tail is left out: the histogram calibrators need one shape
    for feed in feeds:
        assert feed["input_ids"].shape == (16, bundle.max_length)
        assert feed["attention_mask"].shape == (16, bundle.max_length)
        assert feed["attention_mask"][:, -1].sum() == 0  # padding is masked


def test_static_graph_quantizes_the_encoder_and_keeps_the_heads_fp32(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    bundle = load_bundle(tiny_bundle)
    dst = tmp_path / "static.onnx"
    quantize(bundle, "minmax", TEXTS, dst)
    graph = onnx.load(str(dst)).graph
    quantized = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    encoder_weights = [n.input[1] for n in graph.node if n.op_type == "MatMul" and "/encoder/" in n.name]
    assert any(op.op_type == "QuantizeLinear" for op in graph.node)
    heads = [n for n in graph.node if n.op_type == "Gemm" and "/encoder/" not in n.name]
    assert heads
    assert all(not any(i.endswith("_DequantizeLinear_Output") for i in n.input) for n in heads)
    assert encoder_weights
    assert any(w.endswith("_quantized") for w in quantized)
    rate, got = rate_and_labels(bundle, dst, TEXTS)
    _, ref = rate_and_labels(bundle, tiny_bundle / "model.onnx", TEXTS)
    assert rate > 0
    assert all(len(x) == len(TEXTS) for x in got)
    share = agreement(ref, got, [h.name for h in bundle.heads])
    assert set(share) == {h.name for h in bundle.heads}
    assert all(0.0 <= v <= 1.0 for v in share.values())
