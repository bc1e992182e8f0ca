"""Which runtime serves the bundle on this machine: ``model.runtime`` x ``model.device`` x
``model.precision`` resolved against what the hardware and the installed packages offer.

:func:`choose` is pure (facts in, choice out) so every rule is tested without the hardware;
:func:`probe` gathers the facts. A runtime or precision asked for by name that cannot run here
is an :class:`InferenceError` (exit 2 at start-up), never a silent fallback; ``auto`` only picks
among what is installed and says why in :attr:`Choice.reason`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from streamer.enums import Device, Precision, Runtime, Variant
from streamer.model.errors import InferenceError

# CPU flags (Linux /proc/cpuinfo names) with native bf16 matrix arithmetic: AMX tiles
# (Sapphire Rapids and later) or AVX512-BF16 (Cooper Lake, Zen 4). Without them OpenVINO's
# bf16 is not native, and the ORT CPU provider is the better default.
BF16_FLAGS = frozenset({"amx_bf16", "amx_tile", "avx512_bf16"})
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


@dataclass(frozen=True)
class Hardware:
    """What :func:`choose` needs to know about the machine and the installed packages."""

    cpu_vendor: str  # /proc/cpuinfo vendor_id, e.g. GenuineIntel
    cpu_flags: frozenset[str]
    nvidia_gpu: bool  # a driver is loaded and onnxruntime has a GPU provider
    ort_providers: tuple[str, ...]
    openvino: bool  # the openvino package is importable

    @property
    def native_bf16(self) -> bool:
        return bool(self.cpu_flags & BF16_FLAGS)


@dataclass(frozen=True)
class Choice:
    runtime: Runtime  # never AUTO
    device: Device  # for ONNX Runtime as today (cpu/auto/cuda/tensorrt); OpenVINO: cpu
    precision: Precision
    reason: str

    @property
    def variant(self) -> Variant:
        """The bundle graph this precision runs: the int8 graph for int8, the fp32 graph otherwise."""
        return Variant.INT8 if self.precision == Precision.INT8 else Variant.FP32


def choose(runtime: Runtime, device: Device, precision: Precision, hw: Hardware) -> Choice:
    """The runtime to build, or an InferenceError naming the setting that cannot be met."""
    gpu_asked = device in (Device.CUDA, Device.TENSORRT)
    if runtime == Runtime.AUTO:
        if gpu_asked or (device == Device.AUTO and hw.nvidia_gpu):
            runtime, why = Runtime.ONNXRUNTIME, "auto: NVIDIA GPU -> ONNX Runtime CUDA/TensorRT"
        elif precision == Precision.BF16:
            if not hw.openvino:
                raise InferenceError(
                    "model.precision=bf16 runs on OpenVINO, which is not installed "
                    "(pip install 'sentiwire[openvino]')"
                )
            runtime, why = Runtime.OPENVINO, "auto: bf16 is served by OpenVINO"
        elif precision == Precision.FP16:
            runtime, why = Runtime.ONNXRUNTIME, "auto: fp16 is served by ONNX Runtime TensorRT"
        elif hw.cpu_vendor == "GenuineIntel" and hw.native_bf16 and hw.openvino:
            runtime, why = Runtime.OPENVINO, "auto: Intel CPU with AMX/AVX512-BF16 -> OpenVINO"
        elif hw.cpu_vendor == "GenuineIntel" and hw.native_bf16:
            runtime, why = Runtime.ONNXRUNTIME, "auto: OpenVINO would suit this CPU but is not installed"
        else:
            runtime, why = Runtime.ONNXRUNTIME, "auto: no NVIDIA GPU, no native bf16 CPU -> ONNX Runtime CPU"
    else:
        why = f"model.runtime={runtime.value}"
    if runtime == Runtime.OPENVINO:
        if not hw.openvino:
            raise InferenceError(
                "model.runtime=openvino but the openvino package is not installed "
                "(pip install 'sentiwire[openvino]')"
            )
        if gpu_asked:
            raise InferenceError(
                f"model.runtime=openvino runs on the CPU here; model.device={device.value} needs onnxruntime"
            )
        if precision == Precision.FP16:
            raise InferenceError("model.precision=fp16 needs a GPU (model.device=tensorrt), not OpenVINO CPU")
        if precision == Precision.BF16 and not hw.native_bf16:
            raise InferenceError(
                "model.precision=bf16: this CPU has no AMX or AVX512-BF16, so OpenVINO would emulate bf16 "
                "(about 40x slower than f32 here, docs/performance.md); use fp32 or int8"
            )
        return Choice(Runtime.OPENVINO, Device.CPU, precision, why)
    if precision == Precision.BF16:
        raise InferenceError("model.precision=bf16 needs model.runtime=openvino (or auto)")
    if precision == Precision.FP16 and device != Device.TENSORRT:
        raise InferenceError(
            f"model.precision=fp16 needs model.device=tensorrt (TensorRT's fp16 mode), not {device.value}"
        )
    return Choice(Runtime.ONNXRUNTIME, device, precision, why)


def cpu_facts(cpuinfo: str) -> tuple[str, frozenset[str]]:
    """Vendor and flags of the first CPU in /proc/cpuinfo text ('', empty on other systems)."""
    vendor, flags = "", frozenset[str]()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if vendor and flags:
            break
    return vendor, flags


def probe(ort_providers: Collection[str] | None = None) -> Hardware:
    """The facts of this machine: /proc/cpuinfo, the NVIDIA driver, importable packages."""
    if ort_providers is None:
        import onnxruntime as ort

        ort_providers = ort.get_available_providers()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    vendor, flags = cpu_facts(cpuinfo)
    driver = Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()
    return Hardware(
        cpu_vendor=vendor,
        cpu_flags=flags,
        nvidia_gpu=driver and any(p in ort_providers for p in _GPU_PROVIDERS),
        ort_providers=tuple(ort_providers),
        openvino=importlib.util.find_spec("openvino") is not None,
    )
