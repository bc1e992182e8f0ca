"""A broker's life: start it on free loopback ports, wait until clients can use it, stop it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentiwire.devbroker.admin import cluster_metadata, run_in_thread
from sentiwire.devbroker.errors import BrokerError
from sentiwire.devbroker.jars import ensure_jars, kafka_version
from sentiwire.devbroker.jvm import die_with_parent as _die_with_parent
from sentiwire.devbroker.jvm import format_storage, jvm_cmd, random_cluster_id, render_server_properties
from sentiwire.devbroker.security import SaslSsl
from sentiwire.procs import free_port, terminate
from streamer.errors import ExitCode

DEFAULT_HEAP = "512m"


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class BrokerHandle:
    """A running broker. ``bootstrap`` is what clients connect to (PLAINTEXT); ``stop()`` ends it.

    ``sasl_ssl_bootstrap`` is the SASL_SSL listener's, when the broker was started with one.
    """

    bootstrap: str
    port: int
    controller_port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    version: str
    started_in_s: float
    _owns_workdir: bool = field(default=False, repr=False)
    sasl_ssl_bootstrap: str | None = None

    @property
    def log_path(self) -> Path:
        """The broker's log4j file (every INFO line)."""
        return self.workdir / "logs" / "server.log"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean controlled shutdown), then SIGKILL after ``timeout`` seconds."""
        terminate(self.process, timeout)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> BrokerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_ready(
    bootstrap: str,
    *,
    timeout_s: float = 120.0,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Block until a metadata request lists the broker and an active controller.

    Raises BrokerError with the tail of the broker log if the JVM exits or time runs out.
    """
    port_s = bootstrap.rpartition(":")[2]
    deadline = time.monotonic() + timeout_s
    last_error = "no attempt yet"

    def fail(why: str) -> BrokerError:
        tail = ""
        if log_path is not None and log_path.exists():
            tail = "\n--- broker log tail ---\n" + "\n".join(
                log_path.read_text(errors="replace").splitlines()[-40:]
            )
        return BrokerError(f"broker at {bootstrap} {why}{tail}")

    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise fail(f"exited with code {process.returncode} before it became ready")
        if not _port_in_use(int(port_s)):
            time.sleep(0.2)
            continue
        try:
            info = run_in_thread(lambda: cluster_metadata(bootstrap))
            if info.get("brokers") and info.get("controller_id", -1) != -1:
                return
            last_error = f"metadata lists no broker/controller yet: {info}"
        except Exception as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.3)
    raise fail(f"was not ready after {timeout_s:.0f} s (last: {last_error})")


def start_broker(
    port: int | None = None,
    workdir: Path | str | None = None,
    *,
    controller_port: int | None = None,
    heap: str = DEFAULT_HEAP,
    libs: Path | None = None,
    ready_timeout_s: float = 120.0,
    die_with_parent: bool = True,
    sasl_ssl: SaslSsl | None = None,
) -> BrokerHandle:
    """Start a single-node KRaft broker and return once clients can use it.

    ``port``/``controller_port`` default to free loopback ports. ``workdir`` holds the config,
    data (``data/``) and logs (``logs/server.log``); an existing formatted data dir is reused,
    so ``sentiwire dev broker --data-dir`` keeps topics across restarts. Without ``workdir``
    a temporary one is made and removed by ``stop()``. With ``die_with_parent`` the JVM gets
    SIGTERM when the process that started it dies (Linux), so killed test runs leave no broker.
    ``sasl_ssl`` adds a SCRAM-SHA-512-over-TLS listener with ACLs enforced (``security.py``).
    """
    t0 = time.monotonic()
    on_main_thread = threading.current_thread() is threading.main_thread()
    libs = ensure_jars(libs)
    owns = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="sentiwire-kafka-")) if workdir is None else Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if _port_in_use(port):
        raise BrokerError(f"port {port} on 127.0.0.1 is already in use; pick another with --port")
    controller_port = controller_port or free_port()
    while controller_port == port:
        controller_port = free_port()
    sasl_ssl_port = None
    if sasl_ssl is not None:
        sasl_ssl_port = sasl_ssl.port or free_port()
        while sasl_ssl_port in (port, controller_port):
            sasl_ssl_port = free_port()
    data = wd / "data"
    logs = wd / "logs"
    logs.mkdir(exist_ok=True)
    config = wd / "server.properties"
    config.write_text(
        render_server_properties(
            port=port,
            controller_port=controller_port,
            log_dirs=data,
            sasl_ssl=sasl_ssl,
            sasl_ssl_port=sasl_ssl_port,
        )
    )
    config.chmod(0o600)  # it holds the keystore password
    if not (data / "meta.properties").exists():
        format_storage(libs, config, cluster_id=random_cluster_id(), logs_dir=logs, sasl_ssl=sasl_ssl)
    out = open(logs / "stdout.log", "ab")  # noqa: SIM115 - the child writes to it after we return
    try:
        proc = subprocess.Popen(
            [*jvm_cmd(libs, "kafka.Kafka", heap=heap, logs_dir=logs), str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=wd,
            # PR_SET_PDEATHSIG fires when the starting *thread* exits, so only tie the JVM's
            # life to the main thread's.
            preexec_fn=_die_with_parent if die_with_parent and on_main_thread else os.setsid,
        )
    finally:
        out.close()
    bootstrap = f"127.0.0.1:{port}"
    handle = BrokerHandle(
        bootstrap=bootstrap,
        port=port,
        controller_port=controller_port,
        workdir=wd,
        process=proc,
        version=kafka_version(libs),
        started_in_s=0.0,
        _owns_workdir=owns,
        sasl_ssl_bootstrap=f"127.0.0.1:{sasl_ssl_port}" if sasl_ssl_port is not None else None,
    )
    try:
        wait_ready(bootstrap, timeout_s=ready_timeout_s, process=proc, log_path=handle.log_path)
        if sasl_ssl_port is not None and not _port_in_use(sasl_ssl_port):
            raise BrokerError(
                f"broker at {bootstrap} is ready but its SASL_SSL port {sasl_ssl_port} is closed"
            )
    except BaseException:
        handle.stop()
        raise
    handle.started_in_s = time.monotonic() - t0
    return handle


@contextlib.contextmanager
def running_broker(**kwargs: Any) -> Iterator[BrokerHandle]:
    """``with running_broker() as b:`` starts a broker and always stops it."""
    handle = start_broker(**kwargs)
    try:
        yield handle
    finally:
        handle.stop()


def main_foreground(port: int, data_dir: Path, heap: str = DEFAULT_HEAP) -> int:
    """Run a broker until Ctrl-C / SIGTERM (``sentiwire dev broker``, ``make kafka``)."""
    handle = start_broker(port=port, workdir=data_dir, heap=heap, die_with_parent=True)
    print(
        f"Kafka {handle.version} ready at {handle.bootstrap} in {handle.started_in_s:.1f} s "
        f"(pid {handle.pid}, data {handle.workdir / 'data'}, log {handle.log_path}); Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop.is_set() and handle.alive():
            stop.wait(0.5)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        code = handle.process.poll()
        handle.stop()
    if code is not None:
        print(f"broker exited on its own with code {code}; see {handle.log_path}", file=sys.stderr)
        return ExitCode.FAILED
    print("broker stopped", file=sys.stderr)
    return ExitCode.OK
