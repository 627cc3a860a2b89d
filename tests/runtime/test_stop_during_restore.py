"""SIGTERM while a partition is being restored: acted on between restore batches, and
the service exits with the clean-stop status (0) before the restore completes, where it
used to be acted on only after every partition was restored.

The restore is held long without depending on how fast this machine is: the changelog
holds about 9 MB more than the local copy, and the broker throttles the service's
client id to 1 KB/s (a client quota), so restoring it takes minutes; the test waits for
the restore to start, sends SIGTERM and waits for the process to exit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from streamsync.config import load_config
from streamsync.dev.broker import fetch_kafka_jars
from streamsync.runtime.app import Application
from tests.runtime.evaluate_support import Instance, Stream, synthetic

pytestmark = pytest.mark.kafka


def _throttle(bootstrap: str, client_id: str, bytes_per_s: int) -> None:
    """A broker quota: fetches by ``client_id`` at most ``bytes_per_s``."""
    java = shutil.which("java")
    assert java is not None
    subprocess.run(
        [java, "-cp", str(fetch_kafka_jars() / "*"), "kafka.admin.ConfigCommand",
         "--bootstrap-server", bootstrap, "--alter", "--entity-type", "clients",
         "--entity-name", client_id, "--add-config", f"consumer_byte_rate={bytes_per_s}"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def test_sigterm_during_a_restore_stops_cleanly_before_it_completes(
    kafka_bootstrap_servers: str, tmp_path: Path
) -> None:
    stream = Stream(kafka_bootstrap_servers, partitions=1)
    stream.produce(synthetic(20, 300, seed=9))
    config = stream.config(tmp_path)
    Application(load_config(config)).run(idle_timeout_s=1.0)  # a changelog and a local copy
    changelog = f"{stream.group}.changelog"
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap_servers, "linger.ms": 5, "acks": "all"}
    )
    for i in range(10):  # keys of no state kind: written to the store as they are
        producer.produce(changelog, key=f"z:{i}".encode(), value=os.urandom(900_000), partition=0)
    assert producer.flush(30) == 0
    client_id = f"slow-restore-{uuid.uuid4().hex[:8]}"
    _throttle(kafka_bootstrap_servers, client_id, 1024)
    settings = orjson.loads(config.read_bytes())
    settings["kafka"]["extra"] = {"client.id": client_id}
    config.write_bytes(orjson.dumps(settings))
    instance = Instance(config, tmp_path / "restart.log", kafka_bootstrap_servers)
    instance.start()
    assert instance.process is not None
    try:
        deadline = time.monotonic() + 60
        while f"{changelog}[0]: restoring changelog offsets" not in instance.log.read_text():
            assert instance.process.poll() is None, instance.log.read_text()
            assert time.monotonic() < deadline, instance.log.read_text()
            time.sleep(0.1)
        instance.process.send_signal(signal.SIGTERM)
        code = instance.process.wait(60)
    finally:
        if instance.process.poll() is None:
            instance.kill()
    text = instance.log.read_text()
    assert code == 0, text
    assert "Traceback" not in text
    assert "stopped while restoring" in text
    assert "changelog records in" not in text  # the restore did not complete
    assert "assigned partitions" not in text  # nor was the task opened
    assert "evaluate stopped (stop)" in text
