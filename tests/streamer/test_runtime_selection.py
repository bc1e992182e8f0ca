"""Runtime selection (pure: hardware facts in, choice out), config validation, missing runtimes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from streamer.config import ConfigError, load_settings
from streamer.enums import Device, Precision, Runtime, Variant
from streamer.errors import ExitCode, exit_code_for
from streamer.model import classifier as classifier_module
from streamer.model.bundle import load_bundle
from streamer.model.classifier import Classifier
from streamer.model.errors import InferenceError
from streamer.model.selection import Hardware, choose, cpu_facts

SPR = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"})
ICELAKE = frozenset({"avx2", "avx512f", "avx512_vnni"})  # this machine: AVX-512, no bf16
CPU_ONLY = ("CPUExecutionProvider",)
GPU = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def hw(
    flags: frozenset[str] = ICELAKE,
    vendor: str = "GenuineIntel",
    nvidia: bool = False,
    openvino: bool = True,
    providers: tuple[str, ...] = CPU_ONLY,
) -> Hardware:
    return Hardware(vendor, flags, nvidia, providers, openvino)


@pytest.mark.parametrize(
    ("runtime", "device", "precision", "facts", "want"),
    [
        (Runtime.AUTO, Device.CPU, Precision.FP32, hw(SPR), Runtime.OPENVINO),
        (Runtime.AUTO, Device.CPU, Precision.FP32, hw(ICELAKE), Runtime.ONNXRUNTIME),
        (Runtime.AUTO, Device.CPU, Precision.INT8, hw(SPR), Runtime.OPENVINO),
        (Runtime.AUTO, Device.CPU, Precision.FP32, hw(SPR, openvino=False), Runtime.ONNXRUNTIME),
        (Runtime.AUTO, Device.CPU, Precision.FP32, hw(SPR, vendor="AuthenticAMD"), Runtime.ONNXRUNTIME),
        (Runtime.AUTO, Device.AUTO, Precision.FP32, hw(SPR, nvidia=True, providers=GPU), Runtime.ONNXRUNTIME),
        (Runtime.AUTO, Device.CUDA, Precision.FP32, hw(SPR), Runtime.ONNXRUNTIME),
        (Runtime.AUTO, Device.CPU, Precision.BF16, hw(SPR), Runtime.OPENVINO),
        (Runtime.AUTO, Device.TENSORRT, Precision.FP16, hw(SPR), Runtime.ONNXRUNTIME),
        (Runtime.OPENVINO, Device.CPU, Precision.FP32, hw(ICELAKE), Runtime.OPENVINO),
        (Runtime.OPENVINO, Device.AUTO, Precision.BF16, hw(SPR), Runtime.OPENVINO),
        (Runtime.ONNXRUNTIME, Device.CPU, Precision.INT8, hw(SPR), Runtime.ONNXRUNTIME),
    ],
)
def test_choice(
    runtime: Runtime, device: Device, precision: Precision, facts: Hardware, want: Runtime
) -> None:
    choice = choose(runtime, device, precision, facts)
    assert choice.runtime == want
    assert choice.precision == precision
    assert choice.variant == (Variant.INT8 if precision == Precision.INT8 else Variant.FP32)
    assert choice.reason
    if want == Runtime.OPENVINO:
        assert choice.device == Device.CPU


@pytest.mark.parametrize(
    ("runtime", "device", "precision", "facts", "match"),
    [
        (Runtime.OPENVINO, Device.CPU, Precision.FP32, hw(SPR, openvino=False), "not installed"),
        (Runtime.AUTO, Device.CPU, Precision.BF16, hw(SPR, openvino=False), "not installed"),
        (Runtime.OPENVINO, Device.CUDA, Precision.FP32, hw(SPR), "model.device=cuda"),
        (Runtime.AUTO, Device.CPU, Precision.BF16, hw(ICELAKE), "would emulate bf16"),
        (Runtime.OPENVINO, Device.CPU, Precision.BF16, hw(ICELAKE), "would emulate bf16"),
        (Runtime.OPENVINO, Device.CPU, Precision.FP16, hw(SPR), "fp16 needs a GPU"),
        (Runtime.ONNXRUNTIME, Device.CPU, Precision.BF16, hw(SPR), "bf16 needs model.runtime=openvino"),
        (Runtime.ONNXRUNTIME, Device.CUDA, Precision.FP16, hw(SPR), "fp16 needs model.device=tensorrt"),
        (Runtime.AUTO, Device.CPU, Precision.FP16, hw(SPR), "fp16 needs model.device=tensorrt"),
    ],
)
def test_impossible_choice_is_an_error(
    runtime: Runtime, device: Device, precision: Precision, facts: Hardware, match: str
) -> None:
    with pytest.raises(InferenceError, match=match) as err:
        choose(runtime, device, precision, facts)
    assert exit_code_for(err.value) == ExitCode.USAGE


def test_cpu_facts_read_proc_cpuinfo() -> None:
    text = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx512f amx_tile amx_bf16\n\nprocessor\t: 1\n"
    vendor, flags = cpu_facts(text)
    assert vendor == "GenuineIntel"
    assert {"amx_tile", "amx_bf16"} <= flags
    assert hw(flags).native_bf16
    assert not hw(ICELAKE).native_bf16
    assert cpu_facts("") == ("", frozenset())


def test_missing_runtime_fails_the_classifier(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime asked for by name and not installed: an InferenceError (exit 2), no ORT fallback."""
    bundle = load_bundle(tiny_bundle)
    real = classifier_module.probe()
    monkeypatch.setattr(classifier_module, "probe", lambda: replace(real, openvino=False))
    with pytest.raises(InferenceError, match="openvino package is not installed") as err:
        Classifier(bundle, runtime="openvino")
    assert err.value.exit_code == ExitCode.USAGE
    with pytest.raises(InferenceError, match="unknown runtime 'tflite'"):
        Classifier(bundle, runtime="tflite")
    with pytest.raises(InferenceError, match="disagree"):
        Classifier(bundle, variant="int8", precision="bf16")


def test_defaults_stay_onnxruntime_here(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """auto on a CPU without native bf16 is ONNX Runtime CPU, with no gate (export checked fp32/int8)."""
    monkeypatch.setattr(classifier_module, "probe", lambda: hw(ICELAKE))
    clf = Classifier(load_bundle(tiny_bundle), runtime="auto", variant="int8")
    assert (clf.runtime_name, clf.precision, clf.variant) == ("onnxruntime", "int8", "int8")
    assert clf.provider == "CPUExecutionProvider"
    assert not clf.needs_gate
    assert clf.agreement is None


def _config(tmp_path: Path, model: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"model:\n{model}", encoding="utf-8")
    return path


def test_config_precision_and_runtime(tmp_path: Path) -> None:
    s = load_settings(_config(tmp_path, "  precision: int8\n  runtime: openvino\n"))
    assert (s.model.precision, s.model.variant, s.model.runtime) == ("int8", "int8", "openvino")
    s = load_settings(_config(tmp_path, "  variant: int8\n"))
    assert s.model.precision == "int8"
    s = load_settings(_config(tmp_path, "  precision: bf16\n"))
    assert (s.model.precision, s.model.variant) == ("bf16", "fp32")
    assert load_settings().model.runtime == "auto"


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ("  runtime: tensorflow\n", r"model\.runtime: .*'tensorflow'"),
        ("  precision: fp8\n", r"model\.precision: .*'fp8'"),
        ("  variant: int8\n  precision: bf16\n", r"model\.variant=int8 and model\.precision=bf16 disagree"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, model: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_settings(_config(tmp_path, model))
