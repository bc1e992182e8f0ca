"""Hot reload without Kafka: symlink promotion swaps the model; a broken bundle keeps the old one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from streamer.config import ModelConfig
from streamer.metrics import Metrics
from streamer.model.loading import fingerprint, load_classifier
from streamer.model.reload import ModelHolder, Reloader


def _promote(link: Path, target: Path) -> None:
    tmp = link.with_name(link.name + ".tmp")
    tmp.symlink_to(target)
    os.replace(tmp, link)  # atomic, like the promotion command


async def test_symlink_promotion_and_failed_bundle(
    tiny_bundle_factory: Callable[..., Path], tmp_path: Path
) -> None:
    v1 = tiny_bundle_factory("r1", tmp_path / "versions" / "r1")
    v2 = tiny_bundle_factory("r2", tmp_path / "versions" / "r2")
    v3 = tiny_bundle_factory("r3", tmp_path / "versions" / "r3")
    (v3 / "tokenizer.json").write_text("{}", encoding="utf-8")  # altered after hashing: must not verify
    link = tmp_path / "current"
    link.symlink_to(v1)

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    cfg = ModelConfig(path=link, reload_interval_s=1)
    holder = ModelHolder(load_classifier(cfg), fingerprint(link), metrics)
    reloader = Reloader(cfg, holder, metrics)
    assert holder.current.bundle.version == "r1"
    assert not await reloader.check_once()  # nothing changed

    _promote(link, v2)
    assert await reloader.check_once()
    assert holder.current.bundle.version == "r2"
    assert registry.get_sample_value("sentiwire_model_reloads_total", {"result": "success"}) == 1
    info = {
        "name": holder.current.bundle.name,
        "version": "r2",
        "provider": "CPUExecutionProvider",
        "variant": "fp32",
    }
    assert registry.get_sample_value("sentiwire_model_info", info) == 1
    assert registry.get_sample_value("sentiwire_model_info", {**info, "version": "r1"}) is None

    _promote(link, v3)
    assert not await reloader.check_once()
    assert holder.current.bundle.version == "r2"  # old model keeps serving
    assert registry.get_sample_value("sentiwire_model_reloads_total", {"result": "failure"}) == 1
    assert not await reloader.check_once()  # the same broken bundle is not retried every poll
    assert registry.get_sample_value("sentiwire_model_reloads_total", {"result": "failure"}) == 1

    _promote(link, v1)
    assert await reloader.check_once()
    assert holder.current.bundle.version == "r1"


def test_session_spinning_follows_config(tiny_bundle: Path) -> None:
    """``model.allow_spinning`` reaches ONNX Runtime (off by default: spinning threads take CPU
    from the tokenizer and the Kafka client on small machines)."""

    def spinning(cfg: ModelConfig) -> str:
        session = load_classifier(cfg).runtime.session  # type: ignore[attr-defined]
        return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")

    assert spinning(ModelConfig(path=tiny_bundle)) == "0"
    assert spinning(ModelConfig(path=tiny_bundle, allow_spinning=True)) == "1"


def test_threads_are_shared_out_among_workers(tiny_bundle: Path) -> None:
    """``intra_op_threads: 0`` gives each of ``workers`` batches its share of the CPUs."""
    from streamer.model.loading import threads_per_worker, usable_cpus

    def threads(cfg: ModelConfig) -> int:
        return int(load_classifier(cfg).runtime.session.get_session_options().intra_op_num_threads)

    assert threads_per_worker(1) == usable_cpus()
    assert threads_per_worker(10_000) == 1
    assert threads(ModelConfig(path=tiny_bundle, workers=1)) == usable_cpus()
    assert threads(ModelConfig(path=tiny_bundle, workers=64)) == 1
    assert threads(ModelConfig(path=tiny_bundle, workers=2, intra_op_threads=3)) == 3


def _refuse_int8(bundle: Path) -> None:
    """What export writes when the int8 graph fails its precision gate without --force."""
    import json

    manifest = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    manifest["export"]["int8_gate"] = {"passed": False, "servable": False, "reason": "moved 1.38 pt"}
    (bundle / "bundle.json").write_text(json.dumps(manifest), encoding="utf-8")


async def test_an_int8_daemon_refuses_a_bundle_whose_int8_failed_its_gate(
    tiny_bundle_factory: Callable[..., Path], tmp_path: Path
) -> None:
    import pytest

    from streamer.model.errors import InferenceError

    v1 = tiny_bundle_factory("g1", tmp_path / "versions" / "g1")
    v2 = tiny_bundle_factory("g2", tmp_path / "versions" / "g2")
    _refuse_int8(v2)
    link = tmp_path / "current"
    link.symlink_to(v1)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    cfg = ModelConfig(path=link, variant="int8", reload_interval_s=1)  # type: ignore[arg-type]
    holder = ModelHolder(load_classifier(cfg), fingerprint(link), metrics)
    reloader = Reloader(cfg, holder, metrics)

    _promote(link, v2)
    assert not await reloader.check_once()
    assert holder.current.bundle.version == "g1"  # the int8 graph that passed keeps serving
    assert registry.get_sample_value("sentiwire_model_reloads_total", {"result": "failure"}) == 1
    with pytest.raises(InferenceError, match=r"g2 .*failed the export precision gate \(moved 1.38 pt\)"):
        load_classifier(cfg)  # and at start-up it is exit 2 (a UsageError), naming the gate
    assert load_classifier(ModelConfig(path=link)).bundle.version == "g2"  # fp32 serves it
