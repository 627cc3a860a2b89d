"""``streamsync demo --console``: after the demo, the console serves its data on
loopback with a token printed once; the pages answer with it and only with it, and the
token is in no log record."""

from __future__ import annotations

import io
import logging
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

from streamsync.config import AppConfig
from streamsync.dev.demo import DemoResult, run_demo
from streamsync.dev.demo_console import serve_demo_console

pytestmark = pytest.mark.kafka


def _get(url: str, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_the_demo_serves_the_console_on_its_data_with_a_one_time_token(
    kafka_bootstrap_servers: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap_servers)
    caplog.set_level(logging.DEBUG)
    out = io.StringIO()
    stop = threading.Event()
    seen: dict[str, Any] = {}

    def ready(url: str, token: str) -> None:
        # Runs on the console's loop: the requests go from a thread of their own.
        def check() -> None:
            try:
                seen["url"], seen["token"] = url, token
                seen["audiences"] = _get(f"{url}/audiences", token)
                seen["customer"] = _get(f"{url}/audiences/ACT__CartAbandon__90m", token)
                seen["anonymous"] = _get(f"{url}/audiences", None)
                seen["wrong"] = _get(f"{url}/audiences", token + "x")
            finally:
                stop.set()

        threading.Thread(target=check).start()

    def then(_result: DemoResult, config: AppConfig) -> None:
        serve_demo_console(config, out, stop=stop, ready=ready)

    result = run_demo(
        customers=50, events=500, seed=3, idle_timeout_s=1.0, deliver=False, out=out, then=then
    )
    assert result.passed
    url, token = seen["url"], seen["token"]
    assert url.startswith("http://127.0.0.1:")
    status, body = seen["audiences"]
    assert status == 200 and "ACT__CartAbandon__90m" in body
    assert seen["customer"][0] == 200
    assert seen["anonymous"][0] == 401 and seen["wrong"][0] == 401
    text = out.getvalue()
    assert f"Console: {url}/" in text
    assert text.count(token) == 1  # printed once
    assert all(token not in r.getMessage() for r in caplog.records)
