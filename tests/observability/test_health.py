"""Liveness and readiness as the kubelet sees them: /healthz and /readyz over HTTP."""

from __future__ import annotations

import logging
import socket

import pytest

from streamsync.observability.admin import AdminServer, AdminServerError
from streamsync.observability.health import Health
from streamsync.observability.metrics import Telemetry
from tests.observability.scrape import get, scrape, value


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_readiness_flips_with_state_restore() -> None:
    telemetry = Telemetry(role="evaluate")
    try:
        with AdminServer(telemetry, port=0) as admin:
            # Starting: alive (do not restart a pod that is restoring) but not ready.
            assert get(f"{admin.url}/healthz")[0] == 200
            status, _, body = get(f"{admin.url}/readyz")
            assert status == 503 and "state not restored" in body
            assert value(scrape(admin.url), "streamsync_ready") == 0

            telemetry.health.set_ready()
            assert get(f"{admin.url}/readyz")[:1] == (200,)
            assert value(scrape(admin.url), "streamsync_ready") == 1

            telemetry.health.set_not_ready("restoring partitions 3, 4 after a rebalance")
            status, _, body = get(f"{admin.url}/readyz")
            assert status == 503 and "restoring partitions 3, 4" in body
            assert get(f"{admin.url}/healthz")[0] == 200

            telemetry.health.set_ready()
            telemetry.health.fail("deltas producer fenced")
            for path in ("/healthz", "/readyz"):
                status, _, body = get(f"{admin.url}{path}")
                assert status == 503 and "fenced" in body
    finally:
        telemetry.shutdown()


def test_stall_timeout_fails_liveness_until_the_loop_beats_again() -> None:
    clock = FakeClock()
    health = Health(stall_timeout=30.0, clock=clock)
    health.set_ready()
    assert health.liveness() == (True, "")
    clock.now += 29
    assert health.liveness()[0] and health.readiness()[0]
    clock.now += 2
    alive, reason = health.liveness()
    assert not alive and "stalled for 31s" in reason
    assert health.readiness() == (False, reason)
    health.beat()
    assert health.liveness() == (True, "") and health.readiness() == (True, "")


def test_without_stall_timeout_silence_is_fine() -> None:
    clock = FakeClock()
    health = Health(clock=clock)
    clock.now += 10_000
    assert health.liveness() == (True, "")


def test_unknown_path_is_404_and_stop_is_idempotent() -> None:
    telemetry = Telemetry()
    admin = AdminServer(telemetry, port=0).start()
    try:
        assert get(f"{admin.url}/nope")[0] == 404
    finally:
        admin.stop()
        admin.stop()
        telemetry.shutdown()


def test_port_in_use_is_one_clear_error() -> None:
    telemetry = Telemetry()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AdminServerError) as info:
            AdminServer(telemetry, host="127.0.0.1", port=port).start()
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "\n" not in message
    telemetry.shutdown()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /healthz HTTP/1.1\r\n\x01bad header\r\n\r\n",
    ],
    ids=["content-length", "chunk-size", "header"],
)
def test_a_malformed_request_is_one_warning_line_not_an_error_with_a_traceback(
    caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    telemetry = Telemetry(role="evaluate")
    try:
        with caplog.at_level(logging.INFO), AdminServer(telemetry, port=0) as admin:
            with socket.create_connection(("127.0.0.1", admin.port), timeout=10) as conn:
                conn.sendall(request_bytes)
                answer = conn.recv(100)
            assert answer.startswith(b"HTTP/1.") and b" 400 " in answer
            assert get(f"{admin.url}/healthz")[0] == 200  # still serving
    finally:
        telemetry.shutdown()
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [r.levelname for r in records] == ["WARNING"], [r.getMessage() for r in records]
    assert records[0].exc_info is None
    assert records[0].getMessage().startswith("admin port: malformed request from 127.0.0.1")
