"""The sections of the daemon's settings (kafka, input, output, model, drift, batching, ...).

Each section validates itself; :class:`streamer.config.Settings` assembles them with the
``alerts`` section (streamer/config/alerts.py) and loads them from a file and the environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from streamer.enums import Device, Precision, Runtime, Variant


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Section):
    """Connection settings shared by every client the daemon opens (consumer, producers, alerts)."""

    bootstrap_servers: str = "localhost:9092"
    client_id: str = "sentiwire"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    request_timeout_ms: int = Field(default=40_000, gt=0)
    # At start-up the brokers may not be up yet (a rolling restart): retry with back-off for this
    # long, not ready meanwhile, then exit 3 (UNAVAILABLE). 0 tries once.
    startup_wait_s: float = Field(default=120.0, ge=0)

    @model_validator(mode="after")
    def _check_security(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL_"):
            missing = [
                name
                for name in ("sasl_mechanism", "sasl_username", "sasl_password")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"security_protocol {self.security_protocol} needs {', '.join(missing)}")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: file not found: {path}")
        return self


class InputConfig(_Section):
    topics: list[str] = Field(default_factory=lambda: ["news"], min_length=1)
    format: Literal["json", "text"] = "json"
    text_field: str = "text"
    group_id: str = "sentiwire"
    max_message_bytes: int = Field(default=1_000_000, gt=0)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # How fast the group notices a dead member (its partitions move to the survivors).
    session_timeout_ms: int = Field(default=10_000, gt=0)
    heartbeat_interval_ms: int = Field(default=3_000, gt=0)
    max_poll_interval_ms: int = Field(default=300_000, gt=0)


class OutputConfig(_Section):
    labels_topic: str = "labels"
    dead_letter_topic: str = "labels.dead-letter"
    include_text: bool = True
    # A label record larger than this (a huge input text) is sent without its text
    # ("text_omitted": true), a dead letter without its value (header sentiwire.value_dropped),
    # rather than be rejected by the broker and block the partition.
    max_record_bytes: int = Field(default=1_000_000, gt=1024)
    linger_ms: int = Field(default=5, ge=0)
    compression: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    # With model.shadow: each sampled message's live and shadow labels, for offline analysis
    # (README "Drift and shadow models"). At-least-once, off the publishing path; never read back.
    shadow_labels_topic: str | None = None


class ShadowConfig(_Section):
    """A candidate bundle run beside the served one on sampled messages, off the publishing path."""

    path: Path
    sample_fraction: float = Field(default=0.1, ge=0, le=1)
    # Shadow batches running at once (one ONNX Runtime thread each); a sample arriving while
    # all are busy is dropped and counted, never queued in front of the live labels.
    max_in_flight: int = Field(default=1, ge=1, le=16)

    @field_validator("path")
    @classmethod
    def _bundle_exists(cls, path: Path) -> Path:
        if not (path / "bundle.json").is_file():
            raise ValueError(f"no bundle at {path} (bundle.json not found)")
        return path


class ModelConfig(_Section):
    path: Path = Path("models/current")
    # variant picks the bundle graph (fp32 or int8); precision says how it runs: int8 is the
    # int8 graph, fp32/bf16/fp16 the fp32 graph (bf16: OpenVINO, fp16: TensorRT). Either one
    # alone sets the other; both given must agree (docs/performance.md "Runtimes").
    variant: Variant = Variant.FP32
    precision: Precision = Precision.FP32
    # auto: ONNX Runtime on an NVIDIA GPU, OpenVINO on an Intel CPU with AMX/AVX512-BF16
    # (when installed), ONNX Runtime CPU elsewhere. A runtime named here and missing is an error.
    runtime: Runtime = Runtime.AUTO
    device: Device = Device.CPU
    # Batches run concurrently by this many inference threads, each ONNX Runtime call with
    # intra_op_threads threads (0: the CPUs this process may use, divided among the workers).
    # Several single-threaded batches beat one batch over all cores on small CPUs: small
    # length-bucketed batches parallelise poorly inside an operator (docs/performance.md).
    workers: int = Field(default=2, ge=1, le=64)
    intra_op_threads: int = Field(default=0, ge=0)
    # ONNX Runtime's intra-op threads busy-wait between operators by default; off, they sleep
    # and leave those cycles to the tokenizer, the Kafka client and the event loop
    # (docs/performance.md measures both settings).
    allow_spinning: bool = False
    reload_interval_s: float = Field(default=10.0, ge=0, description="0 disables hot reload")
    # Response cache: a text seen before (as the tokenizer normalizes it) reuses its labels.
    # Bounded by entries and by an estimate of the bytes held; 0 entries turns it off.
    cache_entries: int = Field(default=10_000, ge=0)
    cache_max_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    # A candidate run as shadow (streamer/shadow.py): agreement with the served labels, never published.
    shadow: ShadowConfig | None = None

    @model_validator(mode="after")
    def _shadow_heads_match(self) -> ModelConfig:
        if self.shadow is None:
            return self
        heads = [_bundle_heads(self.path), _bundle_heads(self.shadow.path)]
        if heads[0] is not None and heads[1] is not None and heads[0] != heads[1]:
            raise ValueError(
                f"model.shadow.path: the shadow bundle's heads {heads[1]} differ from the served "
                f"bundle's {heads[0]} (model.path): it cannot be compared label by label"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _precision_follows_variant(cls, data: Any) -> Any:
        """Fill precision from variant or variant from precision; refuse the two disagreeing."""
        if not isinstance(data, dict):
            return data
        variant, precision = data.get("variant"), data.get("precision")
        if variant is None and precision is None:
            return data
        if precision is None:
            return {**data, "precision": variant}
        if variant is None:
            return {**data, "variant": "int8" if str(precision) == "int8" else "fp32"}
        if (str(variant) == "int8") != (str(precision) == "int8"):
            raise ValueError(
                f"model.variant={variant} and model.precision={precision} disagree: precision int8 "
                "serves the int8 graph, the other precisions the fp32 graph (set one of them)"
            )
        return data


def _bundle_heads(path: Path) -> list[tuple[str, tuple[str, ...]]] | None:
    """Heads and labels from a bundle's manifest; None where it cannot be read (start-up reports it)."""
    try:
        manifest = json.loads((path / "bundle.json").read_text(encoding="utf-8"))
        return [(str(h["name"]), tuple(str(x) for x in h["labels"])) for h in manifest["heads"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


class DriftConfig(_Section):
    """The served stream against the bundle's reference profile (streamer/drift.py)."""

    enabled: bool = True
    # The sliding window: the last window_messages, and (window_s > 0) only those that young.
    window_messages: int = Field(default=5_000, ge=10)
    window_s: float = Field(default=0.0, ge=0, description="0: bounded by messages only")
    min_messages: int = Field(default=500, ge=1, description="no verdict on a smaller window")
    # ok -> drifting only when each of this many parts of the window breaches on its own, so
    # a burst shorter than the window (negative news: the spike detector's job) is not drift.
    segments: int = Field(default=4, ge=1, le=64)
    js_threshold: float = Field(default=0.15, gt=0, le=1, description="label mix, Jensen-Shannon distance")
    psi_threshold: float = Field(default=0.25, gt=0, description="confidence / entropy PSI")
    rate_threshold: float = Field(
        default=0.1, gt=0, le=1, description="truncation / unknown-token rate change"
    )
    resolve_ratio: float = Field(default=0.8, gt=0, le=1)

    @model_validator(mode="after")
    def _check_window(self) -> DriftConfig:
        if self.min_messages > self.window_messages:
            raise ValueError(
                f"min_messages ({self.min_messages}) must be <= window_messages ({self.window_messages})"
            )
        return self


class BatchingConfig(_Section):
    max_batch_size: int = Field(default=32, gt=0)
    max_wait_ms: float = Field(default=10.0, ge=0)
    max_in_flight: int = Field(default=2_000, gt=0, description="messages fetched but not yet acknowledged")
    bucket_by_length: bool = True
    commit_interval_ms: int = Field(default=1_000, gt=0)

    @model_validator(mode="after")
    def _check_in_flight(self) -> BatchingConfig:
        if self.max_in_flight < self.max_batch_size:
            raise ValueError(
                f"max_in_flight ({self.max_in_flight}) must be >= max_batch_size ({self.max_batch_size})"
            )
        return self


class ExactlyOnceConfig(_Section):
    # Prefix of the per-partition transactional ids (<prefix>-<topic>-<partition>): whoever owns a
    # partition next fences its previous owner. Default sentiwire-<group_id>.
    transactional_id: str | None = Field(default=None, description="prefix; default sentiwire-<group_id>")
    transaction_timeout_ms: int = Field(default=15_000, gt=0)
    # One transaction spans the batches of up to this long: fewer commits, labels visible to
    # read_committed consumers at most this much later.
    commit_interval_ms: int = Field(default=100, gt=0)


class HttpConfig(_Section):
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port")
    enabled: bool = True


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"
