"""The inference runtimes over the bundle's graph: ONNX Runtime here, OpenVINO in
openvino_runtime.py; :func:`build_runtime` makes the one :mod:`selection` chose.

Providers are requested best first and never silently land on CPU when a GPU was asked
for. Sessions are thread-safe for ``run``, so concurrent batches share one. Every runtime
implements the same two members: ``provider`` and ``run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from streamer.enums import Device, Precision
from streamer.enums import Runtime as RuntimeName
from streamer.model.bundle import Bundle
from streamer.model.errors import InferenceError
from streamer.model.selection import Choice
from streamer.model.tokenizer import Encoded

_PROVIDERS: dict[Device, str] = {
    Device.CPU: "CPUExecutionProvider",
    Device.CUDA: "CUDAExecutionProvider",
    Device.TENSORRT: "TensorrtExecutionProvider",
}


class Runtime(Protocol):
    """What the classifier needs of a runtime: logits per head for an encoded batch."""

    provider: str

    def run(self, enc: Encoded) -> list[np.ndarray]: ...


def provider_chain(device: Device) -> list[str]:
    """Providers to request, best first. Never silently lands on CPU when a GPU was asked for."""
    available = ort.get_available_providers()
    if device == Device.CPU:
        return ["CPUExecutionProvider"]
    if device == Device.AUTO:
        order = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
        return [p for p in order if p in available]
    wanted = _PROVIDERS[device]
    if wanted not in available:
        raise InferenceError(
            f"device={device.value!r} needs ONNX Runtime's {wanted}, but this onnxruntime build only has "
            f"{available}; install the [gpu] extra (onnxruntime-gpu) with matching CUDA libraries"
        )
    # TensorRT/CUDA partition the graph; CPU only runs nodes they do not support.
    chain = [wanted]
    if device == Device.TENSORRT and "CUDAExecutionProvider" in available:
        chain.append("CUDAExecutionProvider")
    chain.append("CPUExecutionProvider")
    return chain


class OrtRuntime:
    """An ONNX Runtime session checked against the bundle's heads (inputs, outputs, label counts)."""

    def __init__(
        self,
        bundle: Bundle,
        model_path: Path,
        *,
        device: Device,
        intra_op_threads: int = 0,
        allow_spinning: bool = False,
        precision: Precision = Precision.FP32,
    ) -> None:
        """``precision`` fp16 is TensorRT's fp16 mode on the fp32 graph; fp32/int8 are the graph's own."""
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads > 0:
            opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        chain = provider_chain(device)
        providers: list[Any] = list(chain)
        if precision == Precision.FP16:
            if chain[0] != "TensorrtExecutionProvider":
                raise InferenceError("model.precision=fp16 needs TensorRT (model.device=tensorrt)")
            providers[0] = ("TensorrtExecutionProvider", {"trt_fp16_enable": True})
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
        except Exception as exc:  # ORT raises its own exception types
            raise InferenceError(f"{model_path}: ONNX Runtime could not load the model: {exc}") from exc
        active = self.session.get_providers()
        if device in (Device.CUDA, Device.TENSORRT) and active[0] != chain[0]:
            raise InferenceError(
                f"device={device.value!r}: ONNX Runtime fell back to {active[0]} (GPU libraries not loadable?)"
            )
        self.provider: str = active[0]
        self._output_names = self._check_io(bundle, model_path)

    def _check_io(self, bundle: Bundle, where: Path) -> list[str]:
        outputs = {o.name: o for o in self.session.get_outputs()}
        inputs = {i.name for i in self.session.get_inputs()}
        if inputs != {"input_ids", "attention_mask"}:
            raise InferenceError(f"{where}: inputs {sorted(inputs)} != ['attention_mask', 'input_ids']")
        names: list[str] = []
        for head in bundle.heads:
            name = f"logits_{head.name}"
            if name not in outputs:
                raise InferenceError(f"{where}: no output {name!r} for head {head.name!r}")
            dim = outputs[name].shape[-1]
            if isinstance(dim, int) and dim != len(head.labels):
                raise InferenceError(
                    f"{where}: output {name} has {dim} logits but bundle.json lists {len(head.labels)} labels"
                )
            names.append(name)
        return names

    def run(self, enc: Encoded) -> list[np.ndarray]:
        """Logits per head, in the bundle's head order."""
        feeds: dict[str, Any] = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}
        return [np.asarray(x) for x in self.session.run(self._output_names, feeds)]


def build_runtime(
    bundle: Bundle,
    choice: Choice,
    *,
    workers: int = 1,
    intra_op_threads: int = 0,
    allow_spinning: bool = False,
) -> Runtime:
    """The runtime :func:`selection.choose` picked, over the bundle graph of its precision.

    ``workers`` batches run at once: OpenVINO gets that many streams of ``intra_op_threads``.
    """
    path = bundle.onnx_path(choice.variant)
    if choice.runtime == RuntimeName.OPENVINO:
        from streamer.model.openvino_runtime import OpenVinoRuntime

        return OpenVinoRuntime(
            bundle,
            path,
            precision=choice.precision,
            streams=workers,
            threads=intra_op_threads * workers if intra_op_threads > 0 else 0,
        )
    return OrtRuntime(
        bundle,
        path,
        device=choice.device,
        intra_op_threads=intra_op_threads,
        allow_spinning=allow_spinning,
        precision=choice.precision,
    )
