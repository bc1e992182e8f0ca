"""A real single-node Apache Kafka 4.x broker for development, tests, the demo and benchmarks.

No Docker here, so the broker runs straight from Apache Kafka's jars: Maven fetches them once
from Maven Central (``deploy/kafka/pom.xml``) into a cache (``.kafka/libs``), and every broker
is a plain JVM running ``kafka.Kafka`` in KRaft combined mode (broker + controller) on
loopback. Tests get one per session (``tests/fixtures/kafka.py``); ``sentiwire dev broker``
and ``make kafka`` run one in the foreground.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_DIR = REPO_ROOT / "deploy" / "kafka"
POM = KAFKA_DIR / "pom.xml"
SERVER_TEMPLATE = KAFKA_DIR / "server.properties"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"
DEFAULT_LIBS = REPO_ROOT / ".kafka" / "libs"
# Marks a complete jar cache; holds the pom's hash so a changed pom (new Kafka version) refetches.
STAMP = ".complete"
DEFAULT_HEAP = "512m"

_T = TypeVar("_T")


class BrokerError(RuntimeError):
    """The local broker could not be fetched, formatted or started; the message says which step."""


def libs_dir() -> Path:
    """The jar cache: ``$SENTIWIRE_KAFKA_LIBS`` or ``.kafka/libs`` in the repository."""
    return Path(os.environ.get("SENTIWIRE_KAFKA_LIBS", DEFAULT_LIBS)).resolve()


def _pom_digest() -> str:
    import hashlib

    return hashlib.sha256(POM.read_bytes()).hexdigest()


def ensure_jars(libs: Path | None = None, *, quiet: bool = True) -> Path:
    """Fetch the Kafka jars once (``mvn dependency:copy-dependencies``) and return their folder.

    Several test sessions may start at once on one machine, so the fetch holds a file lock
    and lands in a temporary folder that is renamed into place only when complete.
    """
    libs = (libs or libs_dir()).resolve()
    if not POM.exists():
        raise BrokerError(f"{POM} is missing: the jar list for the local broker lives there")
    digest = _pom_digest()
    stamp = libs / STAMP
    if stamp.exists() and stamp.read_text().strip() == digest:
        return libs
    if shutil.which("mvn") is None:
        raise BrokerError(
            "mvn (Apache Maven) is not installed; it fetches the Kafka jars (apt-get install maven)"
        )
    libs.parent.mkdir(parents=True, exist_ok=True)
    lock_path = libs.parent / f".{libs.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text().strip() == digest:
            return libs
        staging = Path(tempfile.mkdtemp(prefix=f".{libs.name}-", dir=libs.parent))
        cmd = [
            "mvn",
            "-B",
            *(["-q"] if quiet else []),
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        proc = subprocess.run(cmd, capture_output=quiet, text=True, check=False)
        if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            tail = (proc.stdout or "")[-2000:] + (proc.stderr or "")[-2000:]
            raise BrokerError(f"fetching the Kafka jars failed ({' '.join(cmd)}):\n{tail}")
        (staging / STAMP).write_text(digest + "\n")
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
    return libs


def kafka_version(libs: Path | None = None) -> str:
    """The Kafka version of the cached jars, read from the broker jar's file name."""
    jars = sorted((libs or libs_dir()).glob("kafka_2.13-*.jar"))
    if not jars:
        raise BrokerError(f"no kafka_2.13 jar in {libs or libs_dir()}; run `make kafka-jars`")
    return jars[0].name.removeprefix("kafka_2.13-").removesuffix(".jar")


def free_port() -> int:
    """A TCP port that is free on loopback right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def random_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, url-safe base64 (what ``kafka-storage random-uuid`` prints).

    Like Kafka's own ``Uuid.randomUuid()``, ids starting with ``-`` are drawn again: the
    storage tool's argument parser would take such an id for an option (1 start in 64 failed).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def render_server_properties(*, port: int, controller_port: int, log_dirs: Path) -> str:
    """The broker config: the template in ``deploy/kafka/server.properties`` with ports and dirs."""
    template = string.Template(SERVER_TEMPLATE.read_text())
    return template.substitute(port=port, controller_port=controller_port, log_dirs=str(log_dirs))


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            "java is not installed; Kafka needs Java 17+ (apt-get install openjdk-17-jre-headless)"
        )
    return java


def _jvm_cmd(libs: Path, main: str, *, heap: str, logs_dir: Path) -> list[str]:
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


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM the JVM if the Python process that started it dies.

    A killed test session must not leave brokers eating the shared machine's memory.
    """
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    os.setsid()


