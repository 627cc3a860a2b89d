"""``streamsync console``: its configuration mistakes are one line and exit status 2, it
binds loopback unless told otherwise, and it serves until stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from streamsync.cli import main
from streamsync.console.config import ConsoleConfig
from streamsync.console.server import ConsoleServer, create_console
from streamsync.credentials import CredentialsError
from tests.console.support import ENV, VIEWER_TOKEN, config

BASE: dict[str, Any] = {
    "kafka": {"bootstrap_servers": "127.0.0.1:1"},
    "ingest": {"topics": [{"name": "in", "format": "pipelines_json"}]},
}


def _write(tmp: Path, data: dict[str, Any]) -> Path:
    path = tmp / "streamsync.yaml"
    path.write_bytes(orjson.dumps(data))
    return path


def _run(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str]:
    rc = main(["console", "--config", str(path)])
    return rc, capsys.readouterr().err


def test_no_console_section_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = _run(capsys, _write(tmp_path, BASE))
    assert rc == 2
    assert err.count("\n") == 1 and "no console: section" in err


def test_a_console_without_sign_in_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = _run(capsys, _write(tmp_path, {**BASE, "console": {"auth": {}}}))
    assert rc == 2
    assert "needs a way to sign in" in err and err.count("\n") == 1


def test_an_unset_secret_is_named_not_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_CONSOLE_TOKEN", raising=False)
    users = [{"name": "a", "token": {"env": "NO_SUCH_CONSOLE_TOKEN"}}]
    rc, err = _run(capsys, _write(tmp_path, {**BASE, "console": {"auth": {"users": users}}}))
    assert rc == 2
    assert "NO_SUCH_CONSOLE_TOKEN" in err and "unset or empty" in err


def test_loopback_by_default_and_proxy_settings_checked() -> None:
    section = ConsoleConfig.model_validate(
        {"auth": {"users": [{"name": "a", "token": {"env": "X"}}]}}
    )
    assert section.host == "127.0.0.1"
    with pytest.raises(ValidationError, match="not an address"):
        ConsoleConfig.model_validate({"auth": {"proxy": {"trusted_proxies": ["nope"]}}})
    with pytest.raises(ValidationError, match="token: or password:"):
        ConsoleConfig.model_validate({"auth": {"users": [{"name": "a"}]}})


def test_the_proxy_header_is_believed_only_from_trusted_proxies(tmp_path: Path) -> None:
    proxy = {"trusted_proxies": ["127.0.0.1/32"], "operators": ["alice"], "default_role": "none",
             "viewers": ["bob"]}  # fmt: skip
    made = create_console(config(tmp_path, auth={"proxy": proxy}), feed=False, env=ENV)
    auth = made.auth
    header = {"X-Forwarded-User": "alice"}
    assert auth.authenticate(header, {}, "127.0.0.1") is not None
    assert auth.authenticate(header, {}, "127.0.0.1").role == "operator"  # type: ignore[union-attr]
    assert auth.authenticate(header, {}, "10.1.2.3") is None  # not the proxy: ignored
    assert auth.authenticate({"X-Forwarded-User": "bob"}, {}, "127.0.0.1").role == "viewer"  # type: ignore[union-attr]
    assert auth.authenticate({"X-Forwarded-User": "eve"}, {}, "127.0.0.1") is None


def test_missing_secret_stops_create_console(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError):
        create_console(config(tmp_path), feed=False, env={})


def test_the_server_binds_loopback_and_answers(tmp_path: Path) -> None:
    made = create_console(config(tmp_path, port=0), feed=False, env=ENV)
    server = ConsoleServer(made)

    async def work() -> None:
        import aiohttp

        await server.start()
        try:
            assert server.url.startswith("http://127.0.0.1:")
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server.url}/audiences") as response:
                    assert response.status == 401
                headers = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
                async with session.get(f"{server.url}/audiences", headers=headers) as response:
                    assert response.status == 200
        finally:
            await server.stop()

    asyncio.run(work())


def test_the_command_serves_until_sigterm(tmp_path: Path) -> None:
    data = {
        **BASE,
        "deltas": {"topic": "d"},
        "console": {
            "port": 0,
            "audiences": str(Path(__file__).resolve().parents[2] / "examples" / "audiences"),
            "auth": {"users": [{"name": "a", "token": {"env": "T"}}]},
        },
        "observability": {"log_format": "text"},
    }
    path = _write(tmp_path, data)
    process = subprocess.Popen(
        [sys.executable, "-m", "streamsync", "console", "--config", str(path)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "T": "some-token-value"},
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "serving on http://127.0.0.1:" in line, line
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        rest = process.stderr.read()
        assert "stopping" in rest
        assert "some-token-value" not in line + rest
    finally:
        if process.poll() is None:
            process.kill()
