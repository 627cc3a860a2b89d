"""Exactly-once across a broker restart: the (own, single) broker is stopped and started
again while the evaluate service is committing, and the read-committed deltas equal
replay's transitions with no duplicates.

The service either rides the restart out, or, when librdkafka hangs in a transactional
call after the coordinator came back (see ``streamsync.runtime.checkpoint.Watchdog``), exits
with ``RESTART_EXIT_STATUS`` and is started again, as its supervisor would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from streamsync.dev.broker import LocalBroker
from streamsync.runtime.app import RESTART_EXIT_STATUS
from tests.runtime.evaluate_support import Stream, check_final_deltas, synthetic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture
def own_broker() -> Iterator[LocalBroker]:
    """A broker of this test's own on a free port: the shared one is never restarted."""
    with LocalBroker() as broker:
        yield broker


class Supervised:
    """``streamsync evaluate`` as a supervisor runs it: started again when it exits with
    the status of a hung Kafka call."""

    def __init__(self, config: Path, log: IO[bytes], bootstrap: str) -> None:
        self.args = [sys.executable, "-m", "streamsync", "evaluate", "--config", str(config)]
        self.args += ["--progress-interval", "1"]
        self.log = log
        self.env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
        self.restarts = 0
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.args, stdout=self.log, stderr=self.log, env=self.env)

    def running(self) -> bool:
        code = self.process.poll()
        if code == RESTART_EXIT_STATUS:
            self.restarts += 1
            self.process = self._start()
            return True
        return code is None

    def stop(self) -> int:
        self.running()
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _wait_until_committed(stream: Stream, service: Supervised, log: Path) -> None:
    end = stream.end_offsets()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        committed = stream.committed()
        if all(committed[tp] >= offset for tp, offset in end.items() if offset > 0):
            return
        assert service.running(), log.read_text()
        time.sleep(0.2)
    raise AssertionError(f"input not committed in time: {stream.committed()} < {end}")


def test_broker_restart_mid_stream_loses_and_duplicates_nothing(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    bootstrap = own_broker.bootstrap_servers
    stream = Stream(bootstrap, partitions=2)
    records = synthetic(200, 9000, seed=4)
    path = stream.config(tmp_path, wall_clock=False, session_timeout="6s")
    log_path = tmp_path / "evaluate.log"
    with log_path.open("wb") as log:
        service = Supervised(path, log, bootstrap)
        try:
            stream.produce(records[:3000])
            _wait_until_committed(stream, service, log_path)  # the service is working
            stream.produce(records[3000:6000])
            own_broker.restart()  # while those are being evaluated and committed
            stream.produce(records[6000:])
            _wait_until_committed(stream, service, log_path)
            assert service.stop() == 0, log_path.read_text()
        finally:
            service.kill()
    assert service.restarts <= 2, log_path.read_text()
    check_final_deltas(bootstrap, stream, more_than=1000)
