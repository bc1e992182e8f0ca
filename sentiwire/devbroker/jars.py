"""Apache Kafka's jars, fetched once by Maven into a cache every broker runs from.

No Docker here, so the broker runs straight from the jars listed in ``deploy/kafka/pom.xml``;
a stamp holding the pom's hash marks a complete cache, so a changed pom (a new Kafka
version) fetches again.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from sentiwire.devbroker.errors import BrokerError
from sentiwire.paths import REPO_ROOT

KAFKA_DIR = REPO_ROOT / "deploy" / "kafka"
POM = KAFKA_DIR / "pom.xml"
DEFAULT_LIBS = REPO_ROOT / ".kafka" / "libs"
# Marks a complete jar cache; holds the pom's hash so a changed pom (new Kafka version) refetches.
STAMP = ".complete"


def libs_dir() -> Path:
    """The jar cache: ``$SENTIWIRE_KAFKA_LIBS`` or ``.kafka/libs`` in the repository."""
    return Path(os.environ.get("SENTIWIRE_KAFKA_LIBS", DEFAULT_LIBS)).resolve()


def _pom_digest() -> str:
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
