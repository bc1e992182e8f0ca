"""Daemon settings: one YAML file plus ``SENTIWIRE_*`` environment variables (env wins).

Every section lives in this package (``sections``, ``alerts``), so the alerting, Kafka and model
code can import their settings without an import cycle back into their own packages.

Validated once at start-up. Errors name the dotted field and the offending value, except for
secrets, whose values never reach a log line or an error message (they are ``SecretStr``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from streamer.config.alerts import AlertsConfig
from streamer.config.sections import (
    BatchingConfig,
    DriftConfig,
    ExactlyOnceConfig,
    HttpConfig,
    InputConfig,
    KafkaConfig,
    LoggingConfig,
    ModelConfig,
    OutputConfig,
    ShadowConfig,
)
from streamer.enums import Delivery
from streamer.errors import UsageError

ENV_PREFIX = "SENTIWIRE_"
_SECRET_HINTS = ("password", "secret", "token")


class ConfigError(UsageError):
    """Invalid or unreadable configuration; the message names the field or file."""


class Settings(BaseSettings):
    """Everything ``sentiwire serve`` needs. Load with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )

    kafka: KafkaConfig = KafkaConfig()
    input: InputConfig = InputConfig()
    output: OutputConfig = OutputConfig()
    model: ModelConfig = ModelConfig()
    batching: BatchingConfig = BatchingConfig()
    delivery: Delivery = Delivery.AT_LEAST_ONCE
    exactly_once: ExactlyOnceConfig = ExactlyOnceConfig()
    http: HttpConfig = HttpConfig()
    logging: LoggingConfig = LoggingConfig()
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    drift: DriftConfig = DriftConfig()
    alerts: AlertsConfig = AlertsConfig()

    @model_validator(mode="after")
    def _check_topics(self) -> Settings:
        outputs = {self.output.labels_topic, self.output.dead_letter_topic}
        clash = outputs.intersection(self.input.topics)
        if clash:
            raise ValueError(
                f"input.topics and output topics overlap: {sorted(clash)} (the daemon would loop)"
            )
        if self.output.labels_topic == self.output.dead_letter_topic:
            raise ValueError("output.labels_topic and output.dead_letter_topic must differ")
        shadow_topic = self.output.shadow_labels_topic
        if shadow_topic is not None:
            if self.model.shadow is None:
                raise ValueError(
                    "output.shadow_labels_topic needs model.shadow (a shadow bundle to label with)"
                )
            if shadow_topic in {*outputs, *self.input.topics}:
                raise ValueError(
                    f"output.shadow_labels_topic {shadow_topic!r} is also an input, labels or dead-letter topic"
                )
        return self

    def transactional_id(self) -> str:
        """Prefix of the transactional ids, one per owned input partition (sinks.TransactionalSink)."""
        return self.exactly_once.transactional_id or f"sentiwire-{self.input.group_id}"


class _DictSource(PydanticBaseSettingsSource):
    """Feeds the parsed YAML file to pydantic-settings below the environment."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _is_secret(loc: tuple[int | str, ...]) -> bool:
    return any(hint in str(part).lower() for part in loc for hint in _SECRET_HINTS)


def format_validation_error(exc: ValidationError, origin: str) -> str:
    """One line per problem: dotted field, message, offending value (secrets redacted)."""
    lines = [f"invalid configuration ({origin}):"]
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        field = ".".join(str(p) for p in loc) or "<root>"
        value = "<redacted>" if _is_secret(loc) else repr(err.get("input"))
        if len(value) > 200:
            value = value[:200] + "..."
        lines.append(f"  {field}: {err['msg']} (got {value})")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None) -> Settings:
    """Validate the YAML file (optional) overlaid by ``SENTIWIRE_*`` env; raise ConfigError on any problem."""
    data = _read_yaml(Path(path)) if path is not None else {}
    origin = f"file {path} + {ENV_PREFIX}* env" if path is not None else f"{ENV_PREFIX}* env"

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _DictSource(settings_cls, data))

    try:
        return _Loaded()
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration ({origin}): {exc}") from None


__all__ = [
    "ENV_PREFIX",
    "AlertsConfig",
    "BatchingConfig",
    "ConfigError",
    "DriftConfig",
    "ExactlyOnceConfig",
    "HttpConfig",
    "InputConfig",
    "KafkaConfig",
    "LoggingConfig",
    "ModelConfig",
    "OutputConfig",
    "Settings",
    "ShadowConfig",
    "format_validation_error",
    "load_settings",
]