@dataclass
class BrokerHandle:
    """A running broker. ``bootstrap`` is what clients connect to; ``stop()`` ends it."""

    bootstrap: str
    port: int
    controller_port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    version: str
    started_in_s: float
    _owns_workdir: bool = field(default=False, repr=False)

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
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> BrokerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _run_in_thread(make: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion on a private event loop in a private thread.

    Lets sync code (fixtures, the CLI) use aiokafka even when the caller's thread already
    runs an event loop, as pytest-asyncio's session loop does.
    """
    box: dict[str, Any] = {}

    async def wrapper() -> _T:
        return await make()

    def target() -> None:
        try:
            box["value"] = asyncio.run(wrapper())
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name="devbroker-admin", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    value: _T = box["value"]
    return value


async def cluster_metadata(bootstrap: str, *, timeout_s: float = 5.0) -> dict[str, Any]:
    """One metadata round trip: the broker list and controller, as aiokafka's admin client reports."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        info: dict[str, Any] = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
        return info
    finally:
        await admin.close()


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
            info = _run_in_thread(lambda: cluster_metadata(bootstrap))
            if info.get("brokers") and info.get("controller_id", -1) != -1:
                return
            last_error = f"metadata lists no broker/controller yet: {info}"
        except Exception as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.3)
    raise fail(f"was not ready after {timeout_s:.0f} s (last: {last_error})")


def format_storage(libs: Path, config: Path, *, cluster_id: str, logs_dir: Path, heap: str = "256m") -> None:
    """Format the KRaft log dir (``kafka-storage format``), once per data dir."""
    cmd = [
        *_jvm_cmd(libs, "kafka.tools.StorageTool", heap=heap, logs_dir=logs_dir),
        "format",
        "--ignore-formatted",
        "-t",
        cluster_id,
        "-c",
        str(config),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BrokerError(
            f"formatting KRaft storage failed ({config}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )


def start_broker(
    port: int | None = None,
    workdir: Path | str | None = None,
    *,
    controller_port: int | None = None,
    heap: str = DEFAULT_HEAP,
    libs: Path | None = None,
    ready_timeout_s: float = 120.0,
    die_with_parent: bool = True,
) -> BrokerHandle:
    """Start a single-node KRaft broker and return once clients can use it.

    ``port``/``controller_port`` default to free loopback ports. ``workdir`` holds the config,
    data (``data/``) and logs (``logs/server.log``); an existing formatted data dir is reused,
    so ``sentiwire dev broker --data-dir`` keeps topics across restarts. Without ``workdir``
    a temporary one is made and removed by ``stop()``. With ``die_with_parent`` the JVM gets
    SIGTERM when the process that started it dies (Linux), so killed test runs leave no broker.
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
    data = wd / "data"
    logs = wd / "logs"
    logs.mkdir(exist_ok=True)
    config = wd / "server.properties"
    config.write_text(render_server_properties(port=port, controller_port=controller_port, log_dirs=data))
    if not (data / "meta.properties").exists():
        format_storage(libs, config, cluster_id=random_cluster_id(), logs_dir=logs)
    out = open(logs / "stdout.log", "ab")  # noqa: SIM115 - the child writes to it after we return
    try:
        proc = subprocess.Popen(
            [*_jvm_cmd(libs, "kafka.Kafka", heap=heap, logs_dir=logs), str(config)],
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
    )
    try:
        wait_ready(bootstrap, timeout_s=ready_timeout_s, process=proc, log_path=handle.log_path)
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


async def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    config: Mapping[str, str] | None = None,
    exist_ok: bool = False,
    timeout_s: float = 30.0,
) -> None:
    """Create topics with explicit partition counts (``{name: partitions}``), replication 1.

    Per-topic errors are raised (aiokafka only returns them), naming the topic.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        new = [
            NewTopic(name, num_partitions=n, replication_factor=1, topic_configs=dict(config or {}))
            for name, n in topics.items()
        ]
        resp = await admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
        errors = []
        for err in resp.topic_errors:
            name, code = err[0], err[1]
            message = err[2] if len(err) > 2 else None
            if code == 0 or (exist_ok and code == 36):  # 36 = TOPIC_ALREADY_EXISTS
                continue
            errors.append(f"{name}: error code {code} ({message})")
        if errors:
            raise BrokerError("creating topics failed: " + "; ".join(errors))
        await _wait_for_leaders(admin, list(topics), timeout_s=timeout_s)
    finally:
        await admin.close()


async def _wait_for_leaders(admin: Any, names: list[str], *, timeout_s: float) -> None:
    """A created topic is usable only once every partition has a leader in the metadata."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        pending = [
            t["topic"]
            for t in described
            if t.get("error_code", 0) != 0 or any(p.get("leader", -1) < 0 for p in t.get("partitions", []))
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise BrokerError(f"topics have no partition leaders after {timeout_s} s: {pending}")
        await asyncio.sleep(0.1)


def create_topics_sync(bootstrap: str, topics: Mapping[str, int], **kwargs: Any) -> None:
    """``create_topics`` for sync callers (works inside a running event loop's thread too)."""
    _run_in_thread(lambda: create_topics(bootstrap, topics, **kwargs))


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
        return 1
    print("broker stopped", file=sys.stderr)
    return 0
