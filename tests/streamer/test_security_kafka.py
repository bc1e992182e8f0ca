"""SASL_SSL against a real broker: SCRAM-SHA-512 over TLS, the StandardAuthorizer and ACLs.

One broker for the module (``sentiwire.devbroker`` with a SASL_SSL listener; CA and broker
certificate made with openssl when the module starts). Users: ``admin`` (super user, makes
the topics over SASL_SSL), ``sentiwire`` (the daemon: may read its input topic and its group,
write labels and dead letters, nothing else) and ``alerter`` (the alert engine: reads labels,
reads and writes its state topic, writes alerts). Shown: labeling works through it, the
daemon's user can do nothing beyond its grants, a wrong password, a wrong CA and a missing ACL
each stop ``sentiwire serve`` at start-up with a clear error that never prints the secret,
and the alert engine connects with the same ``kafka`` settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from prometheus_client import CollectorRegistry

from sentiwire.devbroker import (
    Acl,
    BrokerError,
    BrokerHandle,
    SaslSsl,
    TlsFiles,
    create_acls,
    make_broker_tls,
    make_ca,
    start_broker,
)
from sentiwire.devbroker.admin import run_in_thread
from sentiwire.devbroker.security import scram_args
from streamer.alerting.engine import AlertEngine
from streamer.alerting.metrics import AlertMetrics
from streamer.config import AlertsConfig, KafkaConfig
from streamer.errors import ExitCode
from streamer.kafka import admin as kafka_admin
from streamer.kafka.clients import client_kwargs, make_reader
from streamer.testing import daemon_config
from tests.streamer.helpers import (
    REPO,
    consume_all,
    covers,
    json_messages,
    labeled_positions,
    produce,
    running_daemon,
    settings_from,
    write_config,
)

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificates"),
]

N = 40


@dataclass
class SecureBroker:
    broker: BrokerHandle
    tls: TlsFiles
    passwords: dict[str, str]
    other_ca: Path  # a CA that did not sign the broker's certificate

    @property
    def plaintext(self) -> str:
        return self.broker.bootstrap

    @property
    def sasl_ssl(self) -> str:
        assert self.broker.sasl_ssl_bootstrap is not None
        return self.broker.sasl_ssl_bootstrap

    def kafka(self, user: str, *, password: str | None = None, cafile: Path | None = None) -> dict[str, Any]:
        """The ``kafka`` config section of ``user`` on the SASL_SSL listener."""
        return {
            "bootstrap_servers": self.sasl_ssl,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": user,
            "sasl_password": password if password is not None else self.passwords[user],
            "ssl_cafile": str(cafile or self.tls.ca_pem),
            "request_timeout_ms": 15_000,
            "startup_wait_s": 0,
        }


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    base = tmp_path_factory.mktemp("secure-kafka")
    tls = make_broker_tls(base / "tls")
    other_ca, _ = make_ca(base / "other-ca", name="other-ca")
    passwords = {user: secrets.token_urlsafe(18) for user in ("admin", "sentiwire", "alerter")}
    broker = start_broker(
        workdir=base / "broker",
        sasl_ssl=SaslSsl(tls.keystore, tls.keystore_password, passwords, super_users=("admin",)),
    )
    try:
        yield SecureBroker(broker, tls, passwords, other_ca)
    finally:
        broker.stop()


async def admin_topics(secure: SecureBroker, *names: str, partitions: int = 2) -> None:
    """Created by the super user over SASL_SSL."""
    admin = AIOKafkaAdminClient(**client_kwargs(KafkaConfig(**secure.kafka("admin"))))
    await admin.start()
    try:
        await kafka_admin.create_topics(admin, dict.fromkeys(names, partitions))
    finally:
        await admin.close()


@dataclass
class DaemonTopics:
    topic: str
    labels: str
    dlq: str
    group: str


def daemon_grants(t: DaemonTopics, *, without: str | None = None) -> list[Acl]:
    """What the daemon needs and nothing else; ``without`` leaves one out by its key."""
    grants = {
        "read_input": Acl("User:sentiwire", "topic", t.topic, "read"),
        "read_group": Acl("User:sentiwire", "group", t.group, "read"),
        "write_labels": Acl("User:sentiwire", "topic", t.labels, "write"),
        "write_dlq": Acl("User:sentiwire", "topic", t.dlq, "write"),
    }
    return [acl for key, acl in grants.items() if key != without]


async def daemon_topics(secure: SecureBroker, *, without: str | None = None) -> DaemonTopics:
    suffix = uuid.uuid4().hex[:10]
    t = DaemonTopics(f"in-{suffix}", f"labels-{suffix}", f"dlq-{suffix}", f"group-{suffix}")
    await admin_topics(secure, t.topic, t.labels, t.dlq)
    await create_acls(secure.plaintext, daemon_grants(t, without=without))
    return t


def serve_config(secure: SecureBroker, t: DaemonTopics, tiny_bundle: Path, **kafka: Any) -> dict[str, Any]:
    return daemon_config(
        bootstrap=secure.sasl_ssl,
        bundle=tiny_bundle,
        topics=t.topic,
        labels=t.labels,
        dlq=t.dlq,
        group=t.group,
        kafka={**secure.kafka("sentiwire"), **kafka},
        http={"enabled": False},
    )


def serve(config: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sentiwire", "serve", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


# ---------------------------------------------------------------- it works


async def test_labels_through_sasl_ssl(secure: SecureBroker, tiny_bundle: Path, tmp_path: Path) -> None:
    t = await daemon_topics(secure)
    sent = await produce(
        secure.plaintext, t.topic, [*json_messages([f"Sales rose {i}%." for i in range(N)]), b"x"]
    )
    settings = settings_from(tmp_path, serve_config(secure, t, tiny_bundle))
    assert settings.kafka.security_protocol == "SASL_SSL"
    async with running_daemon(settings, timeout_s=60) as daemon:
        out = await consume_all(secure.plaintext, t.labels, N, timeout_s=60, until=covers(sent[:N]))
        dead = await consume_all(secure.plaintext, t.dlq, 1, timeout_s=60)
    assert daemon.exit_code == ExitCode.OK
    assert sorted(labeled_positions(out)) == sorted(sent[:N])
    assert [r.value for r in dead] == [b"x"]


async def test_the_daemon_user_may_do_nothing_else(secure: SecureBroker) -> None:
    t = await daemon_topics(secure)
    kafka = KafkaConfig(**secure.kafka("sentiwire"))
    producer = AIOKafkaProducer(**client_kwargs(kafka), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(t.labels, b"allowed")
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(producer.send_and_wait(t.topic, b"not allowed: input"), 30)
    finally:
        await producer.stop()
    reader = make_reader(kafka)
    await reader.start()
    try:
        visible = await reader.topics()
        assert {t.topic, t.labels, t.dlq} <= visible
        assert not any(name.startswith("__") for name in visible)
    finally:
        await reader.stop()
    admin = AIOKafkaAdminClient(**client_kwargs(kafka))
    await admin.start()
    try:
        with pytest.raises((KafkaError, kafka_admin.TopicError)):
            await kafka_admin.create_topics(admin, {f"nope-{uuid.uuid4().hex[:8]}": 1})
    finally:
        await admin.close()


# ---------------------------------------------------------------- refused at start-up

REFUSALS = ("wrong_password", "wrong_ca", "missing_acl", "missing_group_acl")
# What the output must name, whoever reports it (aiokafka's log line or the daemon's error).
CAUSE = {
    "wrong_password": r"invalid credentials",
    "wrong_ca": r"CERTIFICATE_VERIFY_FAILED",
    "missing_acl": r"labels-",
    "missing_group_acl": r"group-",
}
# What the daemon's own "cannot start" error should say.
OWN_ERROR = {
    "wrong_password": r"(?i)sasl.*(fail|refus)|credentials",
    "wrong_ca": r"(?i)certificate|tls|ssl",
    "missing_acl": r"(?i)not authori[sz]ed.*labels-",
    "missing_group_acl": r"(?i)not authori[sz]ed for consumer group 'group-",
}


@dataclass
class Refusal:
    proc: subprocess.CompletedProcess[str]
    secrets: tuple[str, ...]

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.output.splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict) and rec.get("event") == name:
                    out.append(rec)
        return out


@pytest.fixture(scope="module")
def refusals(
    secure: SecureBroker, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Refusal]:
    """``sentiwire serve`` run once per refusal, with the daemon's user: a wrong password, a CA
    that did not sign the broker's certificate, no ACL for the labels topic, none for the group. A few seconds of
    ``startup_wait_s``, so a refusal taken for an unreachable broker shows as retries."""
    out: dict[str, Refusal] = {}
    for case in REFUSALS:
        without = {"missing_acl": "write_labels", "missing_group_acl": "read_group"}.get(case)
        t = run_in_thread(functools.partial(daemon_topics, secure, without=without))
        wrong_password = secrets.token_urlsafe(18)
        kafka: dict[str, Any] = {"startup_wait_s": 4}
        if case == "wrong_password":
            kafka["sasl_password"] = wrong_password
        if case == "wrong_ca":
            kafka["ssl_cafile"] = str(secure.other_ca)
        config = write_config(
            tmp_path_factory.mktemp(case) / "c.yaml", serve_config(secure, t, tiny_bundle, **kafka)
        )
        out[case] = Refusal(
            serve(config), (*secure.passwords.values(), wrong_password, secure.tls.keystore_password)
        )
    return out


@pytest.mark.parametrize("case", REFUSALS)
def test_refusal_stops_start_up_names_the_cause_and_never_the_secret(
    case: str, refusals: dict[str, Refusal]
) -> None:
    r = refusals[case]
    assert r.proc.returncode in (ExitCode.USAGE, ExitCode.UNAVAILABLE), r.output[-3000:]
    assert r.events("cannot start"), r.output[-3000:]
    assert not r.events("serving"), r.output[-3000:]
    assert re.search(CAUSE[case], r.output), r.output[-3000:]
    for secret in r.secrets:
        assert secret not in r.output


@pytest.mark.parametrize("case", REFUSALS)
def test_refusal_is_reported_as_a_configuration_error(case: str, refusals: dict[str, Refusal]) -> None:
    """Exit 2 (USAGE: fix the credentials, the trust store or the grants; retrying cannot help),
    at once (no retries), and the daemon's own error says what was refused."""
    r = refusals[case]
    assert r.proc.returncode == ExitCode.USAGE
    assert not r.events("Kafka not reachable yet; retrying")
    (error,) = r.events("cannot start")
    assert re.search(OWN_ERROR[case], error["error"]), error


