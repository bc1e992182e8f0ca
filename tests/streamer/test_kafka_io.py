"""Security settings reach the aiokafka clients unchanged (no broker needed)."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from streamer.config import KafkaConfig, Settings
from streamer.kafka.clients import client_kwargs, make_producer

REPO = Path(__file__).resolve().parents[2]


def test_sasl_scram_over_ssl_passthrough() -> None:
    # A real CA file so create_ssl_context can load it: the system bundle Python itself uses.
    system_ca = ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths().openssl_cafile
    if not system_ca or not Path(system_ca).exists():
        pytest.skip("no system CA bundle to load")
    kafka = KafkaConfig(
        bootstrap_servers="b1:9093,b2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SecretStr("pw-123"),
        ssl_cafile=Path(system_ca),
    )
    kw = client_kwargs(kafka)
    assert kw["bootstrap_servers"] == "b1:9093,b2:9093"
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "svc"
    assert kw["sasl_plain_password"] == "pw-123"  # the client needs the plain value; nothing else sees it
    assert isinstance(kw["ssl_context"], ssl.SSLContext)
    assert kw["ssl_context"].check_hostname is True


def test_plaintext_has_no_security_arguments() -> None:
    kw = client_kwargs(KafkaConfig())
    assert "sasl_mechanism" not in kw
    assert "ssl_context" not in kw


async def test_exactly_once_producer_is_transactional_and_idempotent() -> None:
    s = Settings(delivery="exactly_once", exactly_once={"transactional_id": "tx-1"})  # type: ignore[arg-type]
    producer = make_producer(s)
    assert producer._txn_manager is not None
    assert producer._txn_manager.transactional_id == "tx-1"
    plain = make_producer(Settings())
    assert plain._txn_manager is not None  # idempotence alone also creates a manager (producer id)
    assert plain._txn_manager.transactional_id is None


def test_cuda_without_gpu_provider_is_a_startup_error(tiny_bundle: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA: the error path cannot be shown")
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": "127.0.0.1:1"},
                "model": {"path": str(tiny_bundle), "device": "cuda"},
                "http": {"enabled": False},
                "logging": {"format": "json"},
            }
        ),
        encoding="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "sentiwire", "serve", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "CUDAExecutionProvider" in proc.stderr
    assert "cannot start" in proc.stderr
