"""A real single-node Apache Kafka broker for tests and local development, without Docker.

The tests must talk to a real broker (transactions, read_committed, group offsets are the
behaviours streamsync relies on, and no mock reproduces them faithfully), but a Docker
engine is not always available. So the broker's jars are resolved from Maven Central with
``mvn`` (see ``pom.xml`` beside this module), cached outside the repository, and run as a
KRaft combined broker+controller on free loopback ports in a throw-away directory.

When ``KAFKA_BOOTSTRAP_SERVERS`` is set that cluster is used instead and nothing starts:
see :func:`kafka_bootstrap_from_env` and :func:`kafka_bootstrap`.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import functools
import importlib.resources
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TextIO

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

# BOOTSTRAP_ENV is re-exported: when it is set, it names an existing cluster and no local
# broker is started.
from streamsync.kafka.config import BOOTSTRAP_ENV as BOOTSTRAP_ENV
from streamsync.kafka.config import admin_config

#: Environment variable overriding the cache root (default ``~/.cache/streamsync``).
CACHE_ENV = "STREAMSYNC_CACHE_DIR"

#: Written last by a fetch, so a fetch interrupted half-way is redone rather than trusted.
_COMPLETE_MARKER = ".complete"
_LOG_TAIL_LINES = 40
_POM_NAMESPACE = "{http://maven.apache.org/POM/4.0.0}"
_DOWNLOADED_JAR = re.compile(r"Downloaded from \S+: \S+/([^/\s]+\.jar)")
#: An Apache Kafka release number (``4.1.1``): the version becomes a directory of the
#: cache and a Maven property, so nothing else (``../``, ``/``, spaces) may get there.
_KAFKA_VERSION = re.compile(r"[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}")


class KafkaFetchError(RuntimeError):
    """The broker's jars could not be resolved (no ``mvn``, no network, unknown version)."""


class BrokerStartError(RuntimeError):
    """The local broker failed to format, start, or answer in time; the message has its log."""


@functools.cache
def default_kafka_version() -> str:
    """The Kafka version pinned in ``pom.xml``: one place decides it for jars and compose."""
    pom = importlib.resources.files("streamsync.dev").joinpath("pom.xml").read_text("utf-8")
    version = ET.fromstring(pom).findtext(
        f"{_POM_NAMESPACE}properties/{_POM_NAMESPACE}kafka.version"
    )
    if not version:
        raise RuntimeError("streamsync/dev/pom.xml has no <kafka.version> property")
    return version.strip()


def check_kafka_version(version: str) -> str:
    """``version`` if it is a Kafka release number such as ``4.1.1``, else ``ValueError``:
    it names a directory under the cache and goes to Maven, so it must be nothing more."""
    if not _KAFKA_VERSION.fullmatch(version):
        raise ValueError(
            f"{version!r} is not an Apache Kafka version such as {default_kafka_version()}"
        )
    return version


def kafka_bootstrap_from_env() -> str | None:
    """The cluster named by ``KAFKA_BOOTSTRAP_SERVERS``, or ``None`` to start a local broker.

    A blank value counts as unset, so ``KAFKA_BOOTSTRAP_SERVERS= pytest`` still works.
    """
    value = os.environ.get(BOOTSTRAP_ENV, "").strip()
    return value or None


def kafka_cache_dir(version: str | None = None) -> Path:
    """Where the jars of ``version`` live: outside the repository, shared by all checkouts."""
    try:
        version = check_kafka_version(version or default_kafka_version())
    except ValueError as exc:
        raise KafkaFetchError(str(exc)) from None
    root = os.environ.get(CACHE_ENV, "").strip()
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "streamsync"
    return base / "kafka" / version


def fetch_kafka_jars(version: str | None = None, *, progress: TextIO | None = None) -> Path:
    """Resolve the broker's jars into the cache (once) and return the ``libs`` directory.

    A file lock serialises concurrent fetches (parallel test workers, two terminals), and
    the jars are downloaded into a scratch directory that is renamed into place only when
    Maven succeeded, so a half-finished fetch is never mistaken for a complete one.
    """
    out = progress if progress is not None else sys.stderr
    version = version or default_kafka_version()
    home = kafka_cache_dir(version)
    libs = home / "libs"
    if (home / _COMPLETE_MARKER).exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(home / ".lock", out):
        if (home / _COMPLETE_MARKER).exists():
            return libs
        _run_maven(version, home, out)
    return libs


