"""The closed sets of choices shared by config, the CLI (typer choices) and the runtime.

A leaf module (imports nothing of the project). ``StrEnum`` members compare equal to their
strings, so YAML/env values, typer options and JSON dumps all read and write the plain word.
"""

from __future__ import annotations

from enum import StrEnum


class Variant(StrEnum):
    """Which ONNX graph of the bundle is served."""

    FP32 = "fp32"
    INT8 = "int8"


class Device(StrEnum):
    """Where inference runs; a GPU asked for and missing is an error, never a CPU fallback."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"


class Delivery(StrEnum):
    """The daemon's output guarantee."""

    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class Runtime(StrEnum):
    """Which inference engine runs the bundle's ONNX graph (``auto``: chosen per hardware)."""

    AUTO = "auto"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


class Precision(StrEnum):
    """The arithmetic inference runs in; int8 is the bundle's int8 graph, the rest its fp32 graph."""

    FP32 = "fp32"
    BF16 = "bf16"
    INT8 = "int8"
    FP16 = "fp16"
