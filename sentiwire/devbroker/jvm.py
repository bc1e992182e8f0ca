"""The broker's JVM: command line, config file, KRaft storage format, tie to the parent's life.

Every broker is a plain JVM running ``kafka.Kafka`` in KRaft combined mode (broker +
controller) on loopback, configured from ``deploy/kafka/server.properties``.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import shutil
import signal
import string
import subprocess
import uuid
from pathlib import Path

from sentiwire.devbroker.errors import BrokerError
from sentiwire.devbroker.jars import KAFKA_DIR
from sentiwire.devbroker.security import SaslSsl, scram_args, security_properties

SERVER_TEMPLATE = KAFKA_DIR / "server.properties"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"


def random_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, url-safe base64 (what ``kafka-storage random-uuid`` prints).

    Like Kafka's own ``Uuid.randomUuid()``, ids starting with ``-`` are drawn again: the
    storage tool's argument parser would take such an id for an option (1 start in 64 failed).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def render_server_properties(
    *,
    port: int,
    controller_port: int,
    log_dirs: Path,
    sasl_ssl: SaslSsl | None = None,
    sasl_ssl_port: int | None = None,
) -> str:
    """The broker config: the template in ``deploy/kafka/server.properties`` with ports and dirs,
    plus the SASL_SSL listener on ``sasl_ssl_port`` when ``sasl_ssl`` is given."""
    template = string.Template(SERVER_TEMPLATE.read_text())
    extra = {"extra_listeners": "", "extra_protocol_map": ""}
    if sasl_ssl is not None:
        if sasl_ssl_port is None:
            raise BrokerError("a SASL_SSL listener needs its port")
        extra = {
            "extra_listeners": f",SASL_SSL://127.0.0.1:{sasl_ssl_port}",
            "extra_protocol_map": ",SASL_SSL:SASL_SSL",
        }
    text = template.substitute(port=port, controller_port=controller_port, log_dirs=str(log_dirs), **extra)
    return text + (security_properties(sasl_ssl) if sasl_ssl is not None else "")


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            "java is not installed; Kafka needs Java 17+ (apt-get install openjdk-17-jre-headless)"
        )
    return java


def jvm_cmd(libs: Path, main: str, *, heap: str, logs_dir: Path) -> list[str]:
    """``java ... -cp libs/* main`` with the heap, GC and log4j settings every Kafka tool gets."""
    return [
        _java(),
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={logs_dir}",
        "-cp",
        f"{libs}/*",
        main,
    ]


def die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM the JVM if the Python process that started it dies.

    A killed test session must not leave brokers eating the shared machine's memory.
    """
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    os.setsid()


def format_storage(
    libs: Path,
    config: Path,
    *,
    cluster_id: str,
    logs_dir: Path,
    heap: str = "256m",
    sasl_ssl: SaslSsl | None = None,
) -> None:
    """Format the KRaft log dir (``kafka-storage format``), once per data dir; with ``sasl_ssl``
    its SCRAM users are created in the same step (KRaft keeps them in the metadata log)."""
    cmd = [
        *jvm_cmd(libs, "kafka.tools.StorageTool", heap=heap, logs_dir=logs_dir),
        "format",
        "--ignore-formatted",
        "-t",
        cluster_id,
        "-c",
        str(config),
        *(scram_args(sasl_ssl) if sasl_ssl is not None else []),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        # The command line holds the SCRAM passwords: name the config, not the command.
        raise BrokerError(
            f"formatting KRaft storage failed ({config}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
