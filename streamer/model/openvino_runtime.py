"""OpenVINO on the CPU over the bundle's own ONNX graph (``openvino.Core().read_model``).

Used directly rather than through ONNX Runtime's OpenVINO plugin EP (docs/performance.md says
why). The precision is OpenVINO's ``INFERENCE_PRECISION_HINT``, always set: on a CPU with AMX the
plugin's default is bf16, so fp32 must be asked for. One compiled model runs ``streams`` batches
at once; each calling thread gets its own InferRequest (requests are not thread-safe, the
compiled model is), so the daemon's worker threads never share one.

Batches keep their own shape by default: OpenVINO's CPU plugin runs the dynamic-shape graph
without recompiling, and padding the length-bucketed batches up to fixed lengths
(``length_steps``, e.g. :data:`LENGTH_STEPS`) measured slower, not faster (docs/performance.md).
Extra masked padding does not change a row's logits (the graph mean-pools real tokens only).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamer.enums import Precision
from streamer.model.bundle import Bundle
from streamer.model.errors import InferenceError
from streamer.model.tokenizer import Encoded

LENGTH_STEPS = (16, 32, 64, 128, 256, 512)
_HINTS = {Precision.FP32: "f32", Precision.INT8: "f32", Precision.BF16: "bf16"}


def padded_length(width: int, steps: Sequence[int], max_length: int) -> int:
    """The smallest step >= ``width`` (capped at the bundle's max_length); ``width`` past the last."""
    for step in steps:
        if step >= width:
            return max(width, min(step, max_length))
    return width


def pad_to(enc: Encoded, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Input ids and mask right-padded (id 0, mask 0) to ``width`` columns."""
    ids, mask = enc.input_ids, enc.attention_mask
    extra = width - ids.shape[1]
    if extra <= 0:
        return ids, mask
    pad = ((0, 0), (0, extra))
    return np.pad(ids, pad), np.pad(mask, pad)


class OpenVinoRuntime:
    """A compiled OpenVINO model checked against the bundle's heads; ``run`` is thread-safe."""

    def __init__(
        self,
        bundle: Bundle,
        model_path: Path,
        *,
        precision: Precision,
        streams: int = 1,
        threads: int = 0,
        length_steps: Sequence[int] = (),
    ) -> None:
        if precision not in _HINTS:
            raise InferenceError(f"model.precision={precision.value} is not served by OpenVINO on the CPU")
        try:
            import openvino as ov
        except ImportError as exc:
            raise InferenceError(
                "model.runtime=openvino but the openvino package is not importable "
                f"(pip install 'sentiwire[openvino]'): {exc}"
            ) from exc
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": _HINTS[precision],
            "NUM_STREAMS": max(1, streams),
        }
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            core = ov.Core()
            model = core.read_model(str(model_path))
            self._output_names = self._check_io(bundle, model_path, model)
            self.compiled = core.compile_model(model, "CPU", config)
        except InferenceError:
            raise
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise InferenceError(f"{model_path}: OpenVINO could not load the model: {exc}") from exc
        self.provider = "OpenVINO CPU"
        self.precision = precision
        self.inference_precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self._steps = tuple(sorted(length_steps))
        self._max_length = bundle.max_length
        self._local = threading.local()

    @staticmethod
    def _check_io(bundle: Bundle, where: Path, model: Any) -> list[str]:
        inputs = {i.get_any_name() for i in model.inputs}
        if inputs != {"input_ids", "attention_mask"}:
            raise InferenceError(f"{where}: inputs {sorted(inputs)} != ['attention_mask', 'input_ids']")
        outputs = {o.get_any_name(): o for o in model.outputs}
        names = [f"logits_{h.name}" for h in bundle.heads]
        for head, name in zip(bundle.heads, names, strict=True):
            if name not in outputs:
                raise InferenceError(f"{where}: no output {name!r} for head {head.name!r}")
            dim = outputs[name].get_partial_shape()[-1]
            if dim.is_static and dim.get_length() != len(head.labels):
                raise InferenceError(
                    f"{where}: output {name} has {dim.get_length()} logits but bundle.json lists "
                    f"{len(head.labels)} labels"
                )
        return names

    def _request(self) -> Any:
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        return req

    def run(self, enc: Encoded) -> list[np.ndarray]:
        """Logits per head, in the bundle's head order."""
        width = padded_length(enc.input_ids.shape[1], self._steps, self._max_length)
        ids, mask = pad_to(enc, width)
        req = self._request()
        req.infer({"input_ids": ids, "attention_mask": mask})
        return [np.array(req.get_tensor(name).data) for name in self._output_names]
