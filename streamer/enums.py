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
