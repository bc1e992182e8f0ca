"""aiokafka client factories: the only place that maps our config to client arguments.

Security settings (SSL, SASL PLAIN/SCRAM) pass through unchanged to every client; the
alert engine uses :func:`client_kwargs` too so one ``kafka`` section configures all.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, KafkaError, SaslAuthenticationFailed
from aiokafka.helpers import create_ssl_context

from streamer.config import KafkaConfig, Settings
from streamer.enums import Delivery
from streamer.errors import UnavailableError, UsageError

log = structlog.get_logger("sentiwire.kafka")

# Back-off between start-up attempts: doubling from the first to the last value.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0


class KafkaUnavailable(UnavailableError):
    """The brokers did not answer within ``kafka.startup_wait_s``."""


class KafkaRefused(UsageError):
    """The brokers answered and refused us (TLS trust, SASL login): a configuration error."""


class _Startable(Protocol):
    async def start(self) -> None: ...


# Room for our dead-letter headers on top of a maximal input record.
_REQUEST_HEADROOM = 64 * 1024


def client_kwargs(kafka: KafkaConfig) -> dict[str, Any]:
    """Connection and security arguments common to consumers, producers and admin clients."""
    kw: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": kafka.request_timeout_ms,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        try:
            kw["ssl_context"] = create_ssl_context(
                cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
                certfile=str(kafka.ssl_certfile) if kafka.ssl_certfile else None,
                keyfile=str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
                password=kafka.ssl_password.get_secret_value() if kafka.ssl_password else None,
            )
        except ssl.SSLError as exc:  # e.g. ssl_password does not open ssl_keyfile
            raise KafkaRefused(
                f"kafka.ssl_cafile / ssl_certfile / ssl_keyfile / ssl_password: cannot build the TLS context: "
                f"{exc.reason or exc}"
            ) from None
        if not kafka.ssl_check_hostname:
            kw["ssl_context"].check_hostname = False
    if kafka.security_protocol.startswith("SASL_"):
        kw["sasl_mechanism"] = kafka.sasl_mechanism
        kw["sasl_plain_username"] = kafka.sasl_username
        kw["sasl_plain_password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
    return kw


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    """Group consumer with manual commits; read_committed under exactly_once."""
    exactly_once = settings.delivery == Delivery.EXACTLY_ONCE
    return AIOKafkaConsumer(
        **client_kwargs(settings.kafka),
        group_id=settings.input.group_id,
        enable_auto_commit=False,
        auto_offset_reset=settings.input.auto_offset_reset,
        isolation_level="read_committed" if exactly_once else "read_uncommitted",
        session_timeout_ms=settings.input.session_timeout_ms,
        heartbeat_interval_ms=settings.input.heartbeat_interval_ms,
        max_poll_interval_ms=settings.input.max_poll_interval_ms,
        max_partition_fetch_bytes=max(1_048_576, settings.input.max_message_bytes + _REQUEST_HEADROOM),
    )


def make_producer(
    settings: Settings, *, transactional_id: str | None = None, transactional: bool | None = None
) -> AIOKafkaProducer:
    """Idempotent producer (acks=all); transactional under exactly_once (``transactional_id``,
    default the configured prefix) unless ``transactional`` is False (the shadow labels)."""
    kw: dict[str, Any] = {
        **client_kwargs(settings.kafka),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.output.linger_ms,
        "compression_type": settings.output.compression,
        "max_request_size": max(1_048_576, settings.input.max_message_bytes * 2 + _REQUEST_HEADROOM),
    }
    if transactional is None:
        transactional = settings.delivery == Delivery.EXACTLY_ONCE
    if transactional:
        kw["transactional_id"] = transactional_id or settings.transactional_id()
        kw["transaction_timeout_ms"] = settings.exactly_once.transaction_timeout_ms
    return AIOKafkaProducer(**kw)


def make_reader(
    kafka: KafkaConfig, *, client_id: str | None = None, read_committed: bool = True
) -> AIOKafkaConsumer:
    """A group-less consumer for reading assigned partitions (alert engine, corrections, tools).

    ``read_committed`` by default: labels of aborted transactions are never read.
    """
    kw = client_kwargs(kafka)
    if client_id is not None:
        kw["client_id"] = client_id
    return AIOKafkaConsumer(
        **kw,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed" if read_committed else "read_uncommitted",
    )


async def start_with_backoff(client: _Startable, kafka: KafkaConfig, what: str) -> None:
    """``client.start()``, retried with doubling back-off while the brokers cannot be reached.

    Only connection failures are retried (a rolling restart, a broker not up yet). aiokafka
    reports a refused TLS handshake or SASL login the same way, so each failure is probed once
    with a direct connection (:func:`refusal`): a refusal fails at once with
    :class:`KafkaRefused` (exit 2). Gives up with :class:`KafkaUnavailable` after
    ``kafka.startup_wait_s``.
    """
    deadline = time.monotonic() + kafka.startup_wait_s
    delay = BACKOFF_FIRST_S
    attempt = 1
    while True:
        try:
            await client.start()
            return
        except KafkaConnectionError as exc:
            why = await refusal(kafka)
            if why is not None:
                raise KafkaRefused(
                    f"{what}: Kafka at {kafka.bootstrap_servers} refused the connection: {why}"
                ) from None
            if time.monotonic() + delay > deadline:
                raise KafkaUnavailable(
                    f"{what}: Kafka at {kafka.bootstrap_servers} not reachable after {attempt} attempt(s) "
                    f"in {kafka.startup_wait_s:g} s (kafka.startup_wait_s): {exc}"
                ) from exc
            log.warning(
                "Kafka not reachable yet; retrying",
                client=what,
                attempt=attempt,
                retry_in_s=delay,
                bootstrap_servers=kafka.bootstrap_servers,
                error=str(exc),
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
            attempt += 1


async def refusal(kafka: KafkaConfig) -> str | None:
    """Why the first bootstrap server refuses a connection (TLS or SASL), or None when it is just
    not reachable. aiokafka reports both as "Unable to bootstrap" and drops the cause."""
    host, _, port = kafka.bootstrap_servers.split(",")[0].strip().rpartition(":")
    kw = client_kwargs(kafka)
    try:
        conn = await create_conn(
            host,
            int(port),
            client_id=kafka.client_id,
            request_timeout_ms=kafka.request_timeout_ms,
            ssl_context=kw.get("ssl_context"),
            security_protocol=kafka.security_protocol,
            sasl_mechanism=kw.get("sasl_mechanism"),
            sasl_plain_username=kw.get("sasl_plain_username"),
            sasl_plain_password=kw.get("sasl_plain_password"),
        )
    except ssl.SSLError as exc:
        return f"TLS: {exc.reason or exc} (check kafka.ssl_cafile / ssl_check_hostname)"
    except SaslAuthenticationFailed as exc:
        return (
            f"SASL login of {kafka.sasl_username!r} failed: {exc} (check kafka.sasl_username / sasl_password)"
        )
    except (OSError, KafkaError, TimeoutError, ValueError):
        return None
    conn.close()
    return None
