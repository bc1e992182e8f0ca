"""The one inference path: tokenizers (Rust) + ONNX Runtime, shared by the daemon,
``sentiwire predict`` and ``sentiwire evaluate`` so offline metrics measure what is served.

``encode`` and ``infer`` hold no mutable state (the tokenizer is configured once in
``__init__`` and ONNX Runtime sessions are thread-safe for ``run``), so the daemon may call
them from worker threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from streamer.bundle import Bundle
from streamer.enums import Device, Variant
from streamer.errors import UsageError

_E = TypeVar("_E", bound=StrEnum)

_PROVIDERS: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class InferenceError(UsageError):
    """The model cannot run as asked (missing execution provider, bad bundle outputs)."""


@dataclass(frozen=True)
class Encoded:
    input_ids: np.ndarray
    attention_mask: np.ndarray
    truncated: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class HeadPrediction:
    label: str
    score: float
    scores: dict[str, float]


def _choice(enum: type[_E], value: str, what: str) -> _E:
    """``value`` as a member of ``enum``; an InferenceError naming the choices otherwise."""
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(m.value for m in enum)
        raise InferenceError(f"unknown {what} {value!r} (expected one of {choices})") from None


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float32, copy=False)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def _provider_chain(device: Device) -> list[str]:
    """Providers to request, best first. Never silently lands on CPU when a GPU was asked for."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "auto":
        order = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
        return [p for p in order if p in available]
    wanted = _PROVIDERS[device]
    if wanted not in available:
        raise InferenceError(
            f"device={device!r} needs ONNX Runtime's {wanted}, but this onnxruntime build only has "
            f"{available}; install the [gpu] extra (onnxruntime-gpu) with matching CUDA libraries"
        )
    # TensorRT/CUDA partition the graph; CPU only runs nodes they do not support.
    chain = [wanted]
    if device == "tensorrt" and "CUDAExecutionProvider" in available:
        chain.append("CUDAExecutionProvider")
    chain.append("CPUExecutionProvider")
    return chain


def pad_token_of(tok: Tokenizer) -> tuple[int | None, str]:
    """The tokenizer's own padding token if configured, else [PAD] (BERT) or <pad> (MPNet, RoBERTa)."""
    configured = tok.padding
    if configured and configured.get("pad_token") is not None:
        return int(configured["pad_id"]), str(configured["pad_token"])
    for token in ("[PAD]", "<pad>"):
        pad_id = tok.token_to_id(token)
        if pad_id is not None:
            return pad_id, token
    return None, ""


class Classifier:
    """Multi-head text classifier over a verified bundle."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        variant: Variant | str = Variant.FP32,
        device: Device | str = Device.CPU,
        intra_op_threads: int = 0,
        allow_spinning: bool = False,
    ) -> None:
        variant = _choice(Variant, variant, "variant")
        device = _choice(Device, device, "device")
        self.bundle = bundle
        self.variant: Variant = variant
        self._tokenizer = self._load_tokenizer(bundle)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads > 0:
            opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        model_path = bundle.onnx_path(variant)
        chain = _provider_chain(device)
        try:
            self._session = ort.InferenceSession(str(model_path), sess_options=opts, providers=chain)
        except Exception as exc:  # ORT raises its own exception types
            raise InferenceError(f"{model_path}: ONNX Runtime could not load the model: {exc}") from exc
        active = self._session.get_providers()
        if device in ("cuda", "tensorrt") and active[0] != chain[0]:
            raise InferenceError(
                f"device={device!r}: ONNX Runtime fell back to {active[0]} (GPU libraries not loadable?)"
            )
        self.provider: str = active[0]
        self._check_outputs()

    @staticmethod
    def _load_tokenizer(bundle: Bundle) -> Tokenizer:
        try:
            tok = Tokenizer.from_file(str(bundle.tokenizer_path))
        except Exception as exc:
            raise InferenceError(f"{bundle.tokenizer_path}: not a loadable tokenizer: {exc}") from exc
        pad_id, pad_token = pad_token_of(tok)
        if pad_id is None:
            raise InferenceError(f"{bundle.tokenizer_path}: tokenizer has no padding token ([PAD] or <pad>)")
        tok.enable_truncation(max_length=bundle.max_length)
        tok.enable_padding(pad_id=pad_id, pad_token=pad_token)  # to the longest in the batch
        return tok

    def _check_outputs(self) -> None:
        outputs = {o.name: o for o in self._session.get_outputs()}
        inputs = {i.name for i in self._session.get_inputs()}
        if inputs != {"input_ids", "attention_mask"}:
            raise InferenceError(
                f"{self.bundle.onnx_path(self.variant)}: inputs {sorted(inputs)} "
                "!= ['attention_mask', 'input_ids']"
            )
        self._output_names: list[str] = []
        where = self.bundle.onnx_path(self.variant)
        for head in self.bundle.heads:
            name = f"logits_{head.name}"
            if name not in outputs:
                raise InferenceError(f"{where}: no output {name!r} for head {head.name!r}")
            dim = outputs[name].shape[-1]
            if isinstance(dim, int) and dim != len(head.labels):
                raise InferenceError(
                    f"{where}: output {name} has {dim} logits but bundle.json lists {len(head.labels)} labels"
                )
            self._output_names.append(name)

    def encode(self, texts: Sequence[str]) -> Encoded:
        if not texts:
            empty = np.zeros((0, 0), dtype=np.int64)
            return Encoded(empty, empty.copy(), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64))
        encs = self._tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encs], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encs], dtype=np.int64)
        truncated = np.asarray([bool(e.overflowing) for e in encs], dtype=bool)
        return Encoded(ids, mask, truncated, mask.sum(axis=1))

    def infer(self, enc: Encoded) -> dict[str, np.ndarray]:
        if len(enc) == 0:
            return {h.name: np.zeros((0, len(h.labels)), dtype=np.float32) for h in self.bundle.heads}
        feeds: dict[str, Any] = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}
        logits = self._session.run(self._output_names, feeds)
        return {h.name: softmax(np.asarray(x)) for h, x in zip(self.bundle.heads, logits, strict=True)}

    def to_predictions(self, probs: dict[str, np.ndarray]) -> list[dict[str, HeadPrediction]]:
        n = len(next(iter(probs.values()))) if probs else 0
        out: list[dict[str, HeadPrediction]] = [{} for _ in range(n)]
        for head in self.bundle.heads:
            p = probs[head.name]
            best = p.argmax(axis=1)
            for i in range(n):
                row = p[i]
                out[i][head.name] = HeadPrediction(
                    label=head.labels[int(best[i])],
                    score=float(row[best[i]]),
                    scores={lab: float(v) for lab, v in zip(head.labels, row, strict=True)},
                )
        return out

    def predict(self, texts: Sequence[str]) -> list[dict[str, HeadPrediction]]:
        return self.to_predictions(self.infer(self.encode(texts)))
