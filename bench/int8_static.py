"""Static (calibrated, QDQ) int8 against the bundle's dynamic int8: agreement with fp32, speed.

The export ships dynamic int8 (weights per channel, activations scaled per call) and refuses it
below 99.5% label agreement. Static int8 fixes the activation scales from calibration texts
instead, which is faster per call but cannot follow each batch's range. This measures, on the
bundle's own dev texts (``holdout/``, what the gate uses), how often each graph's labels agree
with fp32 per head, and its rate on those texts in batches of 32 (sorted by length).
Calibration texts are real texts from ../shared/data, never the dev texts; calibration batches
are padded to ``max_length`` (the histogram calibrators need one shape).

    python -m bench.int8_static --bundle models/sentiwire-minilm --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.texts import load_texts
from streamer.enums import Device, Variant
from streamer.model.bundle import Bundle, load_bundle
from streamer.model.gate import agreement, gate_texts, labels
from streamer.model.runtime import OrtRuntime
from streamer.model.tokenizer import Encoded, encode, load_tokenizer

METHODS = ("minmax", "percentile", "entropy")


def rate_and_labels(bundle: Bundle, graph: Path, texts: Sequence[str]) -> tuple[float, list[np.ndarray]]:
    rt = OrtRuntime(bundle, graph, device=Device.CPU)
    tok = load_tokenizer(bundle)
    t0 = time.perf_counter()
    got = labels(rt.run, lambda batch: encode(tok, batch), texts)
    return len(texts) / (time.perf_counter() - t0), got


def calibration_feeds(bundle: Bundle, texts: Sequence[str], batch: int) -> Iterator[dict[str, np.ndarray]]:
    width, tok = bundle.max_length, load_tokenizer(bundle)
    for start in range(0, len(texts) - batch + 1, batch):
        enc: Encoded = encode(tok, texts[start : start + batch])
        pad = ((0, 0), (0, width - enc.input_ids.shape[1]))
        yield {"input_ids": np.pad(enc.input_ids, pad), "attention_mask": np.pad(enc.attention_mask, pad)}


def quantize(bundle: Bundle, method: str, calibration: Sequence[str], dst: Path) -> None:
    """ORT's QDQ quantizer over the encoder's MatMuls (u8 activations, s8 per-channel weights)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    src = bundle.onnx_path(Variant.FP32)
    graph = onnx.load(str(src), load_external_data=False).graph
    heads = [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul") and "/encoder/" not in n.name]
    feeds = calibration_feeds(bundle, calibration, 16)

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # untyped base
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    calib = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    extra: dict[str, Any] = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if calib == CalibrationMethod.Percentile:
        extra["CalibPercentile"] = 99.99
    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=heads,
        calibrate_method=calib,
        extra_options=extra,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--methods", default="minmax,percentile", help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--n-calibration", type=int, default=320, help="calibration texts (short texts, not dev)")
    args = p.parse_args()

    bundle = load_bundle(args.bundle)
    heads = [h.name for h in bundle.heads]
    dev = gate_texts(bundle, limit=1_000_000)
    held = set(dev)
    calibration = [t for t in load_texts(args.data_dir)["short"] if t not in held][: args.n_calibration]
    r32, ref = rate_and_labels(bundle, bundle.onnx_path(Variant.FP32), dev)
    rows = [("fp32 (reference)", r32, dict.fromkeys(heads, 1.0))]
    r8, dyn = rate_and_labels(bundle, bundle.onnx_path(Variant.INT8), dev)
    level = (bundle.manifest.get("export") or {}).get("int8_level", "?")
    rows.append((f"dynamic int8 (the bundle's, level {level})", r8, agreement(ref, dyn, heads)))
    with tempfile.TemporaryDirectory() as tmp:
        for method in (m for m in args.methods.split(",") if m):
            if method not in METHODS:
                p.error(f"--methods: unknown {method!r} (expected {', '.join(METHODS)})")
            dst = Path(tmp) / f"static-{method}.onnx"
            quantize(bundle, method, calibration, dst)
            rate, got = rate_and_labels(bundle, dst, dev)
            rows.append((f"static int8 QDQ, {method} calibration", rate, agreement(ref, got, heads)))
    print(f"| graph | msg/s (batch 32, 1 session) | {' | '.join(f'agree {h}' for h in heads)} |")
    print("|---|---:|" + "---:|" * len(heads))
    for name, rate, agree in rows:
        print(f"| {name} | {rate:.0f} | " + " | ".join(f"{100 * agree[h]:.2f}%" for h in heads) + " |")
    print(
        f"\n{len(dev)} dev texts of {bundle.name} {bundle.version}; {len(calibration)} calibration texts; "
        "agreement = same label as fp32 ONNX Runtime."
    )


if __name__ == "__main__":
    main()
