"""The KRaft cluster id must never look like a command-line option to kafka-storage."""

from __future__ import annotations

import base64
import uuid

import pytest

from sentiwire.devbroker import jvm as devbroker


def test_cluster_id_starting_with_dash_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    dashed = uuid.UUID(bytes=b"\xf8" + bytes(15))  # url-safe base64 of 0xF8.. starts with "-"
    plain = uuid.UUID(bytes=bytes(16))
    assert base64.urlsafe_b64encode(dashed.bytes).decode().startswith("-")
    draws = iter([dashed, plain])
    monkeypatch.setattr(devbroker.uuid, "uuid4", lambda: next(draws))

    cluster_id = devbroker.random_cluster_id()

    assert cluster_id == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")


def test_cluster_ids_are_22_url_safe_chars_never_leading_dash() -> None:
    ids = {devbroker.random_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert set(cluster_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