@contextlib.contextmanager
def _exclusive_lock(path: Path, out: TextIO) -> Iterator[None]:
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"streamsync: waiting for another Kafka jar fetch ({path})", file=out, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_maven(version: str, home: Path, out: TextIO) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaFetchError(
            "Maven (mvn) is needed to fetch the Kafka broker jars; install it, "
            f"or point {BOOTSTRAP_ENV} at a running Kafka cluster"
        )
    # The POM is copied next to the cache so an installed, read-only package still works.
    pom = home / "pom.xml"
    pom.write_bytes(importlib.resources.files("streamsync.dev").joinpath("pom.xml").read_bytes())
    partial = home / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        mvn, "-B", "-f", str(pom), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={partial}", f"-Dkafka.version={version}",
    ]  # fmt: skip
    print(
        f"streamsync: fetching Apache Kafka {version} jars from Maven Central into {home} "
        "(first run only)",
        file=out,
        flush=True,
    )
    started = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=_LOG_TAIL_LINES)
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=home
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        tail.append(line.rstrip())
        if match := _DOWNLOADED_JAR.search(line):
            print(f"streamsync:   downloaded {match.group(1)}", file=out, flush=True)
    if proc.wait() != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise KafkaFetchError(
            f"mvn could not resolve Apache Kafka {version} (exit {proc.returncode}):\n"
            + "\n".join(tail)
        )
    if not (partial / f"kafka_2.13-{version}.jar").exists():
        raise KafkaFetchError(f"mvn finished but kafka_2.13-{version}.jar is not in {partial}")
    libs = home / "libs"
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    (home / _COMPLETE_MARKER).write_text(f"{version}\n")
    jars = sum(1 for _ in libs.glob("*.jar"))
    print(
        f"streamsync: fetched {jars} jars in {time.monotonic() - started:.0f}s",
        file=out,
        flush=True,
    )


def server_properties(*, port: int, controller_port: int, log_dir: Path) -> dict[str, str]:
    """The broker's configuration: one KRaft node that is its own quorum, on 127.0.0.1.

    Every internal topic gets replication factor 1 and min ISR 1, since there is only one
    broker to hold replicas; without that transactions and group commits cannot work.
    Internal topics get one partition so the first group join or transaction does not wait
    for fifty partitions to be created. Rebalances start at once rather than after the
    3s default delay, which only helps clusters where many members join together.
    """
    host = "127.0.0.1"
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }


def log4j2_properties(log_file: Path) -> str:
    """A log4j2 config sending everything to ``log_file``: the console stays readable."""
    return "\n".join(
        [
            "status = warn",
            "appender.file.type = File",
            "appender.file.name = FILE",
            f"appender.file.fileName = {log_file}",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = FILE",
            "",
        ]
    )


