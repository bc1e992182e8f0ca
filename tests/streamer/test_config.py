from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamer.config import ConfigError, load_settings


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENTIWIRE_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    s = load_settings()
    assert s.delivery == "at_least_once"
    assert s.output.include_text is True
    assert s.alerts.enabled is False


def test_env_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "kafka:\n  bootstrap_servers: file:9092\nbatching:\n  max_batch_size: 8\n")
    monkeypatch.setenv("SENTIWIRE_KAFKA__BOOTSTRAP_SERVERS", "env:9093")
    monkeypatch.setenv("SENTIWIRE_INPUT__TOPICS", '["a", "b"]')
    s = load_settings(path)
    assert s.kafka.bootstrap_servers == "env:9093"
    assert s.batching.max_batch_size == 8  # file value kept where env says nothing
    assert s.input.topics == ["a", "b"]


def test_error_names_field_and_value(tmp_path: Path) -> None:
    path = _write(tmp_path, "batching:\n  max_batch_size: -3\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "batching.max_batch_size" in str(err.value)
    assert "-3" in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_field_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.pth"):
        load_settings(_write(tmp_path, "model:\n  pth: x\n"))


def test_secrets_never_in_errors_or_dumps(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "kafka:\n  security_protocol: SASL_PLAINTEXT\n  sasl_mechanism: SCRAM-SHA-512\n"
        "  sasl_username: u\n  sasl_password: hunter2-secret\n",
    )
    s = load_settings(path)
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "hunter2-secret"
    assert "hunter2" not in s.model_dump_json()
    assert "hunter2" not in repr(s)
    bad = _write(tmp_path, path.read_text().replace("hunter2-secret", "[hunter2-secret]"))
    with pytest.raises(ConfigError) as err:
        load_settings(bad)
    assert "kafka.sasl_password" in str(err.value)
    assert "hunter2" not in str(err.value)
    assert "<redacted>" in str(err.value)


def test_sasl_needs_credentials(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sasl_username"):
        load_settings(_write(tmp_path, "kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: PLAIN\n"))


def test_output_topic_cannot_be_an_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="overlap"):
        load_settings(_write(tmp_path, "input:\n  topics: [labels]\noutput:\n  labels_topic: labels\n"))


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(_write(tmp_path, "kafka: [unclosed\n"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml")


def test_alerts_section_is_the_alerting_config(tmp_path: Path) -> None:
    s = load_settings(_write(tmp_path, "alerts:\n  enabled: true\n  bucket_s: 10\n"))
    assert s.alerts.enabled is True
    assert s.alerts.bucket_s == 10


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("SENTIWIRE_")]:
        monkeypatch.delenv(key)
    example = Path(__file__).resolve().parents[2] / "streamer" / "config.example.yaml"
    s = load_settings(example)
    assert s.input.topics == ["news"]
    assert s.model.path == Path("models/current")


def test_daemon_config_never_shares_its_defaults() -> None:
    """Editing one test's config must not change the next one's (TEST_DEFAULTS stays as it is)."""
    from streamer.testing import TEST_DEFAULTS, daemon_config

    before = {k: dict(v) if isinstance(v, dict) else v for k, v in TEST_DEFAULTS.items()}
    cfg = daemon_config(bootstrap="b:9092", bundle="m", topics="t", labels="l", dlq="d", group="g")
    cfg["batching"]["commit_interval_ms"] = 60_000
    cfg["output"]["linger_ms"] = 99
    assert before == TEST_DEFAULTS
    again = daemon_config(bootstrap="b:9092", bundle="m", topics="t", labels="l", dlq="d", group="g")
    assert again["batching"]["commit_interval_ms"] == 200
