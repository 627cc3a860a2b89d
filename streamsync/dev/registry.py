"""A local Confluent-compatible Schema Registry for tests: Apicurio Registry on loopback.

Like the broker (:mod:`streamsync.dev.broker`), it comes from Maven Central through
``mvn`` (the ``io.apicurio:apicurio-registry-app`` ``all`` distribution: a runnable
Quarkus jar with its libraries and in-memory storage), is cached under
``~/.cache/streamsync/apicurio/<version>`` on first use, and runs on a free loopback
port with Java 17. Apicurio serves the Confluent Schema Registry API under
``/apis/ccompat/v7``, which ``confluent_kafka.schema_registry`` speaks. The 3.x
releases on Maven Central are plain jars that need a Quarkus build first; 2.6 ships
the runnable distribution. ``STREAMSYNC_SCHEMA_REGISTRY_URL`` names a running registry
instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from streamsync.dev.broker import CACHE_ENV, _exclusive_lock, _free_port, _java

#: The Apicurio Registry release fetched (the newest 2.x with a runnable distribution).
APICURIO_VERSION = "2.6.13.Final"
#: A running Confluent-compatible registry to use instead of starting one.
REGISTRY_URL_ENV = "STREAMSYNC_SCHEMA_REGISTRY_URL"
#: The Confluent-compatible API under an Apicurio base URL.
CCOMPAT_PATH = "/apis/ccompat/v7"
_COMPLETE = ".complete"
_READY_TIMEOUT_S = 180.0


class RegistryStartError(RuntimeError):
    """The registry could not be fetched or did not become ready."""


def apicurio_home(version: str = APICURIO_VERSION) -> Path:
    root = os.environ.get(CACHE_ENV, "").strip()
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "streamsync"
    return base / "apicurio" / version


def fetch_apicurio(version: str = APICURIO_VERSION) -> Path:
    """The runnable jar of ``version``, fetched with ``mvn`` and unpacked (once)."""
    home = apicurio_home(version)
    runner = home / f"apicurio-registry-app-{version}-runner.jar"
    if (home / _COMPLETE).exists():
        return runner
    home.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(home / ".lock", sys.stderr):
        if (home / _COMPLETE).exists():
            return runner
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RegistryStartError("Maven (mvn) is needed to fetch Apicurio Registry")
        artifact = f"io.apicurio:apicurio-registry-app:{version}:tar.gz:all"
        print(f"streamsync: fetching Apicurio Registry {version} into {home}", file=sys.stderr)
        done = subprocess.run(
            [mvn, "-B", "-q", "dependency:copy", f"-Dartifact={artifact}",
             f"-DoutputDirectory={home}"],
            capture_output=True, text=True, cwd=home,
        )  # fmt: skip
        if done.returncode != 0:
            raise RegistryStartError(f"mvn could not fetch {artifact}: {done.stdout[-2000:]}")
        archive = home / f"apicurio-registry-app-{version}-all.tar.gz"
        with tarfile.open(archive) as tar:
            tar.extractall(home, filter="data")
        archive.unlink()
        if not runner.exists():
            raise RegistryStartError(f"{archive} holds no {runner.name}")
        (home / _COMPLETE).write_text(f"{version}\n")
    return runner


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def schema_registry(log_file: Path) -> Iterator[str]:
    """The Confluent-compatible URL of a registry: ``STREAMSYNC_SCHEMA_REGISTRY_URL``,
    or an Apicurio Registry started on loopback (logging to ``log_file``) and stopped
    at the end."""
    given = os.environ.get(REGISTRY_URL_ENV, "").strip()
    if given:
        yield given.rstrip("/")
        return
    runner = fetch_apicurio()
    port = _free_port()
    url = f"http://127.0.0.1:{port}{CCOMPAT_PATH}"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [_java(), "-Xmx384m", f"-Dquarkus.http.port={port}",
             "-Dquarkus.http.host=127.0.0.1", "-jar", str(runner)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=runner.parent,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while not _answers(url):
            if process.poll() is not None:
                raise RegistryStartError(f"Apicurio Registry exited; see {log_file}")
            if time.monotonic() > deadline:
                raise RegistryStartError(f"Apicurio Registry not ready; see {log_file}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
