"""Throw-away TLS material for a dev broker's SASL_SSL listener, made with openssl.

A private CA, a broker certificate for ``127.0.0.1``/``localhost`` signed by it, and the
PKCS12 keystore the JVM reads. Tests make a fresh set per broker (and a second, unrelated CA
to show a client that trusts the wrong CA is refused). Keys are EC P-256: quick to make.
Never use this for production.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sentiwire.devbroker.errors import BrokerError

DAYS = "2"


@dataclass(frozen=True)
class TlsFiles:
    """``ca_pem`` is what clients trust (``kafka.ssl_cafile``); the keystore is the broker's."""

    ca_pem: Path
    ca_key: Path
    broker_pem: Path
    keystore: Path  # PKCS12: broker key, certificate and the CA
    keystore_password: str


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise BrokerError("openssl is not installed; it makes the dev broker's TLS certificates")
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BrokerError(f"openssl {args[0]} failed:\n{proc.stderr[-2000:]}")


def make_ca(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    """A self-signed CA: (``<name>.pem``, ``<name>.key``) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    pem, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", str(key), "-out", str(pem), "-days", DAYS, "-subj", f"/CN=sentiwire dev {name}"),
        *("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        cwd=directory,
    )
    return pem, key


def make_broker_tls(directory: Path) -> TlsFiles:
    """A CA and a broker certificate signed by it (SAN ``IP:127.0.0.1``, ``DNS:localhost``), so
    clients verify the hostname of a loopback bootstrap too."""
    ca_pem, ca_key = make_ca(directory)
    key, csr, pem = directory / "broker.key", directory / "broker.csr", directory / "broker.pem"
    ext = directory / "broker.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyAgreement\n"
    )
    _openssl(
        *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost"),
        cwd=directory,
    )
    _openssl(
        *("x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key), "-CAcreateserial"),
        *("-out", str(pem), "-days", DAYS, "-extfile", str(ext)),
        cwd=directory,
    )
    password = secrets.token_urlsafe(16)
    keystore = directory / "broker.p12"
    _openssl(
        *("pkcs12", "-export", "-in", str(pem), "-inkey", str(key), "-certfile", str(ca_pem)),
        *("-name", "broker", "-out", str(keystore), "-passout", f"pass:{password}"),
        cwd=directory,
    )
    return TlsFiles(ca_pem, ca_key, pem, keystore, password)
