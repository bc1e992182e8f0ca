"""An extra SASL_SSL listener for a dev broker: SCRAM-SHA-512 over TLS, ACLs enforced.

What a secured production cluster looks like to a client, on loopback: TLS with a private
CA (``tls.py``), SCRAM-SHA-512 users created when the storage is formatted, and Kafka's
StandardAuthorizer with ``allow.everyone.if.no.acl.found=false``, so a user may do only what
an ACL grants (``acls.py``). The PLAINTEXT and CONTROLLER listeners stay as they are; their
anonymous principal is a super user so the node itself, ``wait_ready`` and the dev tools
keep working. Never use this for production.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sentiwire.devbroker.errors import BrokerError

MECHANISM = "SCRAM-SHA-512"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
# The storage tool parses `[name=...,password=...]` itself; these would split it.
_FORBIDDEN = set(",[]=\"'\n")


@dataclass(frozen=True)
class SaslSsl:
    """The listener: ``users`` (name -> password) are created as SCRAM-SHA-512 credentials when
    a data dir is first formatted (a reused data dir keeps the users it was formatted with);
    ``super_users`` may do anything; everyone else only what ACLs grant."""

    keystore: Path  # PKCS12 holding the broker's key and certificate chain
    keystore_password: str
    users: Mapping[str, str]
    super_users: Sequence[str] = ("admin",)
    port: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)  # more server properties


def scram_args(sasl_ssl: SaslSsl) -> list[str]:
    """``kafka-storage format`` arguments that create the SCRAM users."""
    args: list[str] = []
    for name, password in sasl_ssl.users.items():
        bad = _FORBIDDEN & set(name + password)
        if bad or not name or not password:
            raise BrokerError(
                f"SCRAM user {name!r}: name and password must be non-empty, without {sorted(bad)}"
            )
        args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
    return args


def security_properties(sasl_ssl: SaslSsl) -> str:
    """Server properties of the listener and the authorizer, appended to the rendered template."""
    supers = ";".join(["User:ANONYMOUS", *(f"User:{u}" for u in sasl_ssl.super_users)])
    props = {
        "sasl.enabled.mechanisms": MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "listener.name.sasl_ssl.ssl.keystore.type": "PKCS12",
        "listener.name.sasl_ssl.ssl.keystore.location": str(sasl_ssl.keystore),
        "listener.name.sasl_ssl.ssl.keystore.password": sasl_ssl.keystore_password,
        "listener.name.sasl_ssl.ssl.key.password": sasl_ssl.keystore_password,
        "authorizer.class.name": AUTHORIZER,
        "allow.everyone.if.no.acl.found": "false",
        "super.users": supers,
        **sasl_ssl.extra,
    }
    lines = ["", "# SASL_SSL listener (sentiwire.devbroker.security)"]
    lines += [f"{k}={v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"