def _write_properties(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()), "utf-8")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _check_port_free(port: int) -> None:
    """:class:`BrokerStartError` when ``127.0.0.1:port`` is taken: otherwise the new broker
    fails to bind while the readiness probe is answered by whatever listens there.
    ``SO_REUSEADDR``, as the broker's own socket has, so a port left in TIME_WAIT by a
    broker just stopped still counts as free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            reason = (
                "is already in use"
                if exc.errno == errno.EADDRINUSE
                else exc.strerror or "cannot be bound"
            )
            raise BrokerStartError(f"port {port} on 127.0.0.1 {reason}; pick another") from None


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return "".join(collections.deque(handle, maxlen=lines))
    except FileNotFoundError:
        return ""


class LocalBroker:
    """A throw-away Kafka broker process; use as a context manager.

    ``port`` fixes the client port (``streamsync dev kafka start --port 9092``); by default
    a free one is picked. Everything the broker writes lives in a temporary directory that
    is removed on stop.
    """

    def __init__(
        self,
        *,
        version: str | None = None,
        port: int | None = None,
        startup_timeout: float = 120.0,
        progress: TextIO | None = None,
    ) -> None:
        self.version = version or default_kafka_version()
        self._port = port
        self._startup_timeout = startup_timeout
        self._progress = progress
        self._proc: subprocess.Popen[bytes] | None = None
        self._data_dir: Path | None = None
        self._bootstrap: str | None = None
        #: the id this broker's storage was formatted with: the readiness probe must
        #: hear it, not another broker's on the same port
        self._cluster_id: str | None = None

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for clients; only valid between start and stop."""
        if self._bootstrap is None:
            raise RuntimeError("LocalBroker is not running")
        return self._bootstrap

    @property
    def data_dir(self) -> Path:
        """The temporary directory holding config, data and ``server.log``."""
        if self._data_dir is None:
            raise RuntimeError("LocalBroker is not running")
        return self._data_dir

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Fetch the jars if needed, format storage, start the JVM and wait until it answers."""
        if self._proc is not None:
            raise RuntimeError("LocalBroker already started")
        if self._port is not None:
            _check_port_free(self._port)
        libs = fetch_kafka_jars(self.version, progress=self._progress)
        self._data_dir = Path(tempfile.mkdtemp(prefix="streamsync-kafka-"))
        try:
            self._launch(libs)
        except BaseException:
            self.stop()
            raise

    def _launch(self, libs: Path) -> None:
        data = self.data_dir
        port = self._port or _free_port()
        properties = data / "server.properties"
        _write_properties(
            properties,
            server_properties(port=port, controller_port=_free_port(), log_dir=data / "kraft-logs"),
        )
        log4j = data / "log4j2.properties"
        log4j.write_text(log4j2_properties(self.log_file), "utf-8")
        java = [
            _java(),
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={data}",
            "-cp",
            str(libs / "*"),
        ]
        cluster_id = self._tool([*java, "kafka.tools.StorageTool", "random-uuid"]).strip()
        self._cluster_id = cluster_id
        self._tool(
            [
                *java,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id,
                "-c",
                str(properties),
            ]
        )
        console = data / "console.log"
        with console.open("wb") as sink:
            # A session of its own: Ctrl-C in a terminal reaches Python, which stops the
            # broker in order, instead of killing the JVM mid-write.
            self._proc = subprocess.Popen(
                [*java[:1], "-Xmx512m", "-Xms256m", *java[1:], "kafka.Kafka", str(properties)],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._bootstrap = f"127.0.0.1:{port}"
        self._wait_until_ready(console)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop the broker process (a controlled shutdown) and start it again on the same
        data and ports, as an operator's rolling restart does: for fault tests."""
        proc = self._proc
        if proc is None:
            raise RuntimeError("LocalBroker is not running")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        console = self.data_dir / "console.log"
        with console.open("ab") as sink:
            self._proc = subprocess.Popen(
                proc.args,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_ready(console)

    def _tool(self, command: list[str]) -> str:
        result = subprocess.run(
            command, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
        )
        if result.returncode != 0:
            raise BrokerStartError(
                f"{' '.join(command[-6:])} failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def _wait_until_ready(self, console: Path) -> None:
        # librdkafka reports every refused connection while the JVM boots; those are
        # expected here, and the broker's own log explains any real failure.
        quiet = logging.getLogger("streamsync.dev.broker.probe")
        quiet.propagate = False
        quiet.addHandler(logging.NullHandler())
        admin = AdminClient(admin_config(self.bootstrap_servers, {"logger": quiet}))
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise BrokerStartError(
                    f"Kafka broker exited with code {self._proc.returncode} during start-up"
                    + self._diagnostics(console)
                )
            try:
                metadata = admin.list_topics(timeout=2.0)
            except KafkaException:
                metadata = None
            if metadata is not None and metadata.brokers:
                if metadata.cluster_id == self._cluster_id:
                    return
                raise BrokerStartError(
                    f"another Kafka broker (cluster {metadata.cluster_id}) answers on "
                    f"{self.bootstrap_servers}; pick another port"
                )
            time.sleep(0.2)
        raise BrokerStartError(
            f"Kafka broker did not answer on {self.bootstrap_servers} within "
            f"{self._startup_timeout:.0f}s" + self._diagnostics(console)
        )

    def _diagnostics(self, console: Path) -> str:
        return (
            f"\n--- {self.log_file} (tail) ---\n{_tail(self.log_file)}"
            f"--- {console} (tail) ---\n{_tail(console)}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a controlled shutdown), SIGKILL if that hangs, then delete the data."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
        self._data_dir = None
        self._bootstrap = None


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerStartError(
            f"Java 17+ is needed to run the local Kafka broker; install it, "
            f"or point {BOOTSTRAP_ENV} at a running Kafka cluster"
        )
    return java


@contextlib.contextmanager
def kafka_bootstrap(**broker_options: object) -> Iterator[str]:
    """Bootstrap servers for the cluster to use: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a
    :class:`LocalBroker` that lives as long as the ``with`` block.
    """
    external = kafka_bootstrap_from_env()
    if external is not None:
        yield external
        return
    with LocalBroker(**broker_options) as broker:  # type: ignore[arg-type]
        yield broker.bootstrap_servers