# ---------------------------------------------------------------- the other clients


async def test_alert_engine_connects_through_sasl_ssl(secure: SecureBroker) -> None:
    suffix = uuid.uuid4().hex[:10]
    labels, alerts, state = f"labels-{suffix}", f"alerts-{suffix}", f"alerts-state-{suffix}"
    await admin_topics(secure, labels, alerts, state, partitions=1)
    await create_acls(
        secure.plaintext,
        [
            Acl("User:alerter", "topic", labels, "read"),
            Acl("User:alerter", "topic", state, "read"),
            Acl("User:alerter", "topic", state, "write"),
            Acl("User:alerter", "topic", alerts, "write"),
        ],
    )
    engine = AlertEngine(
        AlertsConfig(enabled=True, alerts_topic=alerts, state_topic=state, create_topics=False),
        KafkaConfig(**secure.kafka("alerter")),
        labels,
        AlertMetrics(CollectorRegistry()),
    )
    await asyncio.wait_for(engine.start(), 60)
    try:
        assert engine.ready
    finally:
        await engine.stop()


def test_scram_users_the_storage_tool_cannot_parse_are_refused(tmp_path: Path) -> None:
    """The storage tool splits ``[name=..,password=..]`` itself: a comma in a password would
    silently create another user, so the dev broker refuses it up front."""
    listener = SaslSsl(tmp_path / "ks.p12", "pw", {"admin": "a,b"})
    with pytest.raises(BrokerError, match="admin"):
        scram_args(listener)
    assert scram_args(SaslSsl(tmp_path / "ks.p12", "pw", {"admin": "s3cret-_x"})) == [
        "--add-scram",
        "SCRAM-SHA-512=[name=admin,password=s3cret-_x]",
    ]
