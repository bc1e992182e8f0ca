"""Create, check and delete ACLs on a dev broker (Kafka's CreateAcls / DescribeAcls / DeleteAcls, v1).

aiokafka has no ACL admin calls and the broker's jars hold no ``kafka-acls`` tool, so this
speaks the two requests itself over a plain socket: they are small, fixed-layout (v1 is
the oldest version Kafka 4 accepts and not yet "flexible"). It talks to the PLAINTEXT
listener, whose anonymous principal is a super user on a secured dev broker (see
``security.py``); the listener under test is the SASL_SSL one.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from sentiwire.devbroker.admin import run_in_thread
from sentiwire.devbroker.errors import BrokerError

Resource = Literal["topic", "group", "cluster", "transactional_id"]
Operation = Literal[
    "all", "read", "write", "create", "delete", "alter", "describe", "describe_configs", "idempotent_write"
]

# Kafka's enum codes (org.apache.kafka.common.resource / acl).
_RESOURCE = {"any": 1, "topic": 2, "group": 3, "cluster": 4, "transactional_id": 5}
_PATTERN = {"any": 1, "literal": 3, "prefixed": 4}
_OPERATION = {
    "any": 1,
    "all": 2,
    "read": 3,
    "write": 4,
    "create": 5,
    "delete": 6,
    "alter": 7,
    "describe": 8,
    "describe_configs": 10,
    "idempotent_write": 12,
}
_PERMISSION = {"any": 1, "deny": 2, "allow": 3}
_DESCRIBE_ACLS, _CREATE_ACLS, _DELETE_ACLS, _VERSION = 29, 30, 31, 1
# The controller commits an ACL before the broker's authorizer has applied it: poll this often.
_APPLIED_POLL_S = 0.1


@dataclass(frozen=True)
class Acl:
    """``principal`` (``User:<name>``) may (``allow``) or may not (``deny``) do ``operation`` on a resource."""

    principal: str
    resource: Resource
    name: str
    operation: Operation
    permission: Literal["allow", "deny"] = "allow"
    pattern: Literal["literal", "prefixed"] = "literal"
    host: str = "*"


def _str(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return s


def _acl_body(acl: Acl) -> bytes:
    return (
        struct.pack(">b", _RESOURCE[acl.resource])
        + _str(acl.name)
        + struct.pack(">b", _PATTERN[acl.pattern])
        + _str(acl.principal)
        + _str(acl.host)
        + struct.pack(">bb", _OPERATION[acl.operation], _PERMISSION[acl.permission])
    )


async def _call(bootstrap: str, api_key: int, body: bytes, timeout_s: float) -> _Reader:
    host, _, port = bootstrap.rpartition(":")
    header = struct.pack(">hhi", api_key, _VERSION, 1) + _str("sentiwire-devbroker-acls")
    payload = header + body
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(struct.pack(">i", len(payload)) + payload)
            await writer.drain()
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            response = _Reader(await reader.readexactly(size))
        finally:
            writer.close()
            await writer.wait_closed()
    if response.take(">i") != 1:
        raise BrokerError(f"ACL request to {bootstrap}: response for another request")
    response.take(">i")  # throttle_time_ms
    return response


async def describe_acl(bootstrap: str, acl: Acl, *, timeout_s: float = 30.0) -> bool:
    """Whether the broker's authorizer holds exactly this ACL now."""
    response = await _call(bootstrap, _DESCRIBE_ACLS, _acl_body(acl), timeout_s)
    code, message = response.take(">h"), response.string()
    if code:
        raise BrokerError(f"describing {acl} failed: error {code} {message or ''}".strip())
    found = False
    for _ in range(response.take(">i")):
        response.take(">b")
        response.string()
        response.take(">b")
        for _ in range(response.take(">i")):
            response.string()
            response.string()
            response.take(">b")
            response.take(">b")
            found = True
    return found


async def _wait_applied(bootstrap: str, acls: Sequence[Acl], *, present: bool, timeout_s: float) -> None:
    """Until the broker (not only the controller) enforces the change: a client that connects
    right after must see it."""
    async with asyncio.timeout(timeout_s):
        for acl in acls:
            # Polling: the broker applies metadata on its own; nothing here could be notified.
            while True:
                if await describe_acl(bootstrap, acl, timeout_s=timeout_s) == present:
                    break
                await asyncio.sleep(_APPLIED_POLL_S)


async def create_acls(bootstrap: str, acls: Iterable[Acl], *, timeout_s: float = 30.0) -> None:
    """Create the ACLs (PLAINTEXT ``bootstrap``) and return once the broker enforces them;
    raises BrokerError naming each one refused."""
    wanted = list(acls)
    body = struct.pack(">i", len(wanted)) + b"".join(_acl_body(a) for a in wanted)
    response = await _call(bootstrap, _CREATE_ACLS, body, timeout_s)
    errors = []
    for acl in wanted[: response.take(">i")]:
        code, message = response.take(">h"), response.string()
        if code:
            errors.append(f"{acl}: error {code} {message or ''}".strip())
    if errors:
        raise BrokerError("creating ACLs failed: " + "; ".join(errors))
    await _wait_applied(bootstrap, wanted, present=True, timeout_s=timeout_s)


async def delete_acls(bootstrap: str, acls: Sequence[Acl], *, timeout_s: float = 30.0) -> int:
    """Delete exactly these ACLs and return once the broker no longer enforces them; returns how
    many were removed."""
    body = struct.pack(">i", len(acls)) + b"".join(_acl_body(a) for a in acls)
    response = await _call(bootstrap, _DELETE_ACLS, body, timeout_s)
    removed = 0
    for acl in acls[: response.take(">i")]:
        code, message = response.take(">h"), response.string()
        if code:
            raise BrokerError(f"deleting {acl} failed: error {code} {message or ''}".strip())
        for _ in range(response.take(">i")):
            response.take(">h")
            response.string()
            response.take(">b")
            response.string()
            response.take(">b")
            response.string()
            response.string()
            response.take(">b")
            response.take(">b")
            removed += 1
    await _wait_applied(bootstrap, acls, present=False, timeout_s=timeout_s)
    return removed


def create_acls_sync(bootstrap: str, acls: Iterable[Acl], **kwargs: float) -> None:
    """``create_acls`` for sync callers (fixtures)."""
    wanted = list(acls)
    run_in_thread(lambda: create_acls(bootstrap, wanted, **kwargs))
